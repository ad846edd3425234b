"""Daily price and implied-vol history: loaders, aligned log-returns, EWMA and GARCH(1,1) filters.

Dates are calendar days (``numpy.datetime64[D]``); crypto trades every day, so daily figures
annualise with 365. A Binance kline's date is its UTC open date: its close is that day's last
price. Deribit DVOL (30-day implied vol index) is read as a decimal (the files hold percent).

Everything here is numpy only (no scipy): it is used at run time by Monte Carlo and historical
simulation, and by calibration and backtests.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from importlib import resources

import numpy as np

from pmjax.core.errors import InputError
from pmjax.core.units import DAYS_PER_YEAR

#: bundled files (pmjax/data/history/), by underlying
CLOSE_FILES = {"BTC": "BTCUSDT_1d.csv", "ETH": "ETHUSDT_1d.csv"}
DVOL_FILES = {"BTC": "btc_dvol.csv", "ETH": "eth_dvol.csv"}


# ---------------------------------------------------------------- series


@dataclasses.dataclass(frozen=True)
class Series:
    """One daily series: strictly increasing ``dates`` (datetime64[D]) and finite ``values``."""

    name: str
    dates: np.ndarray
    values: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.dates)

    def between(self, start=None, end=None) -> "Series":
        """The days from ``start`` to ``end`` inclusive (either may be None: unbounded)."""
        keep = date_mask(self.dates, start, end)
        return dataclasses.replace(self, dates=self.dates[keep], values=self.values[keep])


@dataclasses.dataclass(frozen=True)
class Joint:
    """Several daily series on common dates: ``values[t, j]`` is series ``names[j]`` on ``dates[t]``."""

    dates: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.dates)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def between(self, start=None, end=None) -> "Joint":
        keep = date_mask(self.dates, start, end)
        return dataclasses.replace(self, dates=self.dates[keep], values=self.values[keep])

    def select(self, names: Sequence[str]) -> "Joint":
        return Joint(self.dates, tuple(names), self.values[:, [self.names.index(n) for n in names]])


def as_day(value) -> np.datetime64 | None:
    """A date, datetime (its UTC calendar day), ISO string or datetime64 as datetime64[D]; None stays None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        value = value.date()
    return np.datetime64(value, "D")


def date_mask(dates: np.ndarray, start, end) -> np.ndarray:
    """Boolean mask of ``dates`` within [start, end] (either may be None: unbounded)."""
    keep = np.ones(len(dates), bool)
    if start is not None:
        keep &= dates >= as_day(start)
    if end is not None:
        keep &= dates <= as_day(end)
    return keep


# ---------------------------------------------------------------- loading


def _read_rows(path: str, date_column: str, value_column: str, *, required: Sequence[str]) -> tuple[list, list]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except UnicodeDecodeError:
        raise InputError("not a text CSV file", source=path) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (have {', '.join(header) or 'none'})",
                         source=path, field="header")
    if not rows:
        raise InputError("no data rows", source=path)
    days, values = [], []
    for i, r in enumerate(rows):
        line = i + 2
        text = (r.get(date_column) or "").strip()
        try:
            day = np.datetime64(text[:10], "D")
        except ValueError:
            raise InputError(f"line {line}: bad date {text!r} (want YYYY-MM-DD)", source=path,
                             field=date_column) from None
        try:
            x = float(r.get(value_column) or "")
        except ValueError:
            raise InputError(f"line {line}: {value_column} {r.get(value_column)!r} is not a number", source=path,
                             field=value_column) from None
        if not math.isfinite(x) or x <= 0:
            raise InputError(f"line {line}: {value_column} must be a positive number, got {x!r}", source=path,
                             field=value_column)
        days.append(day)
        values.append(x)
    return days, values


def _series(name: str, days: list, values: list, path: str, date_column: str) -> Series:
    dates = np.array(days, dtype="datetime64[D]")
    vals = np.array(values, dtype=np.float64)
    order = np.argsort(dates, kind="stable")  # DVOL files are newest first
    dates, vals = dates[order], vals[order]
    dup = np.nonzero(dates[1:] == dates[:-1])[0]
    if len(dup):
        raise InputError(f"date {dates[dup[0]]} appears more than once", source=path, field=date_column)
    return Series(name, dates, vals, path)


def read_klines(path: str, *, name: str | None = None, column: str = "close") -> Series:
    """One column (default the close, USD) of a kline CSV ``timestamp,open,high,low,close,volume``."""
    days, values = _read_rows(path, "timestamp", column, required=("timestamp", column))
    return _series(name or column, days, values, path, "timestamp")


