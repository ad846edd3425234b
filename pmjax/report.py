"""The side-by-side comparison of margin methods for one book, and its HTML report with PNG plots."""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

#: label of each method's headline figure, in the order the comparison shows them
FIGURES = (
    ("rules", "Rules (strategy-based)", lambda d: d["rules"]["initial"]),
    ("span", "SPAN total", lambda d: d["span"]["total"]),
    ("deribit", "Deribit PM grid initial", lambda d: d["deribit"]["initial"]),
    ("var", "Monte Carlo VaR", lambda d: d["var"]["var"]),
    ("es", "Monte Carlo ES", lambda d: d["var"]["es"]),
)


def comparison(doc: dict) -> list[dict]:
    """Each method's figure and its capital-efficiency gain against rules: 1 - figure / rules."""
    rows = []
    rules = doc["rules"]["initial"] if "rules" in doc else None
    for key, label, get in FIGURES:
        section = "var" if key == "es" else key
        if section not in doc:
            continue
        fig = float(get(doc))
        gain = None if not rules else 1.0 - fig / rules
        saved = None if rules is None else rules - fig
        rows.append({"method": key, "label": label, "margin": fig, "saving_vs_rules": saved, "gain_vs_rules": gain})
    return rows


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_risk_heatmap(by_underlying: dict, currency: str) -> bytes:
    """SPAN risk arrays: underlyings x 16 scenarios (loss positive)."""
    import matplotlib.pyplot as plt

    names = list(by_underlying)
    data = np.array([by_underlying[u]["risk_array"] for u in names], dtype=float).reshape(len(names), -1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(names)))
    lim = max(float(np.abs(data).max()), 1e-12)
    im = ax.imshow(data, cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(data.shape[1]), [str(i + 1) for i in range(data.shape[1])])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("SPAN scenario")
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, f"{v:,.0f}" if abs(v) >= 10 else f"{v:.3g}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label=f"loss ({currency})")
    ax.set_title("SPAN risk array by scenario and underlying (weighted loss)")
    return _png(fig)


def plot_pnl_histogram(histogram: dict, var: float, es: float, confidence: float, currency: str) -> bytes:
    """Monte Carlo P&L distribution (``{"edges", "counts"}``) with the VaR and ES lines (drawn at -VaR, -ES)."""
    import matplotlib.pyplot as plt

    edges = np.asarray(histogram["edges"], dtype=float)
    counts = np.asarray(histogram["counts"], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4a7bb7", alpha=0.85)
    ax.axvline(-var, color="#d9822b", lw=2, label=f"VaR {confidence:g}: {var:,.2f}")
    ax.axvline(-es, color="#b0302c", lw=2, ls="--", label=f"ES {confidence:g}: {es:,.2f}")
    ax.set_xlabel(f"one-horizon P&L ({currency})")
    ax.set_ylabel("paths")
    ax.legend()
    ax.set_title(f"Monte Carlo P&L, {int(counts.sum()):,} paths")
    return _png(fig)


def plot_margin_bars(rows: list[dict], currency: str) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    labels = [r["label"] for r in rows]
    vals = [r["margin"] for r in rows]
    bars = ax.bar(labels, vals, color=["#7f7f7f", "#4a7bb7", "#6a9f58", "#d9822b", "#b0302c"][: len(rows)])
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:,.2f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"margin ({currency})")
    ax.set_title("Margin by method")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    return _png(fig)


def plot_waterfall(names: list[str], contributions: list[float], total: float, currency: str) -> bytes:
    """Per-position ES contributions stacked into the total."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * (len(names) + 1)))
    start = 0.0
    for i, (n, c) in enumerate(zip(names, contributions)):
        ax.barh(i, c, left=start, color="#b0302c" if c >= 0 else "#6a9f58")
        start += c
    ax.barh(len(names), total, color="#4a7bb7")
    ax.set_yticks(range(len(names) + 1), list(names) + ["ES"])
    ax.invert_yaxis()
    ax.margins(x=0.08)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel(f"contribution to expected shortfall ({currency})")
    ax.set_title("ES contributions by position (sum = ES)")
    return _png(fig)


def html_table(rows: list[list], header: list[str]) -> str:
    def cell(x):
        if isinstance(x, float):
            return f"{x:,.2f}" if abs(x) >= 1 or x == 0 else f"{x:.6g}"
        return html.escape("-" if x is None else str(x))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}img{max-width:100%;display:block;margin:0.5em 0}
.note{color:#555;font-size:0.92em}"""


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


