"""Through-the-cycle (TTC) scan ranges: the ranges ``pmjax calibrate --out`` writes (docs/methodology.md section 10.2a).

A CCP's margin parameters are stable through the cycle (EMIR RTS 153/2013 Art. 28): re-set on a fixed
schedule, not every close, from a long stressed lookback, so that they do not fall in calm periods nor jump
in stress. The rule, for one series (closes or DVOL) and its daily ranges ``r`` (``calibrate_ranges``):

- re-set days: the first close with ``min_history_days`` (``vol_min_history_days``) closed h-day moves,
  then the first close of every period of ``ttc_reset`` (monthly, quarterly, annual) after it;
- at a re-set close T, from data up to T only:
    U_T = the ``coverage`` quantile of the stress-weighted distribution of |M_i| over the windows closed by T
          (i + h <= T) in the last ``floor_window_days`` (ten years: Art. 28(1)(c), the lookback tool): weight
          1 - w spread evenly over the lookback's moves and w = ``ttc_stress_weight`` over the moves of its
          stressed window, the ``ttc_stress_window_days`` consecutive moves whose own ``coverage`` quantile is
          the largest (Art. 28(1)(b): at least 25% weight on stressed observations); inverted-CDF quantile;
    A_T = the mean of the daily rule's range over the last ``ttc_mean_days`` closes up to T (the conditional
          risk of the last year, so that a long stressed year lifts the TTC range);
    B_T = max(U_T, A_T) (the calculated TTC range);
    P_T = (1 + b) B_T at the first re-set, then max(B_T, min((1 + b) B_T, (1 + b) P_prev)) with b =
          ``apc_buffer`` (25%: Art. 28(1)(a), a buffer that is used up when the calculated range rises by more
          than b from one re-set to the next, and rebuilt at the next re-set);
- P_T is the range set at every close from T to the next re-set, applied ``lag_days`` later (as the daily
  ranges are), so the backtests of ``calibrate_ranges`` apply to it unchanged.

The returned ``Ranges`` holds P in ``range``, B in ``calculated``, U in ``scaled``, A in ``floor`` and the
re-set closes in ``resets``, each re-set's stressed window (first and last move) in ``stressed`` (``quantile``,
``sigma``: the daily rule's, for reference).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pmjax.apps.calibrate_ranges import CalibrationSettings, Ranges

#: re-set schedules: months per period
TTC_RESETS = {"monthly": 1, "quarterly": 3, "annual": 12}


def reset_days(dates: np.ndarray, first: int, months: int) -> np.ndarray:
    """Grid indices of the re-set closes: ``first``, then the first close of every later period of ``months``
    calendar months (periods aligned on January 1st)."""
    period = dates.astype("datetime64[M]").astype(np.int64) // months
    new = np.nonzero(period[1:] != period[:-1])[0] + 1
    return np.concatenate([[first], new[new > first]]).astype(np.int64)


def stressed_window(absmove: np.ndarray, coverage: float, window: int) -> int:
    """Start of the ``window`` consecutive moves of ``absmove`` whose ``coverage`` quantile is the largest (the
    earliest on ties; 0 when ``absmove`` is no longer than ``window``)."""
    if len(absmove) <= window:
        return 0
    q = np.quantile(np.lib.stride_tricks.sliding_window_view(absmove, window), coverage, axis=1)
    return int(np.argmax(q))


def stress_weighted_quantile(absmove: np.ndarray, coverage: float, weight: float, window: int) -> tuple[float, int]:
    """The ``coverage`` quantile (inverted CDF: the smallest x with F(x) >= coverage) of the distribution that puts
    1 - ``weight`` evenly on ``absmove`` and ``weight`` evenly on its stressed window; second value: that window's
    start. With ``weight`` 0, the plain inverted-CDF quantile."""
    start = stressed_window(absmove, coverage, window)
    stressed = absmove[start: start + window]
    values = np.concatenate([absmove, stressed])
    weights = np.concatenate([np.full(len(absmove), (1.0 - weight) / len(absmove)),
                              np.full(len(stressed), weight / len(stressed))])
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    # a relative tolerance, so that a CDF that reaches the coverage exactly is not missed by rounding
    k = int(np.searchsorted(cdf, coverage * (1.0 - 1e-12), side="left"))
    return float(values[order][min(k, len(values) - 1)]), start


def ttc_first(r: Ranges, settings: CalibrationSettings) -> int:
    """The first close with the minimum history of closed h-day moves."""
    min_hist = settings.vol_min_history_days if r.kind == "vol" else settings.min_history_days
    return int(min_hist + r.horizon - 1)


def ttc_ranges(r: Ranges, settings: CalibrationSettings = CalibrationSettings()) -> Ranges:
    """The TTC range set at every close of ``r``'s grid (module docstring); NaN before the first re-set."""
    s = settings.check()
    n, h = len(r.dates), r.horizon
    first = ttc_first(r, s)
    absmove = np.abs(r.move)
    posted, base, lookback, mean_daily = (np.full(n, np.nan) for _ in range(4))
    stressed = []
    if first >= n:
        return dataclasses.replace(r, range=posted, calculated=base, scaled=lookback, floor=mean_daily, first=n)
    resets = reset_days(r.dates, first, TTC_RESETS[s.ttc_reset])
    prev, b, w = math.nan, s.apc_buffer, int(s.ttc_stress_window_days)
    for k, t in enumerate(resets):
        closed = t - h + 1  # windows i < closed have i + h <= t
        lo = max(0, closed - s.floor_window_days)
        u, start = stress_weighted_quantile(absmove[lo: closed], s.coverage, s.ttc_stress_weight, w)
        stressed.append((lo + start, min(lo + start + w, closed) - 1))
        daily = r.range[max(0, t - s.ttc_mean_days + 1): t + 1]
        a = float(np.mean(daily[np.isfinite(daily)])) if np.isfinite(daily).any() else math.nan
        m = u if math.isnan(a) else max(u, a)
        p = (1.0 + b) * m if math.isnan(prev) else max(m, min((1.0 + b) * m, (1.0 + b) * prev))
        stop = int(resets[k + 1]) if k + 1 < len(resets) else n
        posted[t:stop], base[t:stop], lookback[t:stop], mean_daily[t:stop] = p, m, u, a
        prev = p
    return dataclasses.replace(r, range=posted, calculated=base, scaled=lookback, floor=mean_daily,
                               first=int(resets[0]), resets=tuple(int(t) for t in resets), stressed=tuple(stressed))


