"""SPAN scan ranges calibrated from price and implied-vol history, validated as they are applied.

``pmjax calibrate`` (docs/methodology.md section 10). Every input of a range set at the close of day t
comes from data up to t; the range is applied to the move that starts ``lag_days`` (1) later.

- The daily rule: ``pmjax.apps.calibrate_ranges`` (a vol-scaled quantile of standardized moves, a ten-year
  floor and the anti-procyclicality tools of EMIR RTS 153/2013 Art. 28), re-set every close.
- The through-the-cycle rule, what ``--out`` writes: ``pmjax.apps.calibrate_ttc`` (re-set on a schedule from a
  ten-year quantile and the daily rule's last year, with a 25% buffer).
- The config holds the TTC ranges in force at the as-of close (the last close, or ``split``). ``backtest`` and
  ``vol_backtest`` are the TTC ranges as applied up to the as-of close (in sample); with a split, after it, still
  re-set on schedule from data up to each re-set (``backtest_oos``, ``vol_backtest_oos``), and the as-of range
  never updated (``backtest_frozen_oos``, ``vol_backtest_frozen_oos``). ``daily_backtest``,
  ``daily_vol_backtest`` (and ``_oos``, ``_frozen_oos``): the same for the daily rule.
- Statistics: ``pmjax.apps.calibrate_stats`` (exact binomial Kupiec, Christoffersen with a Monte Carlo
  p-value for few exceedances and n/a below 2, conditional coverage, traffic light, exceedance sizes).
- Inter-commodity spread (BTC/ETH), on the common closes up to the as-of close: h-day simple returns R_b,
  R_e; beta = cov(R_b, R_e) / var(R_e); hedge effectiveness E = 1 - q_a(|R_b - beta R_e|) / q_a(|R_b|);
  credit_rate = min(max(E, 0), ``credit_cap``); legs 1 BTC against beta S_b / S_e ETH at the as-of closes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from pmjax.apps import calibrate_ranges as ranges
from pmjax.apps import calibrate_stats as stats
from pmjax.apps import calibrate_ttc as ttc
from pmjax.apps.calibrate_ranges import (CalibrationSettings, Ranges, daily_grid, price_scan_ranges,
                                         vol_scan_ranges)
from pmjax.apps.calibrate_stats import chi2_1_sf, christoffersen_lr, kupiec_lr
from pmjax.io import history
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS

#: span keys the calibration sets (the others keep the defaults of configs/span.yaml)
CALIBRATED_KEYS = ("price_scan_range", "vol_scan_range")
#: the rolling ranges of earlier versions, by their old names
PriceRanges = Ranges
VolRanges = Ranges


def backtest_stats(hits, coverage: float) -> dict:
    """``{days, exceedances, expected, kupiec_p, christoffersen_p}`` with chi-square(1) p-values of both LRs
    (the asymptotic form the margin backtest reports; ``calibrate_stats.coverage_stats`` has the exact
    tests the calibration reports)."""
    hits = np.asarray(hits, dtype=bool)
    p = 1.0 - coverage
    return {"days": int(len(hits)), "exceedances": int(hits.sum()), "expected": float(p * len(hits)),
            "kupiec_p": chi2_1_sf(kupiec_lr(hits, p)), "christoffersen_p": chi2_1_sf(christoffersen_lr(hits))}


def kupiec_region(days: int, coverage: float, level: float = 0.95) -> tuple[int, int]:
    """The exceedance counts x in 0..days whose asymptotic two-sided Kupiec p-value is at least 1 - level."""
    p = 1.0 - coverage
    ok = [x for x in range(days + 1) if chi2_1_sf(float(stats.kupiec_lr_counts(x, days, p))) >= 1.0 - level]
    return (min(ok), max(ok)) if ok else (0, -1)


def coverage_limit(days: int, coverage: float, level: float = 0.95) -> int:
    """The largest exceedance count the one-sided exact test accepts: max x with P(X >= x) >= 1 - level."""
    p = 1.0 - coverage
    x = 0
    while x < days and stats.binom_upper_tail(x + 1, days, p) >= 1.0 - level:
        x += 1
    return x


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else math.nan


def inter_spread(btc: history.Series, eth: history.Series, settings: CalibrationSettings = CalibrationSettings(),
                 ) -> dict:
    """The BTC/ETH inter-commodity spread: legs, credit_rate and the statistics behind them."""
    s = settings.check()
    h = int(s.horizon_days)
    joint = history.align([btc, eth])
    if len(joint) < 60:
        raise InputError(f"only {len(joint)} common days of BTC and ETH closes (need 60)", field="history")
    levels = joint.values
    rb = levels[h:, 0] / levels[:-h, 0] - 1.0
    re_ = levels[h:, 1] / levels[:-h, 1] - 1.0
    # only windows of exactly h calendar days
    ok = (joint.dates[h:] - joint.dates[:-h]).astype(np.int64) == h
    rb, re_ = rb[ok], re_[ok]
    cov = np.cov(rb, re_)
    beta = float(cov[0, 1] / cov[1, 1])
    rho = float(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]))
    q_outright = _quantile(np.abs(rb), s.coverage)
    q_hedged = _quantile(np.abs(rb - beta * re_), s.coverage)
    effectiveness = 1.0 - q_hedged / q_outright
    credit = min(max(effectiveness, 0.0), s.credit_cap)
    s_b, s_e = float(levels[-1, 0]), float(levels[-1, 1])
    eth_coins = round(beta * s_b / s_e, 2)
    return {"legs": {"BTC": 1.0, "ETH": eth_coins}, "credit_rate": round(credit, 4), "correlation": rho,
            "beta": beta, "hedge_effectiveness": effectiveness, "quantile_outright": q_outright,
            "quantile_hedged": q_hedged, "prices": {"BTC": s_b, "ETH": s_e, "date": str(joint.dates[-1])},
            "start": str(joint.dates[0]), "end": str(joint.dates[-1]), "days": int(len(rb))}


# ---------------------------------------------------------------- inputs

#: the word that selects the bundled BTC and ETH closes and DVOL
BUNDLED = "bundled"


@dataclasses.dataclass
class HistoryInput:
    """Closes (and DVOL when known) per underlying, with where each came from."""

    closes: dict[str, history.Series]
    dvols: dict[str, history.Series]
    notices: list[str] = dataclasses.field(default_factory=list)


def underlying_from_filename(path: str) -> str | None:
    """BTC for ``BTCUSDT_1d.csv``, ETH for ``eth-usd.csv``...: the known underlying the file name starts with."""
    base = re.sub(r"[^A-Z]", "", os.path.basename(path).upper())
    for u in UNDERLYINGS:
        if base.startswith(u):
            return u
    return None


def load_history(specs: list[str], *, underlying: str | None = None, dvol_files: list[str] | None = None,
                 start=None, end=None) -> HistoryInput:
    """Histories named on the command line: ``bundled`` or Binance kline CSVs (the underlying from the file
    name, or ``underlying`` for a single file); DVOL from ``dvol_files`` (named like the closes) or, for
    BTC and ETH, the bundled DVOL. ``start``/``end`` (inclusive) cut every series."""
    items = [x.strip() for spec in specs for x in str(spec).split(",") if x.strip()]
    if not items:
        raise InputError("no history given", source="--history")
    closes: dict[str, history.Series] = {}
    dvols: dict[str, history.Series] = {}
    notices: list[str] = []
    files = [x for x in items if x.lower() != BUNDLED]
    if underlying is not None and len(files) != 1:
        raise InputError("--underlying names the underlying of a single history CSV", source="--underlying")
    for item in items:
        if item.lower() == BUNDLED:
            for u in UNDERLYINGS:
                closes[u] = history.bundled_close(u)
                dvols[u] = history.bundled_dvol(u)
            continue
        if not os.path.isfile(item):
            raise InputError("cannot read file: no such file", source=item)
        u = (underlying or underlying_from_filename(item) or "").upper()
        if u not in UNDERLYINGS:
            raise InputError(f"cannot tell the underlying ({', '.join(UNDERLYINGS)}) from the file name; give "
                             f"--underlying" if not underlying else f"unknown underlying {underlying!r} (known: "
                             f"{', '.join(UNDERLYINGS)})", source=item)
        if u in closes:
            raise InputError(f"two histories for {u}", source=item)
        closes[u] = history.read_klines(item, name=u)
    for path in [x.strip() for spec in dvol_files or [] for x in str(spec).split(",") if x.strip()]:
        if not os.path.isfile(path):
            raise InputError("cannot read file: no such file", source=path)
        u = underlying_from_filename(path) if underlying is None or len(closes) > 1 else underlying.upper()
        if u not in closes:
            raise InputError(f"a DVOL file for an underlying without closes ({u or 'unknown'})", source=path)
        dvols[u] = history.read_dvol(path, name=f"{u}_dvol")
    for u in closes:
        if u not in dvols:
            dvols[u] = history.bundled_dvol(u)
            notices.append(f"{u}: vol scan range from the bundled Deribit DVOL history (give --dvol for another)")
    cut = lambda s: s.between(start, end)  # noqa: E731
    closes = {u: cut(s) for u, s in closes.items()}
    dvols = {u: cut(s) for u, s in dvols.items()}
    for u, s in list(closes.items()) + list(dvols.items()):
        if len(s) < 2:
            raise InputError(f"{s.name}: no history between {start or 'the start'} and {end or 'the end'}",
                             source=s.source)
    return HistoryInput(closes, dvols, notices)


# ---------------------------------------------------------------- the calibration


@dataclasses.dataclass
class Calibration:
    """A calibration: the SPEC calibrate document and the ranges behind it (for plots): the daily rule's
    (``prices``, ``vols``) and the through-the-cycle ones that ship (``ttc_prices``, ``ttc_vols``)."""

    doc: dict
    prices: dict[str, Ranges]
    vols: dict[str, Ranges]
    settings: CalibrationSettings
    split: np.datetime64 | None = None
    ttc_prices: dict[str, Ranges] = dataclasses.field(default_factory=dict)
    ttc_vols: dict[str, Ranges] = dataclasses.field(default_factory=dict)


def _series_info(s: history.Series, filled: int) -> dict:
    return {"source": os.path.basename(s.source) if s.source else "", "start": str(s.dates[0]),
            "end": str(s.dates[-1]), "days": int(len(s)), "filled_days": int(filled)}


def _as_of_index(r: Ranges, day, what: str) -> int:
    """The grid index of the as-of close; an error when no range is set by then."""
    t = r.index(day)
    if t < 0 or not np.isfinite(r.range[t]):
        first = r.dates[r.first] if r.first < len(r.dates) else "never"
        raise InputError(f"{r.name}: no {what} scan range by {day} (the first is set at the close of {first})",
                         field="split")
    return t


def _backtests(r: Ranges, t: int, coverage: float, split: bool, prefix: str, daily: Ranges | None = None) -> dict:
    """In-sample backtest of the ranges as applied up to close t and, with a split, the out-of-sample ones
    (re-set after t as before it) and the range at t frozen. With ``daily`` (r is the TTC rule): each
    block adds ``daily_mean_range`` (the daily rule's mean range on the same days) and ``cost_vs_daily``."""
    ins = ranges.backtest_days(r, 0, t)
    out = {prefix: ranges.backtest(r, ins, coverage)}
    if not len(ins):
        out[f"{prefix}_na"] = (f"no test day by {r.dates[t]}: the first {r.kind} range is set at the close of "
                               f"{r.dates[r.first]} and applies {r.lag} day(s) later")
    if split:
        oos = ranges.backtest_days(r, t, r.last, forward=True)
        ref = ranges.exceedance_sizes(r, ins) if len(ins) else np.zeros(0)
        out[f"{prefix}_oos"] = ranges.backtest(r, oos, coverage, reference=ref)
        out[f"{prefix}_frozen_oos"] = ranges.backtest(r, oos, coverage, frozen_at=t)
    if daily is not None:
        blocks = [(prefix, ins)] + ([(f"{prefix}_oos", oos), (f"{prefix}_frozen_oos", oos)] if split else [])
        for k, days in blocks:
            _add_cost(out[k], daily, days)
    return out


def _add_cost(b: dict | None, daily: Ranges, days: np.ndarray) -> None:
    """The over-coverage cost of a TTC backtest block: its mean range against the daily rule's, same days."""
    if b is None:
        return
    d = ranges.applied_range(daily)[days]
    d = d[np.isfinite(d)]
    b["daily_mean_range"] = float(np.mean(d)) if len(d) else None
    b["cost_vs_daily"] = b["mean_range"] / b["daily_mean_range"] if len(d) else None


def _procyclicality(pr: Ranges, vr: Ranges, tp: Ranges, tv: Ranges) -> dict:
    return {"price": ranges.procyclicality(tp), "vol": ranges.procyclicality(tv),
            "daily_price": ranges.procyclicality(pr), "daily_vol": ranges.procyclicality(vr),
            "daily_price_before_apc": ranges.procyclicality(pr, pr.calculated),
            "daily_vol_before_apc": ranges.procyclicality(vr, vr.calculated)}


def _underlying(u: str, data: "HistoryInput", s: CalibrationSettings, split, notices: list) -> tuple:
    closes, dvol = data.closes[u], data.dvols[u]
    as_of = np.datetime64(split, "D") if split is not None else closes.dates[-1]
    if split is None and dvol.dates[-1] > as_of:
        dvol = dvol.between(None, as_of)
        notices.append(f"{u}: DVOL after the last close ({as_of}) left out: the vol range uses data up to it")
    pr = price_scan_ranges(closes, s, cutoff=as_of)
    vr = vol_scan_ranges(dvol, s, cutoff=as_of)
    tp, tv = ttc.ttc_ranges(pr, s), ttc.ttc_ranges(vr, s)
    t, v = _as_of_index(pr, as_of, "price"), _as_of_index(vr, as_of, "vol")
    with_split = split is not None
    entry = {
        "price_scan_range": float(tp.range[t]), "vol_scan_range": float(tv.range[v]),
        "ttc": {"price": ttc.ttc_entry(tp, t, s), "vol": ttc.ttc_entry(tv, v, s),
                "price_resets": ttc.ttc_resets(tp), "vol_resets": ttc.ttc_resets(tv)},
        "daily_price_scan_range": float(pr.range[t]), "daily_vol_scan_range": float(vr.range[v]),
        "long_run_floor": float(pr.floor[t]), "scaled_range": float(pr.scaled[t]),
        "standardized_quantile": float(pr.quantile[t]), "daily_vol": float(pr.sigma[t]),
        "vol_long_run_floor": float(vr.floor[v]), "vol_scaled_range": float(vr.scaled[v]),
        "vol_standardized_quantile": float(vr.quantile[v]), "dvol": float(vr.level[v]),
        "dvol_daily_change_vol": float(vr.sigma[v]),
        "as_of": str(pr.dates[t]), "vol_as_of": str(vr.dates[v]), "lag_days": int(s.lag_days),
        **_backtests(tp, t, s.coverage, with_split, "backtest", daily=pr),
        **_backtests(tv, v, s.coverage, with_split, "vol_backtest", daily=vr),
        **_backtests(pr, t, s.coverage, with_split, "daily_backtest"),
        **_backtests(vr, v, s.coverage, with_split, "daily_vol_backtest"),
        "procyclicality": _procyclicality(pr, vr, tp, tv),
        "history": {"closes": _series_info(closes, pr.filled_days), "dvol": _series_info(dvol, vr.filled_days)},
    }
    g = pr.garch_at(t)
    if g is not None:
        entry["garch"] = {"omega": g.omega, "alpha": g.alpha, "beta": g.beta, "fitted_returns": g.n,
                          "refits": len(pr.garch)}
    return entry, pr, vr, tp, tv


def _method(s: CalibrationSettings) -> dict:
    method = {"rule": "through the cycle (what --out writes; backtest, vol_backtest): re-set on the ttc_reset schedule at "
                      "close T from data up to T, B_T = max(q_a(|M_i|, ten years, ttc_stress_weight on the "
                      "ttc_stress_window_days consecutive moves with the largest q_a), mean of the daily range over "
                      "ttc_mean_days), P_T = max(B_T, min((1 + apc_buffer) B_T, (1 + apc_buffer) P_prev)), in force "
                      "until the next re-set and applied L = lag_days closes later",
              "daily_rule": "range_t = APC(max(q_a(|M_i| / (sigma_{i-L} sqrt(h))) * sigma_t * sqrt(h), floor_t)), "
                            "applied to the move starting L = lag_days closes after t (daily_backtest, "
                            "daily_vol_backtest)",
              "ttc_reset": s.ttc_reset, "ttc_mean_days": s.ttc_mean_days,
              "ttc_stress_weight": s.ttc_stress_weight, "ttc_stress_window_days": s.ttc_stress_window_days,
              "volatility_model": s.volatility_model, "lag_days": int(s.lag_days), "burn_in_days": s.burn_in_days,
              "floor_coverage": s.floor_coverage, "floor_window_days": s.floor_window_days,
              "min_history_days": s.min_history_days, "vol_min_history_days": s.vol_min_history_days,
              "vol_ewma_lambda": s.vol_ewma_lambda, "vol_floor_coverage": s.vol_floor_coverage,
              "price_apc": list(s.price_apc), "vol_apc": list(s.vol_apc), "apc_buffer": s.apc_buffer,
              "apc_buffer_rebuild": s.apc_buffer_rebuild, "apc_stress_weight": s.apc_stress_weight,
              "credit_cap": s.credit_cap,
              "kupiec_p": "exact one-sided binomial P(X >= x) (over-coverage: over_coverage_p = P(X <= x))",
              "christoffersen_p": f"null below 2 exceedances; Monte Carlo ({stats.MC_SIMULATIONS} placements, seed "
                                  f"{stats.MC_SEED}) up to {stats.MC_MAX_EXCEEDANCES}; chi-square(1) above"}
    if s.volatility_model == "ewma":
        method["ewma_lambda"] = s.ewma_lambda
    else:
        method["garch_refit_days"] = s.garch_refit_days
    return method


def calibrate(data: HistoryInput, settings: CalibrationSettings = CalibrationSettings(), *,
              split=None) -> Calibration:
    """Calibrate every underlying of ``data`` at the as-of close (``split``, default the last close) and, with
    BTC and ETH, their inter-commodity spread on the closes up to it."""
    s = settings.check()
    split = None if split is None else np.datetime64(split, "D")
    unds, prices, vols, tps, tvs, notices = {}, {}, {}, {}, {}, list(data.notices)
    for u in [x for x in UNDERLYINGS if x in data.closes]:
        unds[u], prices[u], vols[u], tps[u], tvs[u] = _underlying(u, data, s, split, notices)
    spreads = []
    if {"BTC", "ETH"} <= set(unds):
        cut = [data.closes[u].between(None, split) for u in ("BTC", "ETH")]
        spreads = [inter_spread(cut[0], cut[1], s)]
    doc = {"coverage": s.coverage, "horizon_days": int(s.horizon_days), "lag_days": int(s.lag_days),
           "split": None if split is None else str(split), "underlyings": unds, "inter_spreads": spreads,
           "method": _method(s), "notices": notices}
    return Calibration(doc, prices, vols, s, split, tps, tvs)


def calibration_config(cal: Calibration, base: dict | None = None) -> dict:
    """A config for ``--config``: ``horizon_days``, the ``span`` section (every key of ``base``'s span
    section, default the shipped one, with the calibrated ranges and spreads) and ``calibration`` (the
    calibrate document: provenance)."""
    if base is None:
        from pmjax.io.config import load_config

        base = load_config()
    base_unds = (base.get("span") or {}).get("underlyings") or {}
    unds = {}
    for u, e in cal.doc["underlyings"].items():
        d = dict(base_unds.get(u) or {})
        d.update({k: e[k] for k in CALIBRATED_KEYS})
        unds[u] = d
    span: dict = {"underlyings": unds}
    if cal.doc["inter_spreads"]:
        span["inter_spreads"] = [{"legs": dict(x["legs"]), "credit_rate": x["credit_rate"]}
                                 for x in cal.doc["inter_spreads"]]
    return {"horizon_days": cal.doc["horizon_days"], "span": span, "calibration": cal.doc}


def write_config(config: dict, path: str, *, command: str | None = None) -> None:
    """Write ``config`` as YAML (JSON for ``.json``) with a header naming the command that made it."""
    import json

    import yaml

    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "w", encoding="utf-8") as fh:
            if ext == ".json":
                json.dump(config, fh, indent=1)
                fh.write("\n")
                return
            fh.write("# SPAN parameters calibrated from price and DVOL history by pmjax calibrate"
                     + (f":\n#   {command}\n" if command else "\n")
                     + "# span: the calibrated scan ranges and inter-commodity spread (other keys: the defaults);\n"
                     + "# calibration: the rule, the data used and the backtest statistics (provenance).\n")
            yaml.safe_dump(config, fh, sort_keys=False, default_flow_style=None, width=110)
    except OSError as e:
        raise InputError(f"cannot write file: {e.strerror}", source=path) from None


__all__ = ["BUNDLED", "CALIBRATED_KEYS", "Calibration", "CalibrationSettings", "HistoryInput", "PriceRanges",
           "Ranges", "VolRanges", "backtest_stats", "calibrate", "calibration_config", "chi2_1_sf",
           "christoffersen_lr", "coverage_limit", "daily_grid", "inter_spread", "kupiec_lr", "kupiec_region",
           "load_history", "price_scan_ranges", "underlying_from_filename", "vol_scan_ranges", "write_config"]
