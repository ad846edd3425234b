"""Rolling scan ranges (price and vol) of the daily rule, anti-procyclicality, and backtests as applied (used for
the through-the-cycle ranges that ship too, ``pmjax.apps.calibrate_ttc``).

One rule for both ranges (docs/methodology.md section 10), on a calendar-day grid of levels X_t (closes or
DVOL), set at the close of day t for the h-day move that starts L = ``lag_days`` days later:

    range_t = APC(max(q_t * sigma_t * sqrt(h), floor_t))

- move M_i: P(i+h)/P(i) - 1 for prices (what the SPAN scan applies), D(i+h) - D(i) for DVOL (vol points);
- sigma_i: the one-day forecast at close i from the one-day innovations before it (log-returns of prices,
  changes of DVOL): EWMA, or for prices GARCH(1,1) refitted every ``garch_refit_days`` on the returns up to
  the refit day (expanding; after a ``--split`` the last fit before it stays);
- z_i = |M_i| / (sigma_{i-L} sqrt(h)): each move standardized by the forecast that was L days old when
  it started, i.e. as the range is used (lag-aware);
- q_t = the a-quantile of the z_i closed by t (i + h <= t), with the model in force at t;
- floor_t = the floor-coverage quantile of |M_i| over the last ``floor_window_days`` windows closed by t
  (EMIR RTS 153/2013 Art. 28(1)(c): a ten-year lookback);
- APC: the tools in ``price_apc`` / ``vol_apc``: ``floor`` (above), ``stress`` (Art. 28(1)(b): 25% weight on
  the stressed range, the largest calculated range of the lookback) and ``buffer`` (Art. 28(1)(a): a 25%
  buffer, used up when the calculated range rises and rebuilt by at most ``apc_buffer_rebuild`` a day).

Nothing in range_t depends on data after the close of day t.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pmjax.apps import calibrate_stats as stats
from pmjax.core.errors import InputError
from pmjax.io import history

#: anti-procyclicality tools (EMIR RTS 153/2013 Article 28)
from pmjax.apps.names import APC_TOOLS  # noqa: E402,F401  (one definition: the parser shows it)


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """Parameters of the rule (module docstring; docs/methodology.md section 10)."""

    coverage: float = 0.99
    horizon_days: int = 1
    lag_days: int = 1
    volatility_model: str = "ewma"  # ewma | garch
    ewma_lambda: float = 0.94
    garch_refit_days: int = 91
    burn_in_days: int = 30
    floor_coverage: float = 0.95
    floor_window_days: int = 3650
    min_history_days: int = 365
    vol_min_history_days: int = 250
    vol_ewma_lambda: float = 0.94
    vol_floor_coverage: float = 0.95
    price_apc: tuple[str, ...] = ("floor",)
    vol_apc: tuple[str, ...] = ("floor",)
    apc_buffer: float = 0.25
    apc_buffer_rebuild: float = 0.01
    apc_stress_weight: float = 0.25
    credit_cap: float = 0.75
    ttc_reset: str = "quarterly"  # monthly | quarterly | annual (calibrate_ttc)
    ttc_mean_days: int = 365
    ttc_stress_weight: float = 0.25  # calibrate_ttc: weight on the stressed window's moves (0: none)
    ttc_stress_window_days: int = 60  # calibrate_ttc: length of that window, in closed moves

    def check(self) -> "CalibrationSettings":
        def bad(field, text):
            raise InputError(f"{field} {text}", field=field)

        if not 0.5 <= self.coverage < 1.0:
            raise InputError(f"the coverage must be in [0.5, 1), got {self.coverage!r}", field="coverage")
        for f in ("floor_coverage", "vol_floor_coverage", "ewma_lambda", "vol_ewma_lambda"):
            if not 0.0 < getattr(self, f) < 1.0:
                bad(f, f"must be in (0, 1), got {getattr(self, f)!r}")
        if int(self.horizon_days) != self.horizon_days or not 1 <= self.horizon_days <= 30:
            raise InputError(f"the horizon must be a whole number of days from 1 to 30, got {self.horizon_days!r}",
                             field="horizon_days")
        if int(self.lag_days) != self.lag_days or not 0 <= self.lag_days <= 30:
            bad("lag_days", f"must be a whole number of days from 0 to 30, got {self.lag_days!r}")
        if self.volatility_model not in history.VOLATILITY_MODELS:
            raise InputError(f"volatility_model must be one of {', '.join(history.VOLATILITY_MODELS)}, got "
                             f"{self.volatility_model!r}", field="volatility_model")
        for f in ("price_apc", "vol_apc"):
            unknown = [x for x in getattr(self, f) if x not in APC_TOOLS]
            if unknown:
                bad(f, f"names unknown tools {unknown} (known: {', '.join(APC_TOOLS)})")
        if not 0.0 <= self.apc_buffer <= 1.0 or not 0.0 <= self.apc_stress_weight <= 1.0:
            bad("apc_buffer", "and apc_stress_weight must be in [0, 1]")
        if not 0.0 <= self.apc_buffer_rebuild:
            bad("apc_buffer_rebuild", "must be at least 0")
        if int(self.garch_refit_days) != self.garch_refit_days or self.garch_refit_days < 1:
            bad("garch_refit_days", f"must be a whole number of days >= 1, got {self.garch_refit_days!r}")
        if self.ttc_reset not in ("monthly", "quarterly", "annual"):
            bad("ttc_reset", f"must be monthly, quarterly or annual, got {self.ttc_reset!r}")
        if int(self.ttc_mean_days) != self.ttc_mean_days or self.ttc_mean_days < 1:
            bad("ttc_mean_days", f"must be a whole number of days >= 1, got {self.ttc_mean_days!r}")
        if not 0.0 <= self.ttc_stress_weight < 1.0:
            bad("ttc_stress_weight", f"must be in [0, 1), got {self.ttc_stress_weight!r}")
        if int(self.ttc_stress_window_days) != self.ttc_stress_window_days or self.ttc_stress_window_days < 1:
            bad("ttc_stress_window_days", f"must be a whole number of days >= 1, got {self.ttc_stress_window_days!r}")
        if not 0.0 <= self.credit_cap <= 1.0:
            raise InputError(f"credit_cap must be in [0, 1], got {self.credit_cap!r}", field="credit_cap")
        return self


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
class Ranges:
    """Rolling scan ranges of one series, one row per day of the grid.

    ``range[t]`` is set at the close of ``dates[t]`` (NaN before enough history) for the move that starts
    ``lag`` days later; ``move[t]`` is the h-day move from close t (NaN for the last h closes);
    ``calculated`` is the range before the buffer and stress tools; ``sigma`` the forecast in force at t.
    """

    name: str
    kind: str  # price | vol
    dates: np.ndarray
    level: np.ndarray
    sigma: np.ndarray
    quantile: np.ndarray
    scaled: np.ndarray
    floor: np.ndarray
    calculated: np.ndarray
    range: np.ndarray
    move: np.ndarray
    horizon: int
    lag: int
    filled_days: int
    garch: tuple = ()  # (first day in force, history.Garch) per refit
    first: int = 0
    resets: tuple = ()  # the closes a through-the-cycle range is re-set at (calibrate_ttc; () for daily ranges)
    stressed: tuple = ()  # per re-set, the first and last move of its stressed window (calibrate_ttc)

    @property
    def last(self) -> int:
        return len(self.dates) - 1

    @property
    def close(self) -> np.ndarray:
        return self.level

    def index(self, day) -> int:
        """The last grid day on or before ``day`` (-1 when before the first)."""
        return int(np.searchsorted(self.dates, np.datetime64(day, "D"), side="right")) - 1

    def garch_at(self, t: int):
        """The GARCH fit in force at close t (None for EWMA)."""
        fits = [g for start, g in self.garch if start <= t]
        return fits[-1] if fits else (self.garch[0][1] if self.garch else None)


def _sigma_segments(innov, s: CalibrationSettings, lam: float, garch: bool, first: int, cutoff: int):
    """[(start, sigma)]: the forecasts sigma[0..n-1] of each model in force from ``start``; GARCH refitted
    every garch_refit_days from ``first`` up to ``cutoff`` on the innovations up to the refit close."""
    if not garch:
        return [(0, np.sqrt(history.ewma_variance(innov, lam, warmup=s.burn_in_days)), None)]
    out = []
    for start in range(first, max(cutoff, first) + 1, int(s.garch_refit_days)):
        fit = history.fit_garch(innov[:start], warmup=s.burn_in_days)
        out.append((start, np.sqrt(fit.variance(innov)), fit))
    return out


def _apc(calc: np.ndarray, tools, s: CalibrationSettings) -> np.ndarray:
    """The stress and buffer tools on the calculated range (the floor is already in it)."""
    out = calc.copy()
    ok = np.isfinite(calc)
    if "stress" in tools:
        w = s.apc_stress_weight
        for t in np.nonzero(ok)[0]:
            window = calc[max(0, t - s.floor_window_days): t + 1]
            out[t] = (1.0 - w) * calc[t] + w * np.nanmax(window)
    if "buffer" in tools:
        posted, prev = out.copy(), math.nan
        for t in np.nonzero(ok)[0]:
            m = out[t]
            posted[t] = (1.0 + s.apc_buffer) * m if math.isnan(prev) else \
                max(m, min((1.0 + s.apc_buffer) * m, (1.0 + s.apc_buffer_rebuild) * prev))
            prev = posted[t]
        out = posted
    return out


def rolling_ranges(series: history.Series, settings: CalibrationSettings = CalibrationSettings(), *,
                   kind: str = "price", cutoff=None) -> Ranges:
    """The range at every close of ``series`` (module docstring). ``kind`` price or vol; ``cutoff``: the last
    day a model may be fitted on (a split; default the last day)."""
    s = settings.check()
    grid, filled = daily_grid(series)
    x = grid.values
    n, h, lag, b = len(x), int(s.horizon_days), int(s.lag_days), int(s.burn_in_days)
    vol = kind == "vol"
    min_hist = s.vol_min_history_days if vol else s.min_history_days
    first = b + lag + min_hist + h - 1  # the first close with min_hist standardized moves closed
    if n < first + 2:
        raise InputError(f"{series.name}: {n} days are too few to calibrate (need {first + 2}: {b} burn-in + "
                         f"{lag} lag + {min_hist} history + the horizon)", source=series.source)
    innov = np.diff(x) if vol else np.diff(np.log(x))
    move = np.full(n, np.nan)
    move[: n - h] = (x[h:] - x[: n - h]) if vol else (x[h:] / x[: n - h] - 1.0)
    absmove = np.abs(move)
    cut = n - 1 if cutoff is None else int(np.searchsorted(grid.dates, np.datetime64(cutoff, "D"), side="right")) - 1
    segs = _sigma_segments(innov, s, s.vol_ewma_lambda if vol else s.ewma_lambda,
                           (not vol) and s.volatility_model == "garch", first, cut)
    coverage_f = s.vol_floor_coverage if vol else s.floor_coverage
    tools = s.vol_apc if vol else s.price_apc
    sigma, q, floor = (np.full(n, np.nan) for _ in range(3))
    for k, (start, sig, _) in enumerate(segs):
        stop = segs[k + 1][0] if k + 1 < len(segs) else n
        z = np.full(n, np.nan)
        z[b + lag:] = absmove[b + lag:] / (sig[b: n - lag] * math.sqrt(h))
        for t in range(max(first, start), stop):
            closed = t - h + 1  # windows i < closed have i + h <= t
            q[t] = _quantile(z[b + lag: closed], s.coverage)
            floor[t] = _quantile(absmove[max(0, closed - s.floor_window_days): closed], coverage_f)
        sigma[start:stop] = sig[start:stop]
    scaled = q * sigma * math.sqrt(h)
    calc = np.fmax(scaled, floor) if "floor" in tools else scaled
    calc[:first] = np.nan
    rng = _apc(calc, tools, s)
    fits = tuple((start, g) for start, _, g in segs if g is not None)
    return Ranges(series.name, kind, grid.dates, x, sigma, q, scaled, floor, calc, rng, move, h, lag, filled,
                  fits, first)


def price_scan_ranges(closes: history.Series, settings: CalibrationSettings = CalibrationSettings(), *,
                      cutoff=None) -> Ranges:
    """The rolling price scan range at every close (no look-ahead)."""
    return rolling_ranges(closes, settings, kind="price", cutoff=cutoff)


def vol_scan_ranges(dvol: history.Series, settings: CalibrationSettings = CalibrationSettings(), *,
                    cutoff=None) -> Ranges:
    """The rolling vol scan range (EWMA-scaled absolute DVOL changes, floored, APC) at every close."""
    return rolling_ranges(dvol, settings, kind="vol", cutoff=cutoff)


# ---------------------------------------------------------------- backtests as applied


def applied_range(r: Ranges, frozen_at: int | None = None) -> np.ndarray:
    """The range in force for the move starting at each close: set ``lag`` closes before it; with
    ``frozen_at``, never later than that close (a config published then and not updated)."""
    n = len(r.range)
    src = np.arange(n) - r.lag
    if frozen_at is not None:
        src = np.minimum(src, frozen_at)
    out = np.full(n, np.nan)
    ok = src >= 0
    out[ok] = r.range[src[ok]]
    return out


def backtest_days(r: Ranges, start: int, stop: int, *, forward: bool = False) -> np.ndarray:
    """Test closes t in [start, stop] whose move is known by close ``stop`` (t + h <= stop) and whose applied
    range exists, every h days (non-overlapping windows), aligned on the last (in sample) or the first
    (``forward``, out of sample) such close."""
    applied = applied_range(r)
    cand = [t for t in range(max(start, 0), stop - r.horizon + 1) if np.isfinite(applied[t])]
    if not cand:
        return np.zeros(0, np.int64)
    anchor = cand[0] if forward else cand[-1]
    return np.array([t for t in cand if (t - anchor) % r.horizon == 0], np.int64)


def backtest(r: Ranges, days: np.ndarray, coverage: float, *, frozen_at: int | None = None,
             reference: np.ndarray | None = None) -> dict | None:
    """``calibrate_stats.coverage_stats`` of the range as applied on ``days``, with their first and last day,
    the lag and the exceedance days (the close each exceeding move starts at); ``reference`` (exceedance sizes
    |move| / range of another period) adds ``excess_size_p``."""
    if len(days) == 0:
        return None
    applied = applied_range(r, frozen_at)[days]
    move = r.move[days]
    hits = np.abs(move) > applied
    out = {**stats.coverage_stats(hits, coverage, move=move, rng=applied), "lag_days": int(r.lag),
           "start": str(r.dates[days[0]]), "end": str(r.dates[days[-1]]),
           "exceedance_dates": [str(d) for d in r.dates[days][hits]]}
    if frozen_at is not None:
        out["frozen_range"] = float(r.range[frozen_at])
    if reference is not None:
        out["excess_size_p"] = stats.excess_size_p(np.abs(move[hits]) / applied[hits], reference)
    return out


def exceedance_sizes(r: Ranges, days: np.ndarray) -> np.ndarray:
    """|move| / range on the exceedance days among ``days`` (the range as applied)."""
    applied = applied_range(r)[days]
    move = np.abs(r.move[days])
    return move[move > applied] / applied[move > applied]


def procyclicality(r: Ranges, values: np.ndarray | None = None) -> dict | None:
    """Peak-to-trough ratio and the largest 10-day and 30-day increase (ratio and absolute) of a daily range."""
    v = r.range if values is None else values
    idx = np.nonzero(np.isfinite(v))[0]
    if len(idx) < 31:
        return None
    x = v[idx[0]: idx[-1] + 1]
    out = {"start": str(r.dates[idx[0]]), "end": str(r.dates[idx[-1]]), "peak": float(np.max(x)),
           "peak_date": str(r.dates[idx[0] + int(np.argmax(x))]), "trough": float(np.min(x)),
           "trough_date": str(r.dates[idx[0] + int(np.argmin(x))]), "peak_to_trough": float(np.max(x) / np.min(x))}
    for k in (10, 30):
        ratio, rise = x[k:] / x[:-k], x[k:] - x[:-k]
        out[f"max_increase_{k}d"] = float(np.max(ratio))
        out[f"max_increase_{k}d_date"] = str(r.dates[idx[0] + k + int(np.argmax(ratio))])
        out[f"max_rise_{k}d"] = float(np.max(rise))
    return out


__all__ = ["APC_TOOLS", "CalibrationSettings", "Ranges", "applied_range", "backtest", "daily_grid",
           "exceedance_sizes", "price_scan_ranges", "procyclicality", "rolling_ranges", "backtest_days",
           "vol_scan_ranges"]
