"""``pmjax calibrate --history CSV [--coverage A] [--horizon H] [--out CONFIG.yaml] [--json]``

SPAN scan ranges from price history (vol-scaled quantiles with a long-run floor), vol scan ranges
from DVOL, the BTC/ETH inter-commodity credit, and each range's backtest (``pmjax.apps.calibrate``).
"""

from __future__ import annotations

import shlex

from pmjax.cli.app import notices
from pmjax.core.errors import InputError


def add_arguments(p):
    p.add_argument("--history", action="append", required=True, metavar="CSV",
                   help="Binance daily klines CSV(s) (timestamp,open,high,low,close,volume; repeat the flag or "
                        "comma-separate), or 'bundled' for the bundled BTC and ETH closes and DVOL")
    p.add_argument("--underlying", default=None, help="the underlying of a single CSV (default: from its name)")
    p.add_argument("--dvol", action="append", default=None, metavar="CSV",
                   help="Deribit DVOL CSV(s) (date,...,close in percent; repeat the flag or comma-separate) for the "
                        "vol scan range (default: the bundled DVOL of each underlying)")
    p.add_argument("--coverage", type=float, default=0.99, metavar="A", help="coverage target (default 0.99)")
    p.add_argument("--horizon", type=int, default=1, metavar="H", help="horizon in whole days (default 1)")
    p.add_argument("--volatility-model", choices=("ewma", "garch"), default="ewma",
                   help="volatility filter of the returns (default ewma, lambda 0.94)")
    p.add_argument("--ewma-lambda", type=float, default=0.94, help="EWMA decay (default 0.94)")
    p.add_argument("--floor-coverage", type=float, default=0.95,
                   help="quantile of |h-day returns| over ten years that floors the range (default 0.95)")
    p.add_argument("--start", default=None, help="first day of history used (YYYY-MM-DD)")
    p.add_argument("--end", default=None, help="last day of history used (YYYY-MM-DD)")
    p.add_argument("--out", default=None, metavar="CONFIG.yaml",
                   help="write a config usable with --config: span (the calibrated ranges) and calibration "
                        "(provenance and backtests)")


def _day(text, flag):
    if text is None:
        return None
    import numpy as np

    try:
        return np.datetime64(text, "D")
    except ValueError:
        raise InputError(f"bad date {text!r} (want YYYY-MM-DD)", source=flag) from None


def _command_line(args) -> str:
    """The command that reproduces this calibration (options at their defaults left out)."""
    parts = ["pmjax", "calibrate"] + [x for h in args.history for x in ("--history", h)]
    for flag, value, default in (("--underlying", args.underlying, None), ("--coverage", args.coverage, 0.99),
                                 ("--horizon", args.horizon, 1), ("--volatility-model", args.volatility_model, "ewma"),
                                 ("--ewma-lambda", args.ewma_lambda, 0.94), ("--floor-coverage", args.floor_coverage,
                                                                             0.95),
                                 ("--start", args.start, None), ("--end", args.end, None), ("--out", args.out, None)):
        if value != default:
            parts += [flag, str(value)]
    parts += [x for d in args.dvol or [] for x in ("--dvol", d)]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt_p(x: float) -> str:
    return f"{x:.3f}"


def run(args):
    from pmjax.apps.calibrate import CalibrationSettings, calibrate, calibration_config, load_history, write_config
    from pmjax.apps.tables import table

    if args.ewma_lambda is not None and not 0.0 < args.ewma_lambda < 1.0:
        raise InputError(f"must be in (0, 1), got {args.ewma_lambda!r}", source="--ewma-lambda")
    settings = CalibrationSettings(coverage=args.coverage, horizon_days=args.horizon,
                                   volatility_model=args.volatility_model, ewma_lambda=args.ewma_lambda,
                                   floor_coverage=args.floor_coverage).check()
    data = load_history(args.history, underlying=args.underlying, dvol_files=args.dvol,
                        start=_day(args.start, "--start"), end=_day(args.end, "--end"))
    cal = calibrate(data, settings)
    doc = cal.doc
    if args.out:
        write_config(calibration_config(cal), args.out, command=_command_line(args))
        doc = dict(doc, config=args.out)
    notices(data.notices)  # stderr, with or without --json
    rows = []
    for u, e in doc["underlyings"].items():
        b = e["backtest"]
        rows.append([u, e["price_scan_range"], e["long_run_floor"], e["scaled_range"], e["vol_scan_range"],
                     f"{b['start']}..{b['end']}", b["days"], b["exceedances"], round(b["expected"], 2),
                     _fmt_p(b["kupiec_p"]), _fmt_p(b["christoffersen_p"])])
    text = [table(rows, ["underlying", "price range", "floor", "vol-scaled", "vol range", "backtest", "days",
                         "exceed", "expected", "kupiec p", "christ. p"],
                  title=f"SPAN scan ranges at {doc['coverage']:.2%} coverage over {doc['horizon_days']} day(s), "
                        f"{settings.volatility_model} vol scaling, floor = {settings.floor_coverage:.0%} quantile "
                        f"of ten years of moves")]
    for s in doc["inter_spreads"]:
        legs = ", ".join(f"{k} {v:g}" for k, v in s["legs"].items())
        text.append(f"inter-commodity spread {legs}: credit_rate {s['credit_rate']:.4f} (hedge effectiveness "
                    f"{s['hedge_effectiveness']:.4f}, correlation {s['correlation']:.4f}, beta {s['beta']:.4f}, "
                    f"{s['start']}..{s['end']})")
    if args.out:
        text.append(f"config written to {args.out} (use it with --config)")
    return doc, "\n\n".join(text)
