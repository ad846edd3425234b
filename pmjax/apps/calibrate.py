"""SPAN scan ranges calibrated from price and implied-vol history, with coverage backtests.

The rule (``pmjax calibrate``; every step uses only data known at the close where the range is set):

Price scan range of underlying u for horizon h days at coverage a, set at the close of day t:

    range_t = max(q_t * sigma_t * sqrt(h), floor_t)

- R_i = P(i+h) / P(i) - 1: the h-day simple return starting at close i (what the SPAN scan applies:
  spot x (1 + m P)); daily closes on consecutive calendar days (missing days carry the last close);
- sigma_i: the one-day vol forecast at close i from the daily log-returns before it, EWMA
  (RiskMetrics, lambda 0.94; ``history.ewma_variance``) or GARCH(1,1) (``history.fit_garch``: its
  three parameters are fitted once on the whole sample, the filtered vol still uses past returns only);
- z_i = |R_i| / (sigma_i sqrt(h)): standardized absolute moves, from ``burn_in_days`` (30) on, while
  the filter forgets its start;
- q_t = the a-quantile of the z_i whose windows closed by t (i + h <= t): vol scaling makes the
  range follow the current regime, as clearing houses' filtered historical VaR does;
- floor_t = the ``floor_coverage``-quantile (0.95) of |R_i| over the last ``floor_window_days`` (3650,
  ten years) of windows closed by t: a long-run level the range never drops below in calm markets
  (anti-procyclicality, in the spirit of EMIR RTS 153/2013 Art. 28's ten-year lookback). The floor
  sits at a lower quantile than the target because at the target itself it binds on most days and
  the range over-covers (on the bundled BTC history: 7 exceedances in 2,699 days for 27 expected,
  which Kupiec's test rejects just as it rejects too many);
- quantiles are numpy's default (linear interpolation between order statistics).

The shipped range is range_N at the last close N. Backtest: for each close t from
``burn_in_days + min_history_days`` on (so the quantile rests on at least a year of moves), stepping
h days (non-overlapping windows, so exceedances can be independent), an exceedance is
|R_t| > range_t; Kupiec's proportion-of-failures and Christoffersen's independence likelihood-ratio
tests give chi-square(1) p-values (``chi2_1_sf``, from ``math.erfc``: no scipy at run time).

Vol scan range: the a-quantile of |D(i+h) - D(i)|, the absolute h-day changes of the DVOL index
(decimal vol points), over the whole DVOL history; its backtest uses the expanding quantile of the
changes closed by t (at least ``vol_min_history_days`` of them) against the next change.

Inter-commodity spread (BTC/ETH): on the common days, h-day simple returns R_b, R_e (overlapping);
correlation rho; beta = cov(R_b, R_e) / var(R_e), the minimum-variance hedge of BTC by ETH in USD;
hedge effectiveness E = 1 - q_a(|R_b - beta R_e|) / q_a(|R_b|) (how much of BTC's a-quantile move the
hedged spread removes); credit_rate = min(max(E, 0), ``credit_cap``) (0.75). The spread's legs, in
coins of delta: 1 BTC against beta S_b / S_e ETH at the last common close (USD ratio beta).

Formulas: docs/methodology.md section 10.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from pmjax.io import history
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS

#: span keys the calibration sets (the others keep the defaults of configs/span.yaml)
CALIBRATED_KEYS = ("price_scan_range", "vol_scan_range")


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """Parameters of the rule (see the module docstring)."""

    coverage: float = 0.99
    horizon_days: int = 1
    volatility_model: str = "ewma"  # ewma | garch
    ewma_lambda: float = 0.94
    burn_in_days: int = 30
    floor_coverage: float = 0.95
    floor_window_days: int = 3650
    min_history_days: int = 365
    vol_min_history_days: int = 250
    credit_cap: float = 0.75

    def check(self) -> "CalibrationSettings":
        if not 0.5 <= self.coverage < 1.0:
            raise InputError(f"the coverage must be in [0.5, 1), got {self.coverage!r}", field="coverage")
        if not 0.0 < self.floor_coverage < 1.0:
            raise InputError(f"floor_coverage must be in (0, 1), got {self.floor_coverage!r}",
                             field="floor_coverage")
        if int(self.horizon_days) != self.horizon_days or not 1 <= self.horizon_days <= 30:
            raise InputError(f"the horizon must be a whole number of days from 1 to 30, got {self.horizon_days!r}",
                             field="horizon_days")
        if self.volatility_model not in history.VOLATILITY_MODELS:
            raise InputError(f"volatility_model must be one of {', '.join(history.VOLATILITY_MODELS)}, got "
                             f"{self.volatility_model!r}", field="volatility_model")
        if not 0.0 <= self.credit_cap <= 1.0:
            raise InputError(f"credit_cap must be in [0, 1], got {self.credit_cap!r}", field="credit_cap")
        return self


# ---------------------------------------------------------------- backtest statistics

def chi2_1_sf(x: float) -> float:
    """P(X > x) for X chi-square with 1 degree of freedom: erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(max(float(x), 0.0) / 2.0))