def ttc_resets(r: Ranges) -> list[dict]:
    """The re-sets of a TTC ``Ranges`` up to its last close: date, calculated and posted range."""
    return [{"date": str(r.dates[t]), "lookback_quantile": float(r.scaled[t]), "stressed_window": _window(r, k),
             "daily_mean": None if math.isnan(r.floor[t]) else float(r.floor[t]),
             "calculated": float(r.calculated[t]), "range": float(r.range[t])} for k, t in enumerate(r.resets)]


def _window(r: Ranges, k: int) -> list[str]:
    """The closes the first and last move of re-set k's stressed window start at."""
    a, b = r.stressed[k]
    return [str(r.dates[a]), str(r.dates[b])]


def ttc_entry(r: Ranges, t: int, settings: CalibrationSettings) -> dict:
    """What the config's TTC range at close t is made of: the re-set it comes from and its parts."""
    k = max(j for j, x in enumerate(r.resets) if x <= t)
    return {"range": float(r.range[t]), "reset": str(r.dates[r.resets[k]]), "lookback_quantile": float(r.scaled[t]),
            "stress_weight": settings.ttc_stress_weight, "stressed_window": _window(r, k),
            "daily_mean": None if math.isnan(r.floor[t]) else float(r.floor[t]), "calculated": float(r.calculated[t]),
            "buffer": float(r.range[t] / r.calculated[t] - 1.0), "schedule": settings.ttc_reset,
            "next_reset_after": _next_reset(r.dates[t], settings.ttc_reset)}


def _next_reset(day, schedule: str) -> str:
    months = TTC_RESETS[schedule]
    m = int(np.datetime64(day, "M").astype(np.int64))
    return str((np.datetime64(0, "M") + (m // months + 1) * months).astype("datetime64[D]"))


__all__ = ["TTC_RESETS", "reset_days", "stress_weighted_quantile", "stressed_window", "ttc_entry", "ttc_first",
           "ttc_ranges", "ttc_resets"]
