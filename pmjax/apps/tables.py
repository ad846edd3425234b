"""Plain-text tables for the command line."""

from __future__ import annotations


def fmt(x, digits: int = 6) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    ax = abs(x)
    if ax != 0 and (ax >= 1e9 or ax < 1e-3):
        return f"{x:.{digits - 2}e}"
    return f"{x:,.{max(0, digits - len(str(int(ax))))}f}" if ax >= 1 else f"{x:.{digits}f}"


def table(rows: list[list], header: list[str], title: str | None = None) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [title] if title else []
    out += [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(out)