def _xlogy(x: float, y: float) -> float:
    """x log y with 0 log 0 = 0."""
    return 0.0 if x == 0 else x * math.log(y)


def _bernoulli_loglik(failures: float, trials: float, p: float) -> float:
    return _xlogy(failures, p) + _xlogy(trials - failures, 1.0 - p)


def kupiec_lr(hits, p: float) -> float:
    """Kupiec's proportion-of-failures LR: -2 log [L(p) / L(x / n)] for x exceedances in n days."""
    hits = np.asarray(hits, dtype=bool)
    n, x = len(hits), int(hits.sum())
    if n == 0:
        return 0.0
    return max(0.0, -2.0 * (_bernoulli_loglik(x, n, p) - _bernoulli_loglik(x, n, x / n)))


def christoffersen_lr(hits) -> float:
    """Christoffersen's independence LR: a first-order Markov chain of exceedances (pi01, pi11) against
    a constant rate pi; 0 when there are no transitions to test."""
    h = np.asarray(hits, dtype=bool)
    if len(h) < 2:
        return 0.0
    a, b = h[:-1], h[1:]
    n00, n01 = int(np.sum(~a & ~b)), int(np.sum(~a & b))
    n10, n11 = int(np.sum(a & ~b)), int(np.sum(a & b))
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = _bernoulli_loglik(n01 + n11, n00 + n01 + n10 + n11, pi)
    alt = _bernoulli_loglik(n01, n00 + n01, pi01) + _bernoulli_loglik(n11, n10 + n11, pi11)
    return max(0.0, -2.0 * (null - alt))


def backtest_stats(hits, coverage: float) -> dict:
    """``{days, exceedances, expected, kupiec_p, christoffersen_p}`` of a daily exceedance sequence."""
    hits = np.asarray(hits, dtype=bool)
    p = 1.0 - coverage
    return {"days": int(len(hits)), "exceedances": int(hits.sum()), "expected": float(p * len(hits)),
            "kupiec_p": chi2_1_sf(kupiec_lr(hits, p)), "christoffersen_p": chi2_1_sf(christoffersen_lr(hits))}


def kupiec_region(days: int, coverage: float, level: float = 0.95) -> tuple[int, int]:
    """The exceedance counts x in 0..days whose Kupiec p-value is at least 1 - level (the acceptance region)."""
    p = 1.0 - coverage
    ok = [x for x in range(days + 1) if chi2_1_sf(kupiec_lr(np.arange(days) < x, p)) >= 1.0 - level]
    return (min(ok), max(ok)) if ok else (0, -1)


# ---------------------------------------------------------------- series on a daily grid

def daily_grid(series: history.Series) -> tuple[history.Series, int]:
    """``series`` on every calendar day from its first to its last, missing days carrying the last value;
    second value: how many days were filled."""
    if len(series) < 2:
        raise InputError(f"{series.name}: need at least 2 days of history, got {len(series)}", source=series.source)
    days = np.arange(series.dates[0], series.dates[-1] + np.timedelta64(1, "D"), dtype="datetime64[D]")
    j = np.searchsorted(series.dates, days, side="right") - 1
    return dataclasses.replace(series, dates=days, values=series.values[j]), len(days) - len(series)


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else math.nan