def write_report(doc: dict, out_dir: str, *, notes: list[str] = (), extra_sections: list[tuple[str, str]] = (),
                 extra_json: dict | None = None, stem: str = "report") -> dict:
    """Write ``{stem}.html`` (tables and inline PNG plots), the PNGs and ``{stem}.json`` into ``out_dir``.

    ``doc`` is a ``pmjax margin`` document; ``extra_sections`` (heading, html) go after the comparison.
    """
    from .cli import _jsonable

    os.makedirs(out_dir, exist_ok=True)
    cur = doc["currency"]
    rows = comparison(doc)
    images: dict[str, bytes] = {"margin_bars": plot_margin_bars(rows, cur)}
    sections = [("Margin by method", html_table(
        [[r["label"], r["margin"], r["saving_vs_rules"],
          None if r["gain_vs_rules"] is None else f"{100 * r['gain_vs_rules']:.1f}%"] for r in rows],
        ["method", f"margin ({cur})", f"saving vs rules ({cur})", "capital-efficiency gain"]) + "{img:margin_bars}")]
    if "qualification" in doc:
        q = doc["qualification"]
        sections.append(("Account qualification", f"<p>{html.escape(q['reason'])}</p>"))
    sections.extend(extra_sections)
    if notes:
        sections.append(("Notes", "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)))
    sections.append(("Positions", html_table([[p["instrument"], p["quantity"], p["value"], p["delta"]]
                                          for p in doc["positions"]],
                                         ["instrument", "quantity", f"value ({cur})", "delta (coins)"])))
    if "rules" in doc:
        r = doc["rules"]
        sections.append(("Rules: recognised strategies", html_table(
            [[s["type"], " / ".join(f"{leg['instrument']} {leg['quantity']:+g}" for leg in s["legs"]), s["quantity"],
              s["initial"], s["maintenance"]] for s in r.get("strategies", [])]
            + [["naked", f"{n['instrument']} {n['quantity']:+g}", abs(n["quantity"]), n["initial"], n["maintenance"]]
               for n in r.get("naked", [])],
            ["strategy", "legs", "quantity", "initial", "maintenance"])))
    if "span" in doc:
        su = doc["span"]["by_underlying"]
        images["risk_heatmap"] = plot_risk_heatmap(su, cur)
        sections.append(("SPAN", html_table(
            [[u, v["scan_risk"], v["worst_scenario"], v["intra_spread"], v["spot_charge"], v["inter_credit"],
              v["short_option_minimum"], v["composite_delta"], v["risk"]] for u, v in su.items()],
            ["underlying", "scan risk", "worst scenario", "intra spread", "spot charge", "inter credit",
             "short option min.", "composite delta", "risk"])
            + f"<p>risk {doc['span']['risk']:,.2f}, net option value {doc['span']['nov']:,.2f}, "
              f"total {doc['span']['total']:,.2f} {cur}</p>{{img:risk_heatmap}}"))
    if "deribit" in doc:
        du = doc["deribit"]["by_underlying"]
        sections.append(("Deribit portfolio-margin grid", html_table(
            [[u, v["worst_case"], v["roll_shock"], v["delta_shock"], v["risk_matrix_margin"]] for u, v in du.items()],
            ["underlying (settlement coin)", "worst case", "roll shock", "delta shock", "risk matrix margin"])
            + f"<p>initial {doc['deribit']['initial']:,.2f}, maintenance {doc['deribit']['maintenance']:,.2f} {cur}</p>"))
    if "var" in doc:
        v = doc["var"]
        content = (f"<p>{html.escape(str(v['model']))} model, {v['paths']:,} paths, seed {v['seed']}, "
                   f"horizon {v['horizon_days']} day(s): VaR {v['var']:,.2f} &plusmn; {v['var_stderr']:,.2f}, "
                   f"ES {v['es']:,.2f} &plusmn; {v['es_stderr']:,.2f} {cur} at {v['confidence']:g}</p>")
        if "pnl_histogram" in v:
            images["pnl_histogram"] = plot_pnl_histogram(v["pnl_histogram"], v["var"], v["es"], v["confidence"], cur)
            content += "{img:pnl_histogram}"
        names = [p["instrument"] for p in doc["positions"]]
        images["contributions"] = plot_waterfall(names, v["contributions"], v["es"], cur)
        content += html_table([[n, c] for n, c in zip(names, v["contributions"])] + [["sum", float(sum(v["contributions"]))]],
                          ["position", f"ES contribution ({cur})"]) + "{img:contributions}"
        sections.append(("Monte Carlo VaR and expected shortfall", content))
    title = f"pmjax margin report: {doc['account']} ({doc['market']}, {doc['as_of']})"
    page = render_html(title, sections, images)
    paths = {"html": os.path.join(out_dir, f"{stem}.html"), "json": os.path.join(out_dir, f"{stem}.json")}
    with open(paths["html"], "w", encoding="utf-8") as fh:
        fh.write(page)
    with open(paths["json"], "w", encoding="utf-8") as fh:
        json.dump(_jsonable({**doc, "comparison": rows, **(extra_json or {})}), fh, indent=1)
    for name, png in images.items():
        p = os.path.join(out_dir, f"{stem}_{name}.png")
        with open(p, "wb") as fh:
            fh.write(png)
        paths[name] = p
    return paths
