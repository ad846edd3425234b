"""The side-by-side comparison of margin methods for one book, and its HTML report with PNG plots."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os

import numpy as np

from pmjax.apps.files import check_out_dir  # noqa: F401  (re-exported: the CLI and the demo use it)
from pmjax.apps.tables import clean, coin_span_note, column_scales, fmt, largest_naked, pairing_line, strategy_counts
from pmjax.apps.files import tims_table
from pmjax.core.errors import InputError

#: label of each method's headline figure, in the order the comparison shows them
FIGURES = (
    ("rules", "Rules (strategy-based)", lambda d: d["rules"]["initial"]),
    ("span", "SPAN total", lambda d: d["span"]["total"]),
    ("deribit", "Deribit PM grid initial", lambda d: d["deribit"]["initial"]),
    ("tims", "TIMS-style total", lambda d: d["tims"]["total"]),
    ("var", "Monte Carlo VaR", lambda d: d["var"]["var"]),
    ("es", "Monte Carlo ES", lambda d: d["var"]["es"]),
)
#: the portfolio-margin figure that applies to a qualifying account, in order of preference (SPAN is the
#: monitor's primary method, configs/monitor.yaml)
PM_FIGURES = (("span", "total", "SPAN total"), ("deribit", "initial", "Deribit PM grid initial"),
              ("var", "es", "Monte Carlo ES"))
#: portfolio Greeks shown per position and in totals (pmjax.core.greeks.portfolio_greeks)
GREEK_COLUMNS = ("value", "delta", "gamma", "vega", "theta", "vanna", "volga")
GREEK_UNITS = ("value in USD; delta in coins (dV/dS); gamma per USD; vega and volga per 1.00 of vol; vanna per "
               "USD per 1.00 of vol; theta in USD per day (SPEC section 4)")


# ---------------------------------------------------------------- the figures

def applicable_requirement(doc: dict) -> dict | None:
    """The requirement that applies to the account: rules ``initial`` when it is below the portfolio-margin
    minimum (``qualification.qualifies`` false, "margined by rules"), else the portfolio-margin figure
    (SPAN ``total``, else Deribit ``initial``, else ES). None when the document carries neither."""
    q = doc.get("qualification")
    qualifies = True if q is None else bool(q["qualifies"])
    reason = None if q is None else q["reason"]
    if not qualifies and "rules" in doc:
        return {"regime": "rules", "method": "rules", "figure": "initial", "label": "rules initial",
                "margin": float(doc["rules"]["initial"]), "qualifies": False, "currency": doc.get("currency"),
                "reason": reason}
    for method, figure, label in PM_FIGURES:
        if method in doc:
            return {"regime": "portfolio margin", "method": method, "figure": figure, "label": label,
                    "margin": float(doc[method][figure]), "qualifies": qualifies, "currency": doc.get("currency"),
                    "reason": reason}
    if "rules" in doc:
        return {"regime": "rules", "method": "rules", "figure": "initial", "label": "rules initial",
                "margin": float(doc["rules"]["initial"]), "qualifies": qualifies, "currency": doc.get("currency"),
                "reason": reason}
    return None


def applicable_line(app: dict | None) -> str:
    """One sentence stating the applicable requirement."""
    if app is None:
        return "No applicable requirement (no method computed)."
    why = ("the account is below the portfolio-margin minimum, so it is margined by rules" if app["regime"] == "rules"
           and not app["qualifies"] else "the account qualifies for portfolio margin" if app["qualifies"]
           else "margined by rules")
    return f"Applicable requirement: {_num(app['margin'])} {app['currency']} = {app['label']} ({why})"


def comparison(doc: dict) -> list[dict]:
    """Each method's figure and its capital-efficiency gain against rules: 1 - figure / rules; ``applies``
    marks the figure that applies to the account (``applicable_requirement``)."""
    rows = []
    rules = doc["rules"]["initial"] if "rules" in doc else None
    app = applicable_requirement(doc) if ("qualification" in doc or rules is not None) else None
    for key, label, get in FIGURES:
        section = "var" if key == "es" else key
        if section not in doc:
            continue
        fig = float(get(doc))
        gain = None if not rules else 1.0 - fig / rules
        saved = None if rules is None else rules - fig
        applies = app is not None and app["method"] == section and (section != "var" or key == app["figure"])
        rows.append({"method": key, "label": label, "margin": fig, "saving_vs_rules": saved, "gain_vs_rules": gain,
                     "applies": bool(applies)})
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _to_usd(x: float, unit: str, spots: dict | None) -> float | None:
    if unit in ("USD", "USDC"):
        return x
    return None if not spots or unit not in spots else x * float(spots[unit])


def worst_scenarios(doc: dict, config: dict | None = None, spots: dict | None = None) -> list[dict]:
    """The scenario behind each method's figure: SPAN per underlying (its worst scenario number, price move
    in scan ranges and %, vol move, weighted loss), the Deribit grid per underlying (its worst vector entry,
    price move and vol state, loss in the settlement coin and in USD at today's index ``spots``) and the
    Monte Carlo VaR/ES. ``config`` (the merged configuration) gives the scan ranges in %."""
    from pmjax.scenarios.grids import SPAN_EXTREME_SIGN, SPAN_IS_EXTREME, SPAN_PRICE_STEPS, SPAN_VOL_STEPS

    cur = doc.get("currency", "USD")
    rows = []
    span_cfg = ((config or {}).get("span") or {}).get("underlyings", {})
    for u, v in (doc.get("span") or {}).get("by_underlying", {}).items():
        n = int(v["worst_scenario"])
        i = n - 1
        c = span_cfg.get(u, {})
        X = float(c.get("extreme_move_multiple", float("nan")))
        m = float(SPAN_PRICE_STEPS[i]) + (float(SPAN_EXTREME_SIGN[i]) * X if SPAN_IS_EXTREME[i] else 0.0)
        vm = float(SPAN_VOL_STEPS[i])
        P, V = c.get("price_scan_range"), c.get("vol_scan_range")
        price = f"{m:+.3g} x range" + ("" if P is None or math.isnan(m) else f" = {_pct(m * float(P))}")
        vol = ("0" if vm == 0 else f"{vm:+g} x range" + ("" if V is None else f" = {100 * vm * float(V):+.1f} vol pts"))
        rows.append({"method": "SPAN", "underlying": u, "scenario": str(n), "price_move": price,
                     "price_move_fraction": None if P is None else m * float(P), "vol_move": vol,
                     "loss": float(v["risk_array"][i]), "unit": cur,
                     "loss_usd": _to_usd(float(v["risk_array"][i]), cur, spots),
                     "detail": ("extreme move, loss weighted by the cover fraction; " if SPAN_IS_EXTREME[i] else "")
                     + f"scan risk {v['scan_risk']:,.6g}, risk {v['risk']:,.6g}"})
    der = doc.get("deribit") or {}
    ext_moves = der.get("extended_moves", [])
    states = der.get("vol_states", ["up", "same", "down"])
    for u, v in der.get("by_underlying", {}).items():
        std, ext = list(v.get("standard", [])), list(v.get("extended", []))
        allv = std + ext
        if not allv:
            continue
        k = int(np.argmin(allv))
        b = v.get("worst_case_bucket") or {}
        if b.get("source") == "standard" or (not b and k < len(std)):
            k = int(b.get("index", k))
            moves = v.get("price_moves") or []
            m = moves[k // len(states)] if k // len(states) < len(moves) else None
            name = f"standard #{k + 1} (price point {k // len(states) + 1}, vol {states[k % len(states)]})"
            vol, pnl = states[k % len(states)], std[k]
        else:
            j = int(b.get("index", k - len(std)))
            m = ext_moves[j] if j < len(ext_moves) else None
            name, vol, pnl = f"extended #{j + 1}", "up", ext[j]
        coin = v.get("currency", u)
        loss = max(-float(pnl), 0.0)
        usd = _to_usd(loss, coin, spots)
        rows.append({"method": "Deribit grid", "underlying": u, "scenario": name,
                     "price_move": "-" if m is None else _pct(float(m)), "price_move_fraction": m, "vol_move": vol,
                     "loss": loss, "unit": coin, "loss_usd": usd,
                     "detail": f"worst case {v['worst_case']:,.6g} {coin}"})
    var = doc.get("var")
    if var:
        conf = var["confidence"]
        for key, label in (("var", "VaR"), ("es", "ES")):
            rows.append({"method": "Monte Carlo", "underlying": "all", "scenario": f"{label} {conf:g}",
                         "price_move": "joint paths", "price_move_fraction": None, "vol_move": "joint paths",
                         "loss": float(var[key]), "unit": cur, "loss_usd": _to_usd(float(var[key]), cur, spots),
                         "detail": f"+- {var[key + '_stderr']:,.3g} (std. error), {var['paths']:,} paths, "
                                   f"{var['horizon_days']} day(s)"})
        q = var.get("pnl_quantiles") or {}
        if q:
            p = min(q, key=float)
            rows.append({"method": "Monte Carlo", "underlying": "all", "scenario": f"P&L quantile {p}",
                         "price_move": "joint paths", "price_move_fraction": None, "vol_move": "joint paths",
                         "loss": -float(q[p]), "unit": cur, "loss_usd": _to_usd(-float(q[p]), cur, spots),
                         "detail": "the far tail"})
    return rows


# ---------------------------------------------------------------- plots

def _num(x: float) -> str:
    """About 6 significant digits (2 decimals for USD-sized figures): readable for coin amounts too."""
    return f"{x:,.2f}" if abs(x) >= 100 else fmt(float(x))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _cell_format(lim: float):
    """A formatter showing about 3 significant digits of the largest cell (fewer decimals for big values)."""
    if lim <= 0 or not math.isfinite(lim):
        return lambda v: f"{v:.0f}"
    decimals = max(0, 2 - int(math.floor(math.log10(lim))))
    if decimals == 0:
        return lambda v: f"{v:,.0f}"
    return lambda v: f"{v:.{decimals}f}"


def plot_risk_heatmap(by_underlying: dict, currency: str) -> bytes:
    """SPAN risk arrays: underlyings x 16 scenarios (loss positive), cell labels to ~3 significant digits of
    the largest cell, the font shrinking when labels grow long."""
    import matplotlib.pyplot as plt

    names = list(by_underlying)
    data = np.array([by_underlying[u]["risk_array"] for u in names], dtype=float).reshape(len(names), -1)
    lim = max(float(np.abs(data).max()), 1e-12)
    fmt = _cell_format(lim)
    labels = [[fmt(v) for v in row] for row in data]
    longest = max((len(s) for row in labels for s in row), default=1)
    width, fs = (9.0, 7.0) if longest <= 5 else (12.0, 6.5) if longest <= 7 else (14.0, 6.0)
    fig, ax = plt.subplots(figsize=(width, 1.3 + 0.55 * len(names)))
    im = ax.imshow(data, cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(data.shape[1]), [str(i + 1) for i in range(data.shape[1])])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("SPAN scenario")
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=fs,
                color="white" if abs(v) > 0.75 * lim else "black")
    fig.colorbar(im, ax=ax, label=f"loss ({currency})")
    ax.set_title(f"SPAN risk array by scenario and underlying (weighted loss, {currency})")
    return _png(fig)


def histogram_view(histogram: dict, es: float, quantiles: dict | None = None) -> tuple[float, float, int, int]:
    """(lo, hi, paths left of lo, paths right of hi): the 0.1%..99.9% P&L quantiles widened to take in -ES
    (and a 5% margin); the whole range when no quantiles are given. Counts are of whole bins outside."""
    edges = np.asarray(histogram["edges"], dtype=float)
    counts = np.asarray(histogram["counts"], dtype=float)
    lo, hi = float(edges[0]), float(edges[-1])
    if quantiles:
        ps = sorted(quantiles, key=float)
        qlo, qhi = float(quantiles[ps[0]]), float(quantiles[ps[-1]])
        a, b = min(qlo, -es), max(qhi, 0.0)
        pad = 0.05 * (b - a) if b > a else 1.0
        lo, hi = max(lo, a - pad), min(hi, b + pad)
    below = int(counts[edges[1:] <= lo].sum())
    above = int(counts[edges[:-1] >= hi].sum())
    return lo, hi, below, above


def plot_pnl_histogram(histogram: dict, var: float, es: float, confidence: float, currency: str,
                       quantiles: dict | None = None) -> bytes:
    """Monte Carlo P&L distribution (``{"edges", "counts"}``) with the VaR and ES lines (drawn at -VaR, -ES);
    the view is clipped to ``histogram_view`` and the clipped path counts are stated."""
    import matplotlib.pyplot as plt

    edges = np.asarray(histogram["edges"], dtype=float)
    counts = np.asarray(histogram["counts"], dtype=float)
    lo, hi, below, above = histogram_view(histogram, es, quantiles)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4a7bb7", alpha=0.85)
    ax.axvline(-var, color="#d9822b", lw=2, label=f"VaR {confidence:g}: {_num(var)}")
    ax.axvline(-es, color="#b0302c", lw=2, ls="--", label=f"ES {confidence:g}: {_num(es)}")
    ax.set_xlim(lo, hi)
    ax.set_ylabel("paths")
    ax.legend(loc="upper left", fontsize=8)
    title = f"Monte Carlo P&L, {int(counts.sum()):,} paths"
    xlabel = f"one-horizon P&L ({currency})"
    if below or above:
        num = lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.4g}"  # noqa: E731
        xlabel += (f"\nnot shown: {below:,} paths below {num(lo)} (worst {num(edges[0])}), "
                   f"{above:,} above {num(hi)} (best {num(edges[-1])})")
        title += ", view clipped to the 0.1%..99.9% quantiles and -ES"
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def plot_margin_bars(rows: list[dict], currency: str) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    labels = [r["label"] + (" (applies)" if r.get("applies") else "") for r in rows]
    vals = [r["margin"] for r in rows]
    colours = {"rules": "#7f7f7f", "span": "#4a7bb7", "deribit": "#6a9f58", "var": "#d9822b", "es": "#b0302c"}
    bars = ax.bar(labels, vals, color=[colours.get(r["method"], "#4a7bb7") for r in rows],
                  edgecolor=["black" if r.get("applies") else "none" for r in rows],
                  linewidth=[2.0 if r.get("applies") else 0.0 for r in rows])
    for b, v in zip(bars, vals):
        ax.annotate(_num(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"margin ({currency})")
    ax.set_title("Margin by method (outlined: the requirement that applies)")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    return _png(fig)


def plot_waterfall(names: list[str], contributions: list[float], total: float, currency: str) -> bytes:
    """Per-position ES contributions stacked into the total."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * (len(names) + 1)))
    start, ends = 0.0, [0.0, float(total)]
    for i, (n, c) in enumerate(zip(names, contributions)):
        ax.barh(i, c, left=start, color="#b0302c" if c >= 0 else "#6a9f58")
        ax.annotate(_num(c), (start + c, i), xytext=(3 if c >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if c >= 0 else "right", va="center", fontsize=7)
        start += c
        ends.append(start)
    ax.barh(len(names), total, color="#4a7bb7")
    ax.annotate(_num(total), (total, len(names)), xytext=(3, 0), textcoords="offset points", ha="left",
                va="center", fontsize=7)
    ax.set_yticks(range(len(names) + 1), list(names) + ["ES"])
    ax.invert_yaxis()
    lo, hi = min(ends), max(ends)
    pad = 0.15 * (hi - lo) if hi > lo else 1.0
    ax.set_xlim(lo - pad, hi + pad)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel(f"contribution to expected shortfall ({currency})")
    ax.set_title("ES contributions by position (sum = ES)")
    return _png(fig)


# ---------------------------------------------------------------- tables

def greeks_tables(greeks: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) of the per-position Greeks and their totals by underlying and by expiry
    (``pmjax.core.greeks.portfolio_greeks``)."""
    cols = list(GREEK_COLUMNS)
    pos = [[p["instrument"], p["quantity"]] + [p[k] for k in cols] for p in greeks["positions"]]
    by_u = [[u] + [t[k] for k in cols] for u, t in greeks["by_underlying"].items()]
    by_e = [[e] + [t[k] for k in cols] for e, t in greeks["by_expiry"].items()]
    return [("Values and Greeks by position (quantity included)", ["instrument", "quantity"] + cols, pos),
            ("Totals by underlying", ["underlying"] + cols, by_u),
            ("Totals by underlying and expiry ('none': spot and perpetuals)", ["expiry"] + cols, by_e)]


def worst_scenario_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    header = ["method", "underlying", "scenario", "price move", "vol move", "loss", "unit", "loss (USD)", "detail"]
    return header, [[r["method"], r["underlying"], r["scenario"], r["price_move"], r["vol_move"], r["loss"], r["unit"],
                     r["loss_usd"],
                     r["detail"]] for r in rows]


def html_table(rows: list[list], header: list[str]) -> str:
    """A table: numbers right-aligned (at least 4 significant digits, 2 decimals from 100 up, ``tables.clean``
    noise shown as 0), text left-aligned."""
    scales = column_scales(rows)

    def cell(x, j):
        if isinstance(x, bool):
            return str(x), False
        if isinstance(x, (float, np.floating)):
            x = clean(float(x), scales[j])
            return ("0.00" if x == 0 else f"{x:,.{max(2, 4 - len(str(int(abs(x)))))}f}" if abs(x) >= 1
                    else f"{x:.6g}"), True
        if isinstance(x, (int, np.integer)):
            return f"{int(x):,}", True
        text = "-" if x is None else str(x)
        numeric = text[:1].isdigit() or (text[:1] in "+-" and text[1:2].isdigit()) or text == "-"
        return html.escape(text), numeric

    def td(x, j):
        text, numeric = cell(x, j)
        return f"<td>{text}</td>" if numeric else f"<td class=t>{text}</td>"

    text_col = [all(not cell(r[j], j)[1] for r in rows if j < len(r) and r[j] is not None) if rows else False
                for j in range(len(header))]
    head = "".join(f"<th class=t>{html.escape(h)}</th>" if t else f"<th>{html.escape(h)}</th>"
                   for h, t in zip(header, text_col))
    body = "".join("<tr>" + "".join(td(c, j) for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def generic_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    """Header and rows of a list of flat records: every key whose values are scalars, first-seen order."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in keys and not isinstance(v, (list, dict, tuple)):
                keys.append(k)
    return keys, [[r.get(k) for k in keys] for r in records]


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child,td.t,th.t{text-align:left}table{font-size:0.92em}th{background:#f2f2f2}
img{max-width:100%;display:block;margin:0.5em 0}
.note{color:#555;font-size:0.92em}.headline{font-size:1.25em;padding:0.5em 0.8em;background:#eef4fb;
border-left:5px solid #4a7bb7}.headline.rules{background:#fbf1e6;border-left-color:#d9822b}
h3{font-size:1em;margin-bottom:0.2em}"""


def render_html(title: str, sections: list[tuple[str, str]], images: dict[str, bytes]) -> str:
    """A self-contained page: ``sections`` are (heading, html) pairs; ``{img:NAME}`` places a PNG inline."""
    body = []
    for heading, content in sections:
        for name, png in images.items():
            data = base64.b64encode(png).decode("ascii")
            content = content.replace(f"{{img:{name}}}", f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        body.append(f"<h2>{html.escape(heading)}</h2>\n{content}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "</body></html>\n")


def _scenario_rows(scen) -> tuple[list[str], list[list]]:
    """Stress scenarios as ``pmjax margin --scenarios`` gives them ({name: P&L}) or richer records."""
    if isinstance(scen, dict):
        return ["scenario", "P&L"], [[k, v] for k, v in scen.items()]
    return generic_rows(list(scen))


def _headline_sections(doc: dict, rows: list[dict], app: dict | None, cur: str) -> list[tuple[str, str]]:
    """The applicable requirement and the margin-by-method comparison."""
    klass = "headline rules" if app and app["regime"] == "rules" else "headline"
    head = f"<p class=\"{klass}\"><b>{html.escape(applicable_line(app))}</b></p>"
    if "qualification" in doc:
        q = doc["qualification"]
        head += f"<p>{html.escape(q['reason'])}.</p>"
        if not q["qualifies"]:
            head += ("<p>The portfolio-margin figures below are shown for comparison only: they do not apply until "
                     "the account's equity reaches the minimum.</p>")
    return [("Applicable requirement", head), ("Margin by method", html_table(
        [[r["label"], r["margin"], r["saving_vs_rules"],
          None if r["gain_vs_rules"] is None else f"{100 * r['gain_vs_rules']:.1f}%", "yes" if r["applies"] else ""]
         for r in rows],
        ["method", f"margin ({cur})", f"saving vs rules ({cur})", "capital-efficiency gain", "applies"])
        + "<p class=note>Rules initial and SPAN total both include the option premium (a short option's value "
          "is added, a long option's counts against the risk), so they compare like for like; SPAN risk "
          "(before the net option value) is in the SPAN section.</p>{img:margin_bars}")]


def _book_sections(doc: dict, cur: str, greeks: dict | None, worst: list[dict],
                   scenario_records: list[dict] | None) -> list[tuple[str, str]]:
    """Positions, values and Greeks, worst scenarios and stress scenarios."""
    sections = [("Positions", html_table([[p["instrument"], p["quantity"], p["value"], p["delta"]]
                                          for p in doc["positions"]],
                                         ["instrument", "quantity", f"value ({cur})", "delta (coins)"]))]
    if greeks:
        content = f"<p class=note>{html.escape(GREEK_UNITS)}</p>"
        for title, header, trs in greeks_tables(greeks):
            content += f"<h3>{html.escape(title)}</h3>" + html_table(trs, header)
        sections.append(("Values and Greeks", content))
    if worst:
        header, trs = worst_scenario_rows(worst)
        sections.append(("Worst scenarios", html_table(trs, header) + (
            "<p class=note>SPAN: the scenario setting scan risk (price move in price scan ranges and %, vol move in "
            "vol scan ranges; loss weighted, in the margin currency). Deribit: the most negative entry of the "
            "aggregated standard and extended vectors (P&L in the settlement coin; loss = minus that P&L); "
            "USD at today's index. Monte Carlo: the tail figures of the joint P&L distribution.</p>")))
    if scenario_records or "scenarios" in doc:
        header, trs = generic_rows(scenario_records) if scenario_records else _scenario_rows(doc["scenarios"])
        sections.append(("Stress scenarios", html_table(trs, [h if h != "P&L" else f"P&L ({cur})" for h in header])
                         + "<p class=note>P&L (gain positive) under each named joint shock; every underlying "
                           "moves at once.</p>"))
    return sections


#: above this many rows the report summarises a rules list (the JSON beside it keeps every row)
REPORT_ROWS = 100


def _rules_sections(r: dict, cur: str) -> list[tuple[str, str]]:
    """The rules method's recognised strategies and, when given, its split by position; a big book's lists
    are summarised (counts by strategy type, the largest naked legs) and point to the JSON."""
    strategies, naked = r.get("strategies", []), r.get("naked", [])
    note = f"<p class=note>{html.escape(pairing_line(r, cur))}.</p>"
    if len(strategies) + len(naked) <= REPORT_ROWS:
        sections = [("Rules: recognised strategies", html_table(
            [[s["type"], " / ".join(f"{leg['instrument']} {leg['quantity']:+g}" for leg in s["legs"]), s["quantity"],
              s["initial"], s["maintenance"]] for s in strategies]
            + [["naked", f"{n['instrument']} {n['quantity']:+g}", abs(n["quantity"]), n["initial"], n["maintenance"]]
               for n in naked],
            ["strategy", "legs", "quantity", f"initial ({cur})", f"maintenance ({cur})"]) + note)]
    else:
        top = largest_naked(r)
        sections = [("Rules: recognised strategies", html_table(
            strategy_counts(r), ["strategy", "count", "coins", f"initial ({cur})", f"maintenance ({cur})"])
            + f"<h3>The {len(top)} largest of {len(naked):,} naked legs</h3>" + html_table(
                [[n["instrument"], n["quantity"], n["initial"], n["maintenance"]] for n in top],
                ["instrument", "quantity", f"initial ({cur})", f"maintenance ({cur})"])
            + note + f"<p class=note>{len(strategies):,} strategies and {len(naked):,} naked legs in all: every one "
                     "is in the JSON beside this report (rules.strategies, rules.naked).</p>")]
    bp = r.get("by_position") or []
    if bp and len(bp) <= REPORT_ROWS:
        sections.append(("Rules: split by position", html_table(
            [[p["instrument"], p["quantity"], p.get("strategy"), p.get("strategy_id"), p["initial"],
              p["maintenance"]] for p in bp]
            + [["total", None, None, None, r["initial"], r["maintenance"]]],
            ["instrument", "quantity", "strategy", "strategy id", f"initial ({cur})", f"maintenance ({cur})"])
            + "<p class=note>A strategy's requirement is shared among its legs in proportion to their "
              "standalone requirements.</p>"))
    elif bp:
        sections.append(("Rules: split by position", f"<p class=note>{len(bp):,} rows: in the JSON beside this "
                         "report (rules.by_position).</p>"))
    return sections


def _span_html(span: dict, cur: str, images: dict[str, bytes]) -> tuple[str, str]:
    """The SPAN section (adds the ``risk_heatmap`` image)."""
    su, images["risk_heatmap"] = span["by_underlying"], plot_risk_heatmap(span["by_underlying"], cur)
    keys = ("scan_risk", "worst_scenario", "intra_spread", "spot_charge", "time_risk", "volatility_risk", "price_risk",
            "inter_credit", "short_option_minimum", "composite_delta", "risk")
    content = html_table([[u] + [v.get(k) for k in keys] for u, v in su.items()], [
        "commodity", f"scan risk ({cur})", "worst scenario", "intra spread", "spot charge", "time risk", "volatility "
        "risk", "price risk", "inter credit", "short option min.", "composite delta", f"risk ({cur})"]) + (
        "<p class=note>Time, volatility and price risk: the inter credit's inputs (methodology 5.7).</p>" +
        f"<p>risk {_num(span['risk'])}, net option value {_num(span['nov'])}, total {_num(span['total'])} {cur}</p>"
        + (f"<p class=note>{html.escape(coin_span_note(cur))}</p>" if cur != "USD" else "") + "{img:risk_heatmap}")
    bp = span.get("by_position")
    if isinstance(bp, list) and bp and all(isinstance(x, dict) for x in bp):
        header, trs = generic_rows(bp)
        content += "<h3>SPAN by position</h3>" + html_table(trs, header)
    return ("SPAN", content)


def _deribit_html(deribit: dict, cur: str, spots: dict | None) -> tuple[str, str]:
    """The Deribit grid section: per-pool figures in the pool's currency, initial also in USD."""
    trs = []
    for u, v in deribit["by_underlying"].items():
        coin = v.get("currency", u)
        usd = None if v.get("initial") is None else _to_usd(float(v["initial"]), coin, spots)
        trs.append([u, coin, "+".join(v.get("settlements", [coin])), v["worst_case"], v["roll_shock"],
                    v["delta_shock"], v["risk_matrix_margin"], v.get("initial"), v.get("maintenance"), usd])
    return ("Deribit portfolio-margin grid", html_table(
        trs, ["pool", "unit", "settled in", "worst case", "roll shock", "delta shock", "risk matrix margin",
              "initial", "maintenance", "initial (USD at today's index)"])
        + f"<p>Pooling {deribit.get('pooling', 'cross')} (docs/deribit_grid.md, Pools); each pool's figures are in "
          f"its unit. Summed in the margin currency: "
          f"initial {_num(deribit['initial'])}, maintenance {_num(deribit['maintenance'])} {cur}</p>")


def _var_html(v: dict, positions: list[dict], cur: str, images: dict[str, bytes]) -> tuple[str, str]:
    """The Monte Carlo section (adds the ``pnl_histogram`` and ``contributions`` images)."""
    content = (f"<p>{html.escape(str(v['model']))} model, {v['paths']:,} paths, seed {v['seed']}, "
               f"horizon {v['horizon_days']} day(s): VaR {_num(v['var'])} &plusmn; {_num(v['var_stderr'])}, "
               f"ES {_num(v['es'])} &plusmn; {_num(v['es_stderr'])} {cur} at {v['confidence']:g}</p>")
    if "pnl_histogram" in v:
        images["pnl_histogram"] = plot_pnl_histogram(v["pnl_histogram"], v["var"], v["es"], v["confidence"], cur,
                                                     v.get("pnl_quantiles"))
        content += "{img:pnl_histogram}"
    names = [p["instrument"] for p in positions]
    images["contributions"] = plot_waterfall(names, v["contributions"], v["es"], cur)
    content += html_table([[n, c] for n, c in zip(names, v["contributions"])] + [["sum", float(sum(v["contributions"]))]],
                          ["position", f"ES contribution ({cur})"]) + "{img:contributions}"
    return ("Monte Carlo VaR and expected shortfall", content)


def _write_files(out_dir: str, stem: str, page: str, document: dict, images: dict[str, bytes]) -> dict:
    """``{stem}.html``, ``{stem}.json`` and one ``{stem}_{name}.png`` per image; their paths."""
    from pmjax.io.documents import to_jsonable

    paths = {"html": os.path.join(out_dir, f"{stem}.html"), "json": os.path.join(out_dir, f"{stem}.json")}
    with open(paths["html"], "w", encoding="utf-8") as fh:
        fh.write(page)
    with open(paths["json"], "w", encoding="utf-8") as fh:
        json.dump(to_jsonable(document), fh, indent=1)
    for name, png in images.items():
        p = os.path.join(out_dir, f"{stem}_{name}.png")
        with open(p, "wb") as fh:
            fh.write(png)
        paths[name] = p
    return paths


def write_report(doc: dict, out_dir: str, *, notes: list[str] = (), extra_sections: list[tuple[str, str]] = (),
                 extra_json: dict | None = None, stem: str = "report", config: dict | None = None,
                 spots: dict | None = None, greeks: dict | None = None,
                 scenario_records: list[dict] | None = None) -> dict:
    """Write ``{stem}.html`` (tables and inline PNG plots), the PNGs and ``{stem}.json`` into ``out_dir``.

    ``doc`` is a ``pmjax margin`` document; ``extra_sections`` (heading, html) go after the comparison.
    ``config`` (merged configuration) and ``spots`` (today's index by underlying) let the worst-scenario
    table state SPAN moves in % and Deribit losses in USD; ``greeks`` (``pmjax.core.greeks.portfolio_greeks``)
    adds the values-and-Greeks tables; ``scenario_records`` (one flat record per stress scenario, with its
    moves) replace the plain ``doc["scenarios"]`` {name: P&L} table.
    """
    os.makedirs(out_dir, exist_ok=True)
    cur = doc["currency"]
    rows = comparison(doc)
    app = applicable_requirement(doc)
    worst = worst_scenarios(doc, config, spots)
    images: dict[str, bytes] = {"margin_bars": plot_margin_bars(rows, cur)}
    sections = _headline_sections(doc, rows, app, cur)
    sections.extend(extra_sections)
    if notes:
        sections.append(("Notes", "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)))
    sections += _book_sections(doc, cur, greeks, worst, scenario_records)
    if "rules" in doc:
        sections += _rules_sections(doc["rules"], cur)
    if "span" in doc:
        sections.append(_span_html(doc["span"], cur, images))
    if "deribit" in doc:
        sections.append(_deribit_html(doc["deribit"], cur, spots))
    if "var" in doc:
        sections.append(_var_html(doc["var"], doc["positions"], cur, images))
    if "tims" in doc:
        header, trs, note = tims_table(doc["tims"], cur)
        sections.append(("TIMS-style valuation points", html_table(trs, header) + note))
    title = f"pmjax margin report: {doc['account']} ({doc['market']}, {doc['as_of']})"
    extra = {"comparison": rows, "applicable": app, "worst_scenarios": worst}
    if spots:
        extra["index_prices"] = dict(spots)
    if greeks:
        extra["greeks"] = greeks
    return _write_files(out_dir, stem, render_html(title, sections, images), {**doc, **extra, **(extra_json or {})},
                        images)