@dataclasses.dataclass(frozen=True)
class PriceRanges:
    """Rolling price scan ranges of one underlying, one row per close of the daily grid.

    ``range[t]`` is set at the close of ``dates[t]`` for the move to the close h days later; NaN
    before enough history; ``move[t]`` = R_t = P(t+h)/P(t) - 1 (NaN for the last h closes);
    ``tested`` marks the backtest days (non-overlapping), ``hits`` the exceedances among them.
    """

    name: str
    dates: np.ndarray
    close: np.ndarray
    sigma: np.ndarray  # daily vol forecast at each close
    quantile: np.ndarray  # q_t
    scaled: np.ndarray  # q_t sigma_t sqrt(h)
    floor: np.ndarray  # floor_t
    range: np.ndarray
    move: np.ndarray
    tested: np.ndarray
    hits: np.ndarray
    filled_days: int
    garch: history.Garch | None = None

    @property
    def last(self) -> int:
        return len(self.dates) - 1


def price_scan_ranges(closes: history.Series, settings: CalibrationSettings = CalibrationSettings()) -> PriceRanges:
    """The rolling price scan range at every close (no look-ahead) and its backtest (module docstring)."""
    s = settings.check()
    grid, filled = daily_grid(closes)
    p = grid.values
    n, h = len(p), int(s.horizon_days)
    need = s.burn_in_days + s.min_history_days + h + 1
    if n < need:
        raise InputError(f"{closes.name}: {n} days of closes are too few to calibrate (need {need}: "
                         f"{s.burn_in_days} burn-in + {s.min_history_days} history + the horizon)",
                         source=closes.source)
    r = np.diff(np.log(p))
    garch = None
    if s.volatility_model == "ewma":
        s2 = history.ewma_variance(r, s.ewma_lambda, warmup=s.burn_in_days)
    else:
        garch = history.fit_garch(r, warmup=s.burn_in_days)
        s2 = garch.variance(r)
    sigma = np.sqrt(s2)  # sigma[i]: forecast for the return from close i to i + 1
    move = np.full(n, np.nan)
    move[: n - h] = p[h:] / p[: n - h] - 1.0
    absmove = np.abs(move)
    z = absmove / (sigma * math.sqrt(h))
    q = np.full(n, np.nan)
    floor = np.full(n, np.nan)
    first = s.burn_in_days + s.min_history_days + h - 1  # first close with min_history_days of z closed
    for t in range(first, n):
        closed = t - h + 1  # windows i < closed have i + h <= t
        q[t] = _quantile(z[s.burn_in_days:closed], s.coverage)
        floor[t] = _quantile(absmove[max(0, closed - s.floor_window_days):closed], s.floor_coverage)
    scaled = q * sigma * math.sqrt(h)
    rng = np.fmax(scaled, floor)
    rng[:first] = np.nan
    tested = np.zeros(n, bool)
    last_window = n - 1 - h  # the last close whose move is known
    if last_window >= first:
        tested[np.arange(last_window, first - 1, -h)] = True  # aligned on the last known window
    hits = tested & (absmove > rng)
    return PriceRanges(closes.name, grid.dates, p, sigma, q, scaled, floor, rng, move, tested, hits, filled, garch)


@dataclasses.dataclass(frozen=True)
class VolRanges:
    """The vol scan range from DVOL changes and its expanding-window backtest."""

    name: str
    dates: np.ndarray
    level: np.ndarray  # DVOL, decimal
    change: np.ndarray  # D(t+h) - D(t), NaN for the last h days
    range: np.ndarray  # expanding quantile set at each close (NaN before enough history)
    tested: np.ndarray
    hits: np.ndarray
    vol_scan_range: float  # the quantile over the whole history
    filled_days: int


