"""``pmjax calibrate --history CSV [--coverage A] [--horizon H] [--lag L] [--split DATE] [--ttc-reset SCHEDULE]
[--out CONFIG.yaml] [--json]``

SPAN scan ranges from price history and DVOL: the through-the-cycle ranges that ship (re-set on a schedule
from a ten-year lookback and the last year's daily ranges, with a 25% buffer) and the daily rule
(vol-scaled quantiles with a ten-year floor and EMIR anti-procyclicality tools); the BTC/ETH
inter-commodity credit; and each rule's backtest as applied, after a publication lag, in and (with
``--split``) out of sample (``pmjax.apps.calibrate``).
"""

from __future__ import annotations

import shlex

from pmjax.apps.names import APC_TOOLS
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
    p.add_argument("--lag", type=int, default=1, metavar="L",
                   help="days between the close a range is set at and the move it covers (default 1)")
    p.add_argument("--split", default=None, metavar="DATE",
                   help="calibrate on data up to DATE and backtest in and out of sample (YYYY-MM-DD)")
    p.add_argument("--price-apc", default="floor", metavar="TOOLS",
                   help=f"anti-procyclicality of the price range: comma-separated {', '.join(APC_TOOLS)} or none "
                        "(default floor)")
    p.add_argument("--vol-apc", default="floor", metavar="TOOLS",
                   help="anti-procyclicality of the vol range, as --price-apc (default floor)")
    p.add_argument("--ttc-reset", choices=("monthly", "quarterly", "annual"), default="quarterly",
                   help="how often the through-the-cycle ranges (what --out writes) are re-set: the first close of each "
                        "period (default quarterly)")
    p.add_argument("--ttc-stress-weight", type=float, default=0.25, metavar="W",
                   help="weight of the stressed window's moves in the through-the-cycle quantile (EMIR Art. 28(1)(b); "
                        "default 0.25, 0 for none)")
    p.add_argument("--ttc-stress-window", type=int, default=60, metavar="DAYS",
                   help="length of that stressed window: the consecutive moves of the ten-year lookback whose own "
                        "quantile is the largest (default 60)")
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
                                 ("--lag", args.lag, 1), ("--split", args.split, None),
                                 ("--price-apc", args.price_apc, "floor"), ("--vol-apc", args.vol_apc, "floor"),
                                 ("--ttc-reset", args.ttc_reset, "quarterly"),
                                 ("--ttc-stress-weight", args.ttc_stress_weight, 0.25),
                                 ("--ttc-stress-window", args.ttc_stress_window, 60),
                                 ("--start", args.start, None), ("--end", args.end, None), ("--out", args.out, None)):
        if value != default:
            parts += [flag, str(value)]
    parts += [x for d in args.dvol or [] for x in ("--dvol", d)]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt_p(x) -> str:
    return "n/a" if x is None else f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _tools(text: str, flag: str) -> tuple[str, ...]:
    tools = tuple(x.strip().lower() for x in text.split(",") if x.strip() and x.strip().lower() != "none")
    bad = [x for x in tools if x not in APC_TOOLS]
    if bad:
        raise InputError(f"unknown tool(s) {', '.join(bad)} (known: {', '.join(APC_TOOLS)}, none)", source=flag)
    return tools


_RULES = (("ttc", "backtest", "price_scan_range"), ("ttc", "vol_backtest", "vol_scan_range"),
          ("daily", "daily_backtest", "daily_price_scan_range"),
          ("daily", "daily_vol_backtest", "daily_vol_scan_range"))


def _rows(doc: dict) -> list:
    rows = []
    for u, e in doc["underlyings"].items():
        for rule, key, value_key in _RULES:
            what = "vol" if "vol" in key else "price"
            for period, k in (("in sample", key), ("out of sample", f"{key}_oos"),
                              ("frozen config", f"{key}_frozen_oos")):
                if k not in e:
                    continue
                b, head = e[k], [u, what, rule, round(e[value_key], 6), period]
                if b is None:
                    rows.append(head + ["no test day (below)", 0, "", "", "", "", "", "", ""])
                    continue
                cost = b.get("cost_vs_daily")
                rows.append(head + [f"{b['start']}..{b['end']}", b["days"],
                                    f"{b['exceedances']} ({b['up_exceedances']}+/{b['down_exceedances']}-)",
                                    f"{b['expected']:.2f}", _fmt_p(b["kupiec_p"]), _fmt_p(b["christoffersen_p"]),
                                    _fmt_p(b["conditional_coverage_p"]), b["traffic_light"],
                                    f"{b['mean_range']:.4f}" + (f" (x{cost:.2f})" if cost else "")])
    return rows