def read_dvol(path: str, *, name: str | None = None) -> Series:
    """Daily DVOL closes as decimals (0.45 = 45%) from ``date,symbol,open,high,low,close`` (percent)."""
    days, values = _read_rows(path, "date", "close", required=("date", "close"))
    s = _series(name or "dvol", days, values, path, "date")
    return dataclasses.replace(s, values=s.values / 100.0)


def _bundled(filename: str) -> str:
    return str(resources.files("pmjax") / "data" / "history" / filename)


def _known(u: str, table: Mapping[str, str]) -> str:
    if u not in table:
        raise InputError(f"no bundled history for {u} (have {', '.join(table)})", field="underlying")
    return table[u]


def bundled_close(underlying: str) -> Series:
    """The bundled Binance daily close of ``underlying`` (USDT, taken as USD), named after it."""
    return read_klines(_bundled(_known(underlying, CLOSE_FILES)), name=underlying)


def bundled_dvol(underlying: str) -> Series:
    """The bundled Deribit DVOL of ``underlying`` (decimal), named ``<underlying>_dvol``."""
    return read_dvol(_bundled(_known(underlying, DVOL_FILES)), name=f"{underlying}_dvol")


# ---------------------------------------------------------------- returns


def align(series: Sequence[Series]) -> Joint:
    """Levels of several series on the dates they all have (inner join)."""
    if not series:
        raise ValueError("align needs at least one series")
    common = series[0].dates
    for s in series[1:]:
        common = np.intersect1d(common, s.dates)
    cols = [s.values[np.searchsorted(s.dates, common)] for s in series]
    return Joint(common, tuple(s.name for s in series), np.stack(cols, axis=1) if cols else np.zeros((0, 0)))


def log_returns(levels: Joint, h: float = 1, *, overlapping: bool = True) -> Joint:
    """h-day log-returns log(X(d) / X(d - h days)), dated by their end day d, for each d where both
    days are present. ``overlapping=False`` keeps every h-th return counting back from the last day."""
    if int(h) != h or h < 1:
        raise InputError(f"the horizon must be a whole number of days >= 1, got {h!r}", field="horizon_days")
    h = int(h)
    start = levels.dates - np.timedelta64(h, "D")
    j = np.searchsorted(levels.dates, start)
    j_safe = np.minimum(j, len(levels.dates) - 1)
    ok = (j < len(levels.dates)) & (levels.dates[j_safe] == start)
    ends = np.nonzero(ok)[0]
    r = np.log(levels.values[ends] / levels.values[j[ends]])
    dates = levels.dates[ends]
    if not overlapping and len(dates):
        # keep end days that are a whole number of horizons before the last one
        keep = ((dates[-1] - dates).astype(np.int64) % h) == 0
        dates, r = dates[keep], r[keep]
    return Joint(dates, levels.names, r)


def joint_log_returns(series: Sequence[Series] | Mapping[str, Series], *, h: int = 1, start=None, end=None,
                      overlapping: bool = True) -> Joint:
    """Aligned h-day log-returns of several series, every price inside [start, end] (inclusive).

    Works for prices and for implied-vol indices alike (the log change of DVOL is its log-return).
    """
    if isinstance(series, Mapping):  # the mapping's keys name the columns
        items = [dataclasses.replace(s, name=k) for k, s in series.items()]
    else:
        items = list(series)
    levels = align([s.between(start, end) for s in items])
    return log_returns(levels, h, overlapping=overlapping)


def bundled_joint_returns(underlyings: Sequence[str] = ("BTC", "ETH"), *, h: int = 1, start=None, end=None,
                          dvol: bool = False, overlapping: bool = True) -> Joint:
    """Joint h-day log-returns of the bundled closes (named by underlying) and, with ``dvol``, of their
    DVOL indices (named ``<u>_dvol``), on the days they all have."""
    series = [bundled_close(u) for u in underlyings]
    if dvol:
        series += [bundled_dvol(u) for u in underlyings]
    return joint_log_returns(series, h=h, start=start, end=end, overlapping=overlapping)


# ---------------------------------------------------------------- volatility filters


def _initial_variance(returns: np.ndarray, warmup: int) -> np.ndarray | np.floating:
    head = returns[: max(1, min(warmup, len(returns)))]
    return np.mean(head * head, axis=0)