def vol_scan_ranges(dvol: history.Series, settings: CalibrationSettings = CalibrationSettings()) -> VolRanges:
    """The vol scan range (absolute h-day DVOL changes at the coverage quantile) and its backtest."""
    s = settings.check()
    grid, filled = daily_grid(dvol)
    d = grid.values
    n, h = len(d), int(s.horizon_days)
    if n <= h + 1:
        raise InputError(f"{dvol.name}: {n} days of DVOL are too few", source=dvol.source)
    change = np.full(n, np.nan)
    change[: n - h] = d[h:] - d[: n - h]
    absch = np.abs(change)
    rng = np.full(n, np.nan)
    first = s.vol_min_history_days + h - 1
    for t in range(first, n):
        rng[t] = _quantile(absch[: t - h + 1], s.coverage)
    tested = np.zeros(n, bool)
    last_window = n - 1 - h
    if last_window >= first:
        tested[np.arange(last_window, first - 1, -h)] = True
    hits = tested & (absch > rng)
    return VolRanges(dvol.name, grid.dates, d, change, rng, tested, hits,
                     _quantile(absch[: n - h], s.coverage), filled)


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
    """A calibration: the SPEC calibrate document and the rolling series behind it (for plots)."""

    doc: dict
    prices: dict[str, PriceRanges]
    vols: dict[str, VolRanges]
    settings: CalibrationSettings


def _series_info(s: history.Series, filled: int) -> dict:
    return {"source": os.path.basename(s.source) if s.source else "", "start": str(s.dates[0]),
            "end": str(s.dates[-1]), "days": int(len(s)), "filled_days": int(filled)}


def calibrate(data: HistoryInput, settings: CalibrationSettings = CalibrationSettings()) -> Calibration:
    """Calibrate every underlying of ``data`` and, with BTC and ETH, their inter-commodity spread."""
    s = settings.check()
    unds, prices, vols = {}, {}, {}
    for u in [x for x in UNDERLYINGS if x in data.closes]:
        pr = price_scan_ranges(data.closes[u], s)
        vr = vol_scan_ranges(data.dvols[u], s)
        prices[u], vols[u] = pr, vr
        t = pr.last
        entry = {
            "price_scan_range": float(pr.range[t]),
            "vol_scan_range": float(vr.vol_scan_range),
            "long_run_floor": float(pr.floor[t]),
            "scaled_range": float(pr.scaled[t]),
            "standardized_quantile": float(pr.quantile[t]),
            "daily_vol": float(pr.sigma[t]),
            "as_of": str(pr.dates[t]),
            "backtest": {**backtest_stats(pr.hits[pr.tested], s.coverage),
                         "start": str(pr.dates[pr.tested][0]), "end": str(pr.dates[pr.tested][-1])},
            "vol_backtest": ({**backtest_stats(vr.hits[vr.tested], s.coverage),
                              "start": str(vr.dates[vr.tested][0]), "end": str(vr.dates[vr.tested][-1])}
                             if vr.tested.any() else None),
            "history": {"closes": _series_info(data.closes[u], pr.filled_days),
                        "dvol": _series_info(data.dvols[u], vr.filled_days)},
        }
        if pr.garch is not None:
            entry["garch"] = {"omega": pr.garch.omega, "alpha": pr.garch.alpha, "beta": pr.garch.beta}
        unds[u] = entry
    spreads = [inter_spread(data.closes["BTC"], data.closes["ETH"], s)] if {"BTC", "ETH"} <= set(unds) else []
    method = {"rule": "range_t = max(q_a(|R| / (sigma sqrt(h))) * sigma_t * sqrt(h), floor_t)",
              "volatility_model": s.volatility_model, "burn_in_days": s.burn_in_days,
              "floor_coverage": s.floor_coverage, "floor_window_days": s.floor_window_days,
              "min_history_days": s.min_history_days, "vol_min_history_days": s.vol_min_history_days,
              "credit_cap": s.credit_cap}
    if s.volatility_model == "ewma":
        method["ewma_lambda"] = s.ewma_lambda
    doc = {"coverage": s.coverage, "horizon_days": int(s.horizon_days), "underlyings": unds,
           "inter_spreads": spreads, "method": method, "notices": list(data.notices)}
    return Calibration(doc, prices, vols, s)


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
           "VolRanges", "backtest_stats", "calibrate", "calibration_config", "chi2_1_sf", "christoffersen_lr",
           "daily_grid", "inter_spread", "kupiec_lr", "kupiec_region", "load_history", "price_scan_ranges",
           "underlying_from_filename", "vol_scan_ranges", "write_config"]
