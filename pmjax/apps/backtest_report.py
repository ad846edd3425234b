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
    readme = f"""# Margin backtest on BTC/ETH history

Produced by `{command}` (module `pmjax.apps.backtest`; the construction is in its docstring).

Days {d.dates[0]} .. {d.dates[-1]} ({len(d)} days: every day with Binance closes and Deribit DVOL of BTC and ETH
on it and the next day, from {s.min_window_days} days after DVOL's start). Each day's margin of a stationary book
(re-struck every day at fixed moneyness and days to expiry on a synthetic market: spot = that day's close,
forwards = spot, flat vol = that day's DVOL) against the loss of the next day (full revaluation at the next
close and DVOL, one day later). An exceedance is loss > margin. Coverage target {s.coverage:.0%}: Kupiec's 95%
acceptance region for {len(d)} days is {lo} .. {hi} exceedances.

Measures: span = SPAN risk with the price scan range calibrated day by day (`pmjax.apps.calibrate`, no look-ahead)
and the shipped vol scan range; deribit = Deribit portfolio-margin initial margin (coin-margined: a spot
holding is the collateral itself and carries no margin there: n/a); var / es = Monte Carlo Student-t (nu {s.nu:g}) at
{s.coverage:.0%}, {s.paths:,} paths per day, vols = DVOL, vol of vol and correlations over the trailing
{s.window_days} days; rules = rules-based initial margin + net option value (coins held are collateral under the
rules, not a margined position: n/a for the books that hold coins).

```
{text}
```
"""
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(readme)
    return doc


__all__ = ["write_report"]
