"""The margin backtest's report: ``backtest.json`` and ``README.md`` of a ``pmjax.apps.backtest.BacktestResult``."""

from __future__ import annotations

import dataclasses

import numpy as np

from pmjax.apps import calibrate


def write_report(result, out_dir: str, *, command: str = "python -m pmjax.apps.backtest") -> dict:
    """Write ``backtest.json`` (settings, days, table, daily series) and ``README.md`` (the table) to ``out_dir``."""
    import json
    import os

    from pmjax.apps.tables import table

    os.makedirs(out_dir, exist_ok=True)
    rows = result.table()
    s = result.settings
    d = result.days
    doc = {"command": command, "coverage": s.coverage, "paths": s.paths, "seed": s.seed, "nu": s.nu,
           "window_days": s.window_days, "span_ranges": s.span_ranges,
           "smile": "flat" if d.smile is None else "skewed", "mpor_days": d.horizon_days,
           "smile_rule": dataclasses.asdict(d.smile) if d.smile is not None else None,
           "start": str(d.dates[0]), "end": str(d.dates[-1]), "days": len(d),
           "books": {b: [dataclasses.asdict(g) for g in legs] for b, legs in result.books.items()},
           "table": rows,
           "series": {"dates": [str(x) for x in d.dates],
                      "pnl": {b: np.round(v, 2).tolist() for b, v in result.pnl.items()},  # USD to the cent
                      "cover": {b: {m: np.round(v, 2).tolist() for m, v in by.items()}
                                for b, by in result.cover.items()}}}
    with open(os.path.join(out_dir, "backtest.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    lo, hi = calibrate.kupiec_region(len(d), s.coverage)
    text = table([[r["book"], r["measure"], r["days"], r["exceedances"] if r["applicable"] else "n/a",
                   round(r["expected"], 2), f"{r['kupiec_p']:.3f}" if r["applicable"] else "n/a",
                   f"{r['christoffersen_p']:.3f}" if r["applicable"] else "n/a", round(r["mean_margin"], 2),
                   round(r["mean_loss"], 2)] for r in rows],
                 ["book", "measure", "days", "exceed", "expected", "kupiec p", "christ. p", "mean margin USD",
                  "mean loss USD"])
    h = d.horizon_days
    smile = ("flat vol = that day's DVOL" if d.smile is None else
             "the skewed smile of `pmjax.apps.backtest_smile` from that day's DVOL and trailing 7-day return")
    overlap = ("" if h == 1 else f" The {h}-day losses of consecutive days overlap, so exceedances cluster by "
               "construction and Christoffersen's independence test is biased towards rejecting.")
    readme = f"""# Margin backtest on BTC/ETH history

Produced by `{command}` (module `pmjax.apps.backtest`; the construction is in its docstring).

Days {d.dates[0]} .. {d.dates[-1]} ({len(d)} days: every day with Binance closes and Deribit DVOL of BTC and ETH
on it and {h} day(s) later, from {s.min_window_days} days after DVOL's start). Each day's margin of a stationary book
(re-struck every day at fixed moneyness and days to expiry on a synthetic market: spot = that day's close,
forwards = spot, {smile}) against the loss over the margin period of risk of {h} day(s) (full revaluation at the
close, DVOL{" and smile" if d.smile is not None else ""} {h} day(s) later). An exceedance is loss > margin.
Coverage target {s.coverage:.0%}: Kupiec's 95% acceptance region for {len(d)} days is {lo} .. {hi} exceedances.{overlap}

Measures: span = SPAN risk with the price scan range calibrated day by day (`pmjax.apps.calibrate`, no look-ahead)
and the shipped vol scan range (x sqrt(h) for an h-day period, with the calibration's h-day price range);
deribit = Deribit portfolio-margin initial margin (coin-margined: a spot
holding is the collateral itself and carries no margin there: n/a); var / es = Monte Carlo Student-t
(nu {s.nu:g}) at {s.coverage:.0%} over {h} day(s), {s.paths:,} paths per day, vol levels = DVOL, vol of vol and
correlations over the trailing {s.window_days} days; rules = rules-based initial margin + net option value (coins held are collateral under the
rules, not a margined position: n/a for the books that hold coins).

```
{text}
```
"""
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(readme)
    return doc




def write_summary(docs: dict[str, dict], path: str) -> str:
    """A table of exceedances (and mean margin) per book and measure, one column per run, from the
    ``backtest.json`` documents of several runs (name -> document), written to ``path``."""
    from pmjax.apps.tables import table

    names = list(docs)
    first = docs[names[0]]
    keys = [(r["book"], r["measure"]) for r in first["table"]]
    by = {n: {(r["book"], r["measure"]): r for r in doc["table"]} for n, doc in docs.items()}
    rows = []
    for k in keys:
        cells = []
        for n in names:
            r = by[n].get(k)
            cells.append("n/a" if r is None or not r["applicable"] else
                         f"{r['exceedances']} ({r['kupiec_p']:.2f}) {r['mean_margin']:,.0f}")
        rows.append([k[0], k[1]] + cells)
    lines = []
    for n, doc in docs.items():
        lo, hi = calibrate.kupiec_region(doc["days"], doc["coverage"])
        lines.append(f"- {n}: {doc['days']} days {doc['start']} .. {doc['end']}, expected "
                     f"{(1 - doc['coverage']) * doc['days']:.1f}, Kupiec region {lo} .. {hi}; `{doc['command']}`")
    text = ("# Margin backtest: exceedances per setting\n\nEach cell: exceedances (Kupiec p) mean margin USD.\n\n"
            + "\n".join(lines) + "\n\n```\n" + table(rows, ["book", "measure"] + names) + "\n```\n")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


__all__ = ["write_report", "write_summary"]