def _procyclicality_lines(doc: dict) -> list[str]:
    out = []
    for u, e in doc["underlyings"].items():
        for what, pc in e["procyclicality"].items():
            if pc and not what.endswith("before_apc"):
                rule = "daily" if what.startswith("daily") else "through-the-cycle"
                out.append(f"{u} {rule} {what.split('_')[-1]} range {pc['start']}..{pc['end']}: peak {pc['peak']:.4f} "
                           f"({pc['peak_date']}), trough {pc['trough']:.4f} ({pc['trough_date']}), peak/trough "
                           f"{pc['peak_to_trough']:.2f}, largest 10-day increase x{pc['max_increase_10d']:.2f}, "
                           f"30-day x{pc['max_increase_30d']:.2f}")
    return out


#: the settings fields the options set: a bad value is reported against the option
_FLAGS = {"coverage": "--coverage", "horizon_days": "--horizon", "lag_days": "--lag", "ewma_lambda": "--ewma-lambda",
          "floor_coverage": "--floor-coverage", "volatility_model": "--volatility-model", "ttc_reset": "--ttc-reset",
          "ttc_stress_weight": "--ttc-stress-weight", "ttc_stress_window_days": "--ttc-stress-window"}


def _checked(settings):
    """``settings.check()``, its error naming the option that set the bad field."""
    try:
        return settings.check()
    except InputError as e:
        if e.field not in _FLAGS:
            raise
        text = str(e).split(": ", 1)[1]  # "field F: F must ..." -> "must ..."
        raise InputError(text[len(e.field) + 1:] if text.startswith(e.field + " ") else text,
                         source=_FLAGS[e.field]) from None


def run(args):
    from pmjax.apps.calibrate import CalibrationSettings, calibrate, calibration_config, load_history, write_config
    from pmjax.apps.tables import table

    settings = _checked(CalibrationSettings(coverage=args.coverage, horizon_days=args.horizon, lag_days=args.lag,
                                            volatility_model=args.volatility_model, ewma_lambda=args.ewma_lambda,
                                            floor_coverage=args.floor_coverage,
                                            price_apc=_tools(args.price_apc, "--price-apc"),
                                            vol_apc=_tools(args.vol_apc, "--vol-apc"), ttc_reset=args.ttc_reset,
                                            ttc_stress_weight=args.ttc_stress_weight,
                                            ttc_stress_window_days=args.ttc_stress_window))
    data = load_history(args.history, underlying=args.underlying, dvol_files=args.dvol,
                        start=_day(args.start, "--start"), end=_day(args.end, "--end"))
    cal = calibrate(data, settings, split=_day(args.split, "--split"))
    doc = cal.doc
    if args.out:
        write_config(calibration_config(cal), args.out, command=_command_line(args))
        doc = dict(doc, config=args.out)
    notices(doc["notices"])  # stderr, with or without --json
    as_of = next(iter(doc["underlyings"].values()))["as_of"]
    text = [table(_rows(doc), ["underlying", "range", "rule", "value", "backtest", "period", "days", "exceed (up/down)",
                               "expected", "kupiec p", "christ. p", "cond. cov. p", "light", "mean range (x daily)"],
                  title=f"SPAN scan ranges at {doc['coverage']:.2%} coverage over {doc['horizon_days']} day(s) at the "
                        f"close of {as_of}, applied {settings.lag_days} day(s) later. ttc (--out): re-set "
                        f"{settings.ttc_reset} from ten years of moves ({settings.ttc_stress_weight:.0%} weight on the "
                        f"most stressed {settings.ttc_stress_window_days} days) and the last year's daily ranges, "
                        f"{settings.apc_buffer:.0%} buffer; "
                        f"daily: re-set every close, {settings.volatility_model} vol scaling, floor = "
                        f"{settings.floor_coverage:.0%} quantile of ten years of moves. kupiec p: exact one-sided "
                        "P(X >= x)")]
    text += [f"{u}: {e[k]}" for u, e in doc["underlyings"].items() for k in e if k.endswith("_na")]
    text += _procyclicality_lines(doc)
    for s in doc["inter_spreads"]:
        legs = ", ".join(f"{k} {v:g}" for k, v in s["legs"].items())
        text.append(f"inter-commodity spread {legs}: credit_rate {s['credit_rate']:.4f} (hedge effectiveness "
                    f"{s['hedge_effectiveness']:.4f}, correlation {s['correlation']:.4f}, beta {s['beta']:.4f}, "
                    f"{s['start']}..{s['end']})")
    if args.out:
        text.append(f"config written to {args.out} (use it with --config)")
    return doc, "\n\n".join(text)
