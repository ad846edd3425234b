"""Plain-text tables for the command line, and the number cleaning shared with the HTML report."""

from __future__ import annotations

import math

#: a figure smaller than this, or than ``REL_TINY`` times the largest figure it is shown with, is rounding
#: noise of a value that is zero by construction (e.g. -1.6e-21 BTC): shown as 0. Display only: JSON keeps
#: the raw floats.
ABS_TINY = 1e-12
REL_TINY = 1e-9


def clean(x: float, scale: float = 0.0) -> float:
    """``x`` with negative zero and sub-epsilon noise (relative to ``scale``, the largest magnitude shown
    alongside it) replaced by 0.0."""
    return 0.0 if abs(x) <= max(ABS_TINY, REL_TINY * abs(scale)) else x


def column_scales(rows: list[list]) -> list[float]:
    """The largest finite non-integer magnitude of each column (0 where none)."""
    n = max((len(r) for r in rows), default=0)
    out = [0.0] * n
    for r in rows:
        for j, c in enumerate(r):
            if c is None or isinstance(c, (str, bool, int)):
                continue
            try:
                v = abs(float(c))
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                out[j] = max(out[j], v)
    return out


def fmt(x, digits: int = 6, scale: float = 0.0) -> str:
    """About ``digits`` significant digits (never fewer than 4); ``scale``: see ``clean``."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    x = clean(float(x), scale)
    ax = abs(x)
    if ax != 0 and (ax >= 1e9 or ax < 1e-3):
        return f"{x:.{digits - 2}e}"
    return f"{x:,.{max(0, digits - len(str(int(ax))))}f}" if ax >= 1 else f"{x:.{digits}f}"


def table(rows: list[list], header: list[str], title: str | None = None) -> str:
    scales = column_scales(rows)
    cells = [[fmt(c, scale=scales[j]) for j, c in enumerate(r)] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [title] if title else []
    out += [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(out)


def coin_span_note(currency: str) -> str:
    """The caveat shown next to a coin-margined SPAN figure ("" for USD)."""
    if currency == "USD":
        return ""
    return (f"SPAN in {currency}: each scenario's P&L is valued at that scenario's {currency} price (the coin moves "
            f"with the scenario), so this figure differs from the USD-margined SPAN figure by more than today's "
            f"exchange rate.")


#: how many naked legs a summary lists (the largest by initial margin)
from pmjax.apps.names import TOP_NAKED  # noqa: E402  (one definition: the parser shows it)


def strategy_counts(rules: dict) -> list[list]:
    """Rows [type, count, coins, initial, maintenance] of the rules section's strategies, by type, largest
    initial first (money in the margin currency)."""
    by: dict[str, list] = {}
    for s in rules.get("strategies", []):
        row = by.setdefault(s["type"], [s["type"], 0, 0.0, 0.0, 0.0])
        row[1] += 1
        row[2] += s["quantity"]
        row[3] += s["initial"]
        row[4] += s["maintenance"]
    return sorted(by.values(), key=lambda r: (-r[3], r[0]))


def largest_naked(rules: dict, top: int = TOP_NAKED) -> list[dict]:
    """The ``top`` naked legs of the rules section with the largest initial margin."""
    return sorted(rules.get("naked", []), key=lambda n: -n["initial"])[:top]


def pairing_line(rules: dict, cur: str) -> str:
    """One line: which pairing ran and, for optimal, what it saves against greedy."""
    method, d = rules.get("pairing", "none"), rules.get("pairing_detail", {})
    if method == "optimal":
        return (f"pairing optimal: initial {fmt(rules['initial'])} {cur} against greedy's "
                f"{fmt(d.get('greedy_initial'))} (saves {fmt(d.get('saving_vs_greedy'))})")
    if method == "greedy" and d.get("requested") == "optimal":
        return "pairing greedy (optimal was asked for but is unavailable: see the notice)"
    return f"pairing {method}"