def ewma_variance(returns, lam: float = 0.94, *, initial=None, warmup: int = 30) -> np.ndarray:
    """RiskMetrics EWMA variance forecasts (daily units), per column.

    ``out[t]`` is the variance of ``returns[t]`` forecast from the returns before t:
    out[0] = initial (default: mean square of the first ``warmup`` returns),
    out[t+1] = lam out[t] + (1 - lam) returns[t]^2. ``out`` has one more row than ``returns``:
    the last is the forecast for the day after the data.
    """
    r = np.asarray(returns, dtype=np.float64)
    if not 0.0 < lam < 1.0:
        raise InputError(f"the EWMA lambda must be in (0, 1), got {lam!r}", field="ewma_lambda")
    if len(r) == 0:
        raise InputError("no returns to filter", field="returns")
    out = np.empty((len(r) + 1,) + r.shape[1:])
    out[0] = _initial_variance(r, warmup) if initial is None else initial
    for t in range(len(r)):
        out[t + 1] = lam * out[t] + (1.0 - lam) * r[t] * r[t]
    return out


@dataclasses.dataclass(frozen=True)
class Garch:
    """GARCH(1,1) on daily returns: s2[t+1] = omega + alpha r[t]^2 + beta s2[t] (daily variance units)."""

    omega: float
    alpha: float
    beta: float
    initial: float  # s2[0]
    loglik: float  # Gaussian log-likelihood at the fit, constants included
    n: int  # returns fitted

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        return self.omega / (1.0 - self.persistence) if self.persistence < 1.0 else math.inf

    def variance(self, returns, *, initial=None) -> np.ndarray:
        """Forecasts as in ``ewma_variance``: one more row than ``returns``."""
        return garch_variance(returns, self.omega, self.alpha, self.beta,
                              self.initial if initial is None else initial)


def garch_variance(returns, omega, alpha, beta, initial) -> np.ndarray:
    """GARCH(1,1) variance forecasts; parameters may be arrays (a batch, broadcast against columns)."""
    r = np.asarray(returns, dtype=np.float64)
    omega, alpha, beta, initial = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (omega, alpha, beta,
                                                                                              initial)))
    out = np.empty((len(r) + 1,) + np.broadcast_shapes(omega.shape, r.shape[1:]))
    out[0] = initial
    for t in range(len(r)):
        out[t + 1] = omega + alpha * r[t] * r[t] + beta * out[t]
    return out


def garch_loglik(returns, omega, alpha, beta, initial):
    """Gaussian log-likelihood sum_t -0.5 (log 2 pi + log s2[t] + r[t]^2 / s2[t]); batched like garch_variance."""
    r = np.asarray(returns, dtype=np.float64)
    s2 = garch_variance(r, omega, alpha, beta, initial)[:-1]
    r2 = (r * r).reshape((len(r),) + (1,) * (s2.ndim - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = -0.5 * np.sum(np.log(2 * np.pi) + np.log(s2) + r2 / s2, axis=0)
    return np.where(np.isfinite(ll), ll, -np.inf)


def nelder_mead(f: Callable[[np.ndarray], float], x0, *, step: float = 0.5, xtol: float = 1e-7,
                ftol: float = 1e-10, max_iter: int = 2000) -> tuple[np.ndarray, float]:
    """Minimise ``f`` from ``x0`` by the Nelder-Mead simplex (standard coefficients 1, 2, 0.5, 0.5).

    Stops when the simplex is smaller than ``xtol`` in every coordinate and its values differ by less
    than ``ftol`` (absolute), or after ``max_iter`` iterations. Returns (x, f(x)).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    d = len(x0)
    simplex = np.vstack([x0] + [x0 + step * np.eye(d)[i] for i in range(d)])
    values = np.array([f(x) for x in simplex])
    for _ in range(max_iter):
        order = np.argsort(values, kind="stable")
        simplex, values = simplex[order], values[order]
        if np.max(np.abs(simplex[1:] - simplex[0])) < xtol and abs(values[-1] - values[0]) < ftol:
            break
        centroid = simplex[:-1].mean(axis=0)
        worst = simplex[-1]
        xr = centroid + (centroid - worst)
        fr = f(xr)
        if fr < values[0]:
            xe = centroid + 2.0 * (centroid - worst)
            fe = f(xe)
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            outside = fr < values[-1]
            xc = centroid + 0.5 * ((xr if outside else worst) - centroid)
            fc = f(xc)
            if fc < (fr if outside else values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:  # shrink towards the best point
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                values[1:] = [f(x) for x in simplex[1:]]
    best = int(np.argmin(values))
    return simplex[best], float(values[best])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def fit_garch(returns, *, warmup: int = 30) -> Garch:
    """GARCH(1,1) by Gaussian maximum likelihood (returns taken as zero-mean; daily units).

    s2[0] is the mean square of the first ``warmup`` returns. Parameters are searched as
    persistence p = alpha + beta = sigmoid(x0) in (0, 1), alpha share alpha/p = sigmoid(x1) and
    omega = v (1 - p) exp(x2) with v the sample mean square (x2 = 0 is variance targeting): a coarse
    grid over (p, alpha/p) at x2 = 0, then Nelder-Mead from the best grid point.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(r) < 50:
        raise InputError(f"GARCH needs a single series of at least 50 returns, got shape {r.shape}", field="returns")
    if not np.all(np.isfinite(r)):
        raise InputError("returns must be finite", field="returns")
    v = float(np.mean(r * r))
    if v <= 0:
        raise InputError("returns are all zero: no volatility to fit", field="returns")
    s0 = float(_initial_variance(r, warmup))

    def params(x):
        p, share = _sigmoid(x[0]), _sigmoid(x[1])
        return v * (1.0 - p) * np.exp(x[2]), p * share, p * (1.0 - share)

    # coarse grid, evaluated as one batch
    ps = np.array([0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999])
    shares = np.array([0.01, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35, 0.6])
    P, Sh = (a.ravel() for a in np.meshgrid(ps, shares, indexing="ij"))
    ll = garch_loglik(r, v * (1 - P), P * Sh, P * (1 - Sh), s0)
    i = int(np.argmax(ll))
    x0 = np.array([math.log(P[i] / (1 - P[i])), math.log(Sh[i] / (1 - Sh[i])), 0.0])

    r2 = (r * r).tolist()
    log2pi = math.log(2 * math.pi)

    def negll(x):  # garch_loglik for one parameter set, in plain floats (the optimiser's hot loop)
        if np.any(np.abs(x) > 30):  # out of any sensible range: sigmoid saturates
            return math.inf
        omega, alpha, beta = (float(a) for a in params(x))
        s2, total = s0, 0.0
        for x2 in r2:
            if s2 <= 0.0:
                return math.inf
            total += math.log(s2) + x2 / s2
            s2 = omega + alpha * x2 + beta * s2
        return 0.5 * (total + len(r2) * log2pi)

    x, f = nelder_mead(negll, x0, step=0.3)
    x, f = nelder_mead(negll, x, step=0.05)  # restart: Nelder-Mead can stall on a degenerate simplex
    omega, alpha, beta = (float(a) for a in params(x))
    return Garch(omega, alpha, beta, s0, -f, len(r))


# ---------------------------------------------------------------- standardized residuals


@dataclasses.dataclass(frozen=True)
class Residuals:
    """Returns divided by their filtered vol: ``z[t, j] = returns[t, j] / vol[t, j]`` (vol forecast the day before).

    ``next_vol`` is the filter's daily vol forecast for the day after the data; ``garch`` the fitted
    models (volatility_model ``garch``), else empty.
    """

    dates: np.ndarray
    names: tuple[str, ...]
    z: np.ndarray
    vol: np.ndarray
    next_vol: np.ndarray
    model: str
    garch: tuple[Garch, ...] = ()

    def annual_next_vol(self) -> np.ndarray:
        return self.next_vol * math.sqrt(DAYS_PER_YEAR)


VOLATILITY_MODELS = ("ewma", "garch")


def standardized_residuals(returns: Joint, model: str = "ewma", *, ewma_lambda: float = 0.94,
                           burn_in: int = 30) -> Residuals:
    """Filter each column of daily ``returns`` with EWMA or GARCH(1,1) and standardise by the forecast vol.

    The first ``burn_in`` days (while the filter forgets its start) are dropped from ``z``.
    """
    if model not in VOLATILITY_MODELS:
        raise InputError(f"volatility_model must be one of {', '.join(VOLATILITY_MODELS)}, got {model!r}",
                         field="volatility_model")
    r = np.asarray(returns.values, dtype=np.float64)
    if len(r) <= burn_in + 1:
        raise InputError(f"{len(r)} returns are too few to filter (need more than {burn_in + 1})", field="returns")
    if model == "ewma":
        s2 = ewma_variance(r, ewma_lambda, warmup=burn_in)
        fits: tuple[Garch, ...] = ()
    else:
        fits = tuple(fit_garch(r[:, j], warmup=burn_in) for j in range(r.shape[1]))
        s2 = np.stack([g.variance(r[:, j]) for j, g in enumerate(fits)], axis=1)
    vol = np.sqrt(s2)
    z = r / vol[:-1]
    return Residuals(returns.dates[burn_in:], returns.names, z[burn_in:], vol[:-1][burn_in:], vol[-1], model, fits)
