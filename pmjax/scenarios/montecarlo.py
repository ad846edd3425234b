"""Monte Carlo market scenarios for every underlying, revalued in full (SPEC section 4).

Each path draws a return factor ``zr[u]`` and an implied-vol factor ``zv[u]`` per underlying u of
``UNDERLYINGS`` (all of them, always, so adding a position never changes another underlying's draws),
with unit variance and correlation matrix C over (returns..., vols...):

- ``normal``: (zr, zv) = L e, e standard normal, L the Cholesky factor of C;
- ``student_t``: (zr, zv) = L e sqrt((nu - 2) / W), W ~ chi^2(nu) shared by all factors of the path
  (multivariate t scaled to unit variance);
- ``fhs`` (filtered historical simulation): zr = the standardized residuals of one historical day,
  drawn at random and the same day for every underlying (so the dependence is the real one),
  centred and scaled to unit sample variance; for h > 1 the mean of h independently drawn days
  times sqrt(h). The vol factor is Gaussian given zr: zv = A zr + M e with A = C_vr C_rr^-1 and
  M M' = C_vv - A C_rv.

Over h days with annual vol s (default: the underlying's ATM implied vol at 30 days; for ``fhs`` with
``fhs_scale: filtered``, the EWMA/GARCH filter's forecast for the market's day, so the residuals are
rescaled to the vol they were filtered with) the log-return is r = s sqrt(h/365) zr - s^2 h / (2 365);
the log change of the 30-day ATM vol is x = w sqrt(h/365) zv - w^2 h / (2 365) with w the vol of vol
(annual, from DVOL history), so both exp(r) and exp(x) have mean 1 under the normal model. Scenario:
spot and every forward of u scale by exp(r); each of u's implied vols moves by the absolute shift
atm_vol_u (exp(x) - 1) (the smile shifts in parallel), floored at ``vol_floor``; time advances h/365
years.

C comes from daily history (Binance closes and Deribit DVOL, up to the day before the market's
as_of); its return block is replaced by the market's ``correlation`` when the market gives one, and
any config overrides apply; then it is made positive definite.

Determinism: path i's draws come from ``fold_in(key(seed), i)`` alone (with antithetic variates,
paths 2j and 2j+1 share ``fold_in(key, j)`` with opposite signs), so the losses are identical for any
chunk size and any number of devices.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import sys
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

try:
    from jax import shard_map
except ImportError:  # jax < 0.6
    from jax.experimental.shard_map import shard_map
from jaxtyping import Array, Float

from pmjax.io import history
from pmjax.core.book import Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import Shock, position_pnl, scenario_pnl
from pmjax.core.market import Market

MODELS = ("normal", "student_t", "fhs")
DAYS_PER_YEAR = 365.0
#: defaults of the ``var`` config section (configs/var.yaml documents each)
DEFAULTS = {
    "model": "student_t", "nu": 4.0, "confidence": 0.99, "paths": 100_000, "seed": 0, "chunk": "auto",
    "antithetic": False, "ewma_lambda": 0.94, "volatility_model": "ewma", "burn_in_days": 30,
    "vol_moves": True, "vol_floor": 0.01, "atm_days": 30, "history_start": None, "history_end": None,
    "vol": {}, "vol_of_vol": {}, "spot_vol_correlation": {}, "correlation": None, "historical": True,
    "progress": None, "fhs_scale": "implied",
}
#: fhs: what scales the standardized residuals (``var.fhs_scale``)
FHS_SCALES = ("implied", "filtered")


# ---------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class VarSettings:
    """The validated ``var`` config section plus the top-level ``horizon_days``."""

    model: str
    nu: float
    confidence: float
    paths: int
    seed: int
    chunk: int | None  # None: auto_chunk (from the memory available)
    antithetic: bool
    horizon_days: float
    ewma_lambda: float
    volatility_model: str
    burn_in_days: int
    vol_moves: bool
    vol_floor: float
    atm_days: float
    history_start: object
    history_end: object
    vol: dict
    vol_of_vol: dict
    spot_vol_correlation: dict
    correlation: float | None
    historical: bool
    progress: bool | None
    fhs_scale: str = "implied"


def _number(v, field, source, *, low=-math.inf, high=math.inf, integer=False, low_open=False, high_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"must be a number, got {v!r}", source=source, field=field)
    x = float(v)
    bad = (not math.isfinite(x) or x < low or x > high or (low_open and x == low) or (high_open and x == high)
           or (integer and x != int(x)))
    if bad:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise InputError(f"must be {'a whole number' if integer else 'a number'} in {lo}, {hi}, got {v!r}",
                         source=source, field=field)
    return int(x) if integer else x


def _per_underlying(v, field, source, **limits) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InputError(f"must be a mapping of underlying to number, got {v!r}", source=source, field=field)
    out = {}
    for u, x in v.items():
        if str(u).upper() not in UNDERLYINGS:
            raise InputError(f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=source,
                             field=f"{field}.{u}")
        if x is not None:
            out[str(u).upper()] = _number(x, f"{field}.{u}", source, **limits)
    return out


def var_settings(config: dict | None = None, **overrides) -> VarSettings:
    """Validate ``config['var']`` (merged over ``DEFAULTS``) and ``config['horizon_days']``; keyword
    ``overrides`` that are not None win (e.g. paths, seed, confidence from the command line).

    Raises ``InputError`` naming the config field.
    """
    config = config or {}
    source = config.get("_source", "config")
    section = config.get("var") or {}
    if not isinstance(section, dict):
        raise InputError("must be a mapping", source=source, field="var")
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})", source=source,
                         field="var")
    v = {**DEFAULTS, **section, **{k: x for k, x in overrides.items() if x is not None}}
    f = lambda name: f"var.{name}"  # noqa: E731
    model = v["model"]
    if model not in MODELS:
        raise InputError(f"must be one of {', '.join(MODELS)}, got {model!r}", source=source, field=f("model"))
    if v["fhs_scale"] not in FHS_SCALES:
        raise InputError(f"must be one of {', '.join(FHS_SCALES)}, got {v['fhs_scale']!r}", source=source,
                         field=f("fhs_scale"))
    vm = v["volatility_model"]
    if vm not in history.VOLATILITY_MODELS:
        raise InputError(f"must be one of {', '.join(history.VOLATILITY_MODELS)}, got {vm!r}", source=source,
                         field=f("volatility_model"))
    horizon = _number(config.get("horizon_days", 1), "horizon_days", source, low=0.0, low_open=True, high=3650)
    if model == "fhs" and horizon != int(horizon):
        raise InputError(f"filtered historical simulation needs a whole number of days, got {horizon!r}",
                         source=source, field="horizon_days")
    for name in ("antithetic", "vol_moves", "historical"):
        if not isinstance(v[name], bool):
            raise InputError(f"must be true or false, got {v[name]!r}", source=source, field=f(name))
    if v["progress"] is not None and not isinstance(v["progress"], bool):
        raise InputError(f"must be true, false or null, got {v['progress']!r}", source=source, field=f("progress"))
    rho = v["correlation"]
    if isinstance(rho, dict):  # {BTC: {ETH: rho}} as in a market file
        vals = [x for row in rho.values() for x in (row or {}).values()]
        rho = vals[0] if vals else None
    return VarSettings(
        model=model,
        nu=_number(v["nu"], f("nu"), source, low=2.0, low_open=True, high=1e6),
        confidence=_number(v["confidence"], f("confidence"), source, low=0.5, high=1.0, high_open=True),
        paths=_number(v["paths"], f("paths"), source, low=1, high=2**32 - 2, integer=True),
        seed=_number(v["seed"], f("seed"), source, low=0, high=2**63 - 1, integer=True),
        chunk=None if v["chunk"] in (None, "auto") else _number(v["chunk"], f("chunk"), source, low=1, high=2**28,
                                                                  integer=True),
        antithetic=v["antithetic"],
        horizon_days=horizon,
        ewma_lambda=_number(v["ewma_lambda"], f("ewma_lambda"), source, low=0.0, high=1.0, low_open=True,
                            high_open=True),
        volatility_model=vm,
        burn_in_days=_number(v["burn_in_days"], f("burn_in_days"), source, low=0, high=1000, integer=True),
        vol_moves=v["vol_moves"],
        vol_floor=_number(v["vol_floor"], f("vol_floor"), source, low=0.0, high=10.0),
        atm_days=_number(v["atm_days"], f("atm_days"), source, low=1.0, high=3650),
        history_start=_day(v["history_start"], f("history_start"), source),
        history_end=_day(v["history_end"], f("history_end"), source),
        vol=_per_underlying(v["vol"], f("vol"), source, low=0.0, high=20.0),
        vol_of_vol=_per_underlying(v["vol_of_vol"], f("vol_of_vol"), source, low=0.0, high=50.0),
        spot_vol_correlation=_per_underlying(v["spot_vol_correlation"], f("spot_vol_correlation"), source,
                                             low=-1.0, high=1.0),
        correlation=None if rho is None else _number(rho, f("correlation"), source, low=-1.0, high=1.0),
        historical=v["historical"],
        progress=v["progress"],
        fhs_scale=v["fhs_scale"],
    )


def _day(value, field, source):
    try:
        return history.as_day(value)
    except (ValueError, TypeError):
        raise InputError(f"must be a date YYYY-MM-DD, got {value!r}", source=source, field=field) from None


# ---------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The static (compile-time) part of a scenario model; the horizon and nu are arrays in
    ``ScenarioParams`` so that changing them does not recompile."""

    model: str
    antithetic: bool
    fhs_days: int = 1  # fhs: historical days summed per path (the horizon in whole days)


class ScenarioParams(eqx.Module):
    """The array part of a scenario model (one row per underlying of ``UNDERLYINGS``)."""

    vol: Float[Array, " u"]  # annual vol of log-returns; 0 for an underlying the market lacks
    atm_vol: Float[Array, " u"]  # today's ATM implied vol: the smile shift is atm_vol (exp(x) - 1)
    vol_of_vol: Float[Array, " u"]  # annual vol of the log ATM vol; 0 turns vol moves off
    chol: Float[Array, "f f"]  # Cholesky factor of the factor correlation, f = 2 u: (returns, vols)
    vol_given_return: Float[Array, "u u"]  # FHS: A in zv = A zr + M e
    vol_residual_chol: Float[Array, "u u"]  # FHS: M
    residuals: Float[Array, "t u"]  # FHS: standardized daily residuals (unit variance); zeros otherwise
    vol_floor: Float[Array, ""]
    horizon_years: Float[Array, ""]  # h / 365
    nu: Float[Array, ""]  # student_t degrees of freedom


def atm_vol(market: Market, underlying: str, days: float = 30.0) -> float:
    """The underlying's ATM implied vol ``days`` ahead: market.vol(u, as_of + days, forward there)."""
    expiry = market.as_of + dt.timedelta(days=days)
    return market.vol(underlying, expiry, market.forward(underlying, expiry))


def nearest_correlation(c: np.ndarray, floor: float = 1e-8) -> tuple[np.ndarray, bool]:
    """``c`` if it is positive definite, else its eigenvalues clipped at ``floor`` and the diagonal
    rescaled to 1 (a simple projection; enough when a few entries were overridden). Second value: changed."""
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    if w.min() > floor:
        return c, False
    c2 = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c2))
    return c2 / np.outer(d, d), True


def history_window(settings: VarSettings, market: Market) -> tuple:
    """(start, end) days of history used: candles that closed before the market's as_of by default."""
    end = settings.history_end
    last_closed = history.as_day(market.as_of) - np.timedelta64(1, "D")
    end = last_closed if end is None else min(end, last_closed)
    return settings.history_start, end


def build_model(market: Market, settings: VarSettings, *, dtype=jnp.float64) -> tuple[ModelSpec, ScenarioParams,
                                                                                         dict]:
    """The scenario model for ``market``: (static spec, arrays, a JSON-able description of the inputs)."""
    us = UNDERLYINGS
    nu_ = len(us)
    notices: list[str] = []
    start, end = history_window(settings, market)
    joint = history.bundled_joint_returns(us, h=1, start=start, end=end, dvol=True)
    if len(joint) < 60:
        window = f"from {start} to {end}" if start is not None else f"up to {end}"
        raise InputError(f"only {len(joint)} days of joint price and DVOL history {window} (the bundled DVOL "
                         "starts 2021-03-24); need 60", field="var.history_start")
    corr = np.corrcoef(joint.values.T)
    sources = {"correlation": "history", "spot_vol_correlation": "history", "vol_of_vol": "history",
               "vol": "market atm"}
    market_rho = market.correlation_of(us[0], us[1]) if len(us) == 2 else None
    rho = settings.correlation if settings.correlation is not None else market_rho
    if rho is not None:
        corr[0, 1] = corr[1, 0] = rho
        sources["correlation"] = "config" if settings.correlation is not None else "market"
    for i, u in enumerate(us):
        if u in settings.spot_vol_correlation:
            corr[i, nu_ + i] = corr[nu_ + i, i] = settings.spot_vol_correlation[u]
            sources["spot_vol_correlation"] = "config"
    corr, repaired = nearest_correlation(corr)
    if repaired:
        notices.append("the factor correlation matrix was not positive definite; its eigenvalues were floored")
    chol = np.linalg.cholesky(corr)

    present = [u in market.underlyings for u in us]

    def today_atm(u):
        try:
            return atm_vol(market, u, settings.atm_days)
        except InputError:
            if u in settings.vol:  # a market without implied vols (a spot and futures book) with a given vol
                return settings.vol[u]
            raise

    atm = np.array([today_atm(u) if p else 0.0 for u, p in zip(us, present)])
    vol = np.array([settings.vol.get(u, a) if p else 0.0 for u, a, p in zip(us, atm, present)])
    if settings.vol:
        sources["vol"] = "config"
    dvol_sd = joint.values[:, nu_:].std(axis=0, ddof=1) * math.sqrt(DAYS_PER_YEAR)
    vov = np.array([settings.vol_of_vol.get(u, s) for u, s in zip(us, dvol_sd)])
    if settings.vol_of_vol:
        sources["vol_of_vol"] = "config"
    if not settings.vol_moves:
        vov = np.zeros(nu_)

    info = {
        "underlyings": list(us),
        "volatility": {u: float(x) for u, x, p in zip(us, vol, present) if p},
        "atm_vol": {u: float(x) for u, x, p in zip(us, atm, present) if p},
        "vol_of_vol": {u: float(x) for u, x, p in zip(us, vov, present) if p},
        "spot_vol_correlation": {u: float(corr[i, nu_ + i]) for i, u in enumerate(us) if present[i]},
        "correlation": {us[0]: {us[1]: float(corr[0, 1])}},
        "sources": sources,
        "history": {"start": str(joint.dates[0]), "end": str(joint.dates[-1]), "days": len(joint)},
    }
    resid = np.zeros((1, nu_))
    a_mat = np.zeros((nu_, nu_))
    m_mat = np.zeros((nu_, nu_))
    if settings.model == "fhs":
        closes = history.bundled_joint_returns(us, h=1, start=start, end=end)
        res = history.standardized_residuals(closes, settings.volatility_model, ewma_lambda=settings.ewma_lambda,
                                             burn_in=settings.burn_in_days)
        z = res.z - res.z.mean(axis=0)
        resid = z / z.std(axis=0)  # unit variance, so s is the scenario's vol as in the other models
        c_rr, c_rv, c_vv = corr[:nu_, :nu_], corr[:nu_, nu_:], corr[nu_:, nu_:]
        a_mat = np.linalg.solve(c_rr, c_rv).T
        cond = c_vv - a_mat @ c_rv
        m_mat = np.linalg.cholesky(nearest_correlation_cov(cond))
        info["fhs"] = {"days": len(resid), "start": str(res.dates[0]), "end": str(res.dates[-1]),
                       "volatility_model": res.model,
                       "residual_correlation": float(np.corrcoef(resid.T)[0, 1]),
                       "filtered_vol": {u: float(x) for u, x in zip(us, res.annual_next_vol())},
                       "scale": settings.fhs_scale}
        if settings.fhs_scale == "filtered":  # s = today's filter forecast (a config ``vol`` still wins)
            filtered = res.annual_next_vol()
            vol = np.array([settings.vol.get(u, f) if p else 0.0 for u, f, p in zip(us, filtered, present)])
            info["volatility"] = {u: float(x) for u, x, p in zip(us, vol, present) if p}
            sources["vol"] = "config" if settings.vol else f"filtered {res.model}"
        if res.model == "ewma":
            info["fhs"]["ewma_lambda"] = settings.ewma_lambda
        else:
            info["fhs"]["garch"] = {u: {"omega": g.omega, "alpha": g.alpha, "beta": g.beta}
                                    for u, g in zip(us, res.garch)}
        if rho is not None:
            notices.append("fhs keeps the historical dependence between underlyings; the given correlation "
                           "applies to the vol factors only")
    if settings.model == "student_t":
        info["nu"] = settings.nu
    info["notices"] = notices
    f = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    params = ScenarioParams(f(vol), f(atm), f(vov), f(chol), f(a_mat), f(m_mat), f(resid), f(settings.vol_floor),
                            f(settings.horizon_days / DAYS_PER_YEAR), f(settings.nu))
    spec = ModelSpec(settings.model, settings.antithetic,
                     int(settings.horizon_days) if settings.model == "fhs" else 1)
    return spec, params, info


def nearest_correlation_cov(c: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """A covariance matrix with its eigenvalues floored at ``floor`` (so it has a Cholesky factor)."""
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    return (v * np.maximum(w, floor)) @ v.T


# ---------------------------------------------------------------- draws


def path_factors(spec: ModelSpec, params: ScenarioParams, key, i):
    """Unit-variance factors (zr (u,), zv (u,)) of path ``i`` (a uint32 scalar); depends on (key, i) only."""
    dtype = params.vol.dtype
    draw = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32  # same draws for float32 and float64 books
    nu_ = params.vol.shape[0]
    if spec.antithetic:
        pair, sign = i // 2, jnp.where(i % 2 == 1, -1.0, 1.0).astype(dtype)
    else:
        pair, sign = i, jnp.ones((), dtype)
    k_normal, k_extra = jax.random.split(jax.random.fold_in(key, pair))
    if spec.model == "fhs":
        h = spec.fhs_days
        days = jax.random.randint(k_extra, (h,), 0, params.residuals.shape[0])
        zr = params.residuals[days].sum(axis=0) / jnp.sqrt(jnp.asarray(h, dtype))
        e = jax.random.normal(k_normal, (nu_,), draw).astype(dtype)
        zv = params.vol_given_return @ zr + params.vol_residual_chol @ e
    else:
        z = params.chol @ jax.random.normal(k_normal, (2 * nu_,), draw).astype(dtype)
        if spec.model == "student_t":
            nu = params.nu.astype(draw)
            w = 2.0 * jax.random.gamma(k_extra, nu / 2.0, dtype=draw)  # chi^2 with nu degrees of freedom
            z = z * jnp.sqrt((nu - 2.0) / w).astype(dtype)
        zr, zv = z[:nu_], z[nu_:]
    return sign * zr, sign * zv


def shock_from_factors(spec: ModelSpec, params: ScenarioParams, book: Book, zr, zv) -> Shock:
    """The market shock of one path from its factors (see the module docstring for the formulas)."""
    tau = params.horizon_years
    r = params.vol * jnp.sqrt(tau) * zr - 0.5 * params.vol**2 * tau
    x = params.vol_of_vol * jnp.sqrt(tau) * zv - 0.5 * params.vol_of_vol**2 * tau
    shift = params.atm_vol * jnp.expm1(x)
    return Shock(jnp.exp(r), shift[book.underlying], tau, params.vol_floor)


def path_shock(spec: ModelSpec, params: ScenarioParams, book: Book, key, i) -> Shock:
    zr, zv = path_factors(spec, params, key, i)
    return shock_from_factors(spec, params, book, zr, zv)


@functools.partial(jax.jit, static_argnums=0)
def _factors(spec, params, key, idx):
    return jax.vmap(lambda i: path_factors(spec, params, key, i))(idx)


@functools.partial(jax.jit, static_argnums=0)
def _losses(spec, book, params, key, idx):
    shocks = jax.vmap(lambda i: path_shock(spec, params, book, key, i))(idx)
    return -scenario_pnl(book, shocks).sum(axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _position_losses(spec, book, params, key, idx):
    """Per path, each position's part of the loss: quantity_j x d loss / d quantity_j by autodiff
    (values are linear in quantities, so the parts sum to the path's loss). Shape (paths, positions)."""
    def total(q):  # q: (paths, positions), one copy of the quantities per path
        def one(i, qi):
            b = eqx.tree_at(lambda bk: bk.quantity, book, qi)
            return -position_pnl(b, path_shock(spec, params, b, key, i)).sum()
        return jax.vmap(one)(idx, q).sum()

    q = jnp.broadcast_to(book.quantity, idx.shape + book.quantity.shape)
    return jax.grad(total)(q) * q


def scenario_factors(spec: ModelSpec, params: ScenarioParams, seed: int, indices) -> tuple[np.ndarray, np.ndarray]:
    """The factors (zr, zv), each (len(indices), u), of the given paths (for checks and plots)."""
    idx = jnp.asarray(np.asarray(indices, dtype=np.uint32))
    zr, zv = _factors(spec, params, jax.random.key(seed), idx)
    return np.asarray(zr), np.asarray(zv)


# ---------------------------------------------------------------- chunked, sharded driver


def _mesh(devices) -> Mesh:
    return Mesh(np.array(devices), ("paths",))


@functools.lru_cache(maxsize=64)
def _per_device(fn, spec, mesh: Mesh):
    """``fn(spec, book, params, key, idx)`` run by each device on its own slice of the paths
    (``shard_map``): the paths are independent, so no device waits for another. Under plain sharding
    (jit of a sharded array) the Student-t chi-square draw's rejection loop (``jax.random.gamma``, a
    while loop over the batch) would be partitioned with a cross-device all-reduce of its loop condition,
    and XLA's CPU host devices (``--xla_force_host_platform_device_count``) can deadlock on that
    collective when the devices outnumber the free threads. Each path's figures are the same either way."""
    paths, rep = PartitionSpec("paths"), PartitionSpec()
    body = functools.partial(fn, spec)
    # check_vma=False: the body is per-path and local; with the check on, the quantities' gradient in
    # _position_losses (a replicated input meeting per-device paths) would be summed over the devices
    return jax.jit(shard_map(body, mesh=mesh, in_specs=(rep, rep, rep, paths), out_specs=paths, check_vma=False))


def _chunk_size(chunk: int, paths: int, n_devices: int) -> int:
    """Paths per compiled call: ``chunk``, or the power of two covering ``paths`` if smaller, rounded
    up to a multiple of the device count. Results do not depend on it."""
    c = min(chunk, 1 << max(0, (paths - 1).bit_length()))
    return -(-c // n_devices) * n_devices


class _Progress:
    """Paths done so far, reported after each chunk's result is ready: a line on stderr (``enabled``
    True) or a call ``callback(done, total)``."""

    def __init__(self, total: int, enabled, label: str):
        self.callback = enabled if callable(enabled) else None
        self.total, self.enabled, self.label = total, bool(enabled), label

    def update(self, done: int) -> None:
        if self.callback is not None:
            self.callback(done, self.total)
        elif self.enabled:
            sys.stderr.write(f"\r{self.label}: {done:,}/{self.total:,} paths ({100.0 * done / self.total:5.1f}%)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.callback is None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _map_chunks(fn, spec, book, params, seed, indices: np.ndarray, chunk: int, devices, progress, label):
    """Run ``fn(spec, book, params, key, idx)`` over ``indices`` in padded chunks sharded over ``devices``
    (padding rows repeat path 0 and are dropped); returns the per-chunk outputs and valid rows in each.

    Progress (``progress`` True, or a callable ``(done, total)``): JAX dispatches asynchronously, so a
    chunk counts as done only once its result is ready. The loop keeps one chunk in flight behind the
    one being dispatched: it dispatches chunk k + 1, then blocks on chunk k and reports it, so the
    device never waits for the host and the count never runs ahead of the work. The outputs are the
    same with progress on or off (blocking changes when the host waits, not what is computed).
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    n = len(indices)
    size = _chunk_size(chunk, max(n, 1), len(devices))
    mesh = _mesh(devices)
    rows = NamedSharding(mesh, PartitionSpec("paths"))
    replicated = NamedSharding(mesh, PartitionSpec())
    run = functools.partial(fn, spec) if len(devices) == 1 else _per_device(fn, spec, mesh)
    key = jax.device_put(jax.random.key(seed), replicated)
    book = jax.device_put(book, replicated)
    params = jax.device_put(params, replicated)
    if progress is None:
        progress = sys.stderr.isatty() and n > size
    bar = _Progress(n, progress, label)
    outs, valid = [], []
    pending = None  # (output, paths done once it is ready) of the chunk dispatched last
    for start in range(0, n, size):
        stop = min(start + size, n)
        idx = np.zeros(size, np.uint32)
        idx[: stop - start] = indices[start:stop]
        outs.append(run(book, params, key, jax.device_put(idx, rows)))
        valid.append(stop - start)
        if bar.enabled:
            if pending is not None:  # chunk k + 1 is queued: wait for chunk k, then report it
                jax.block_until_ready(pending[0])
                bar.update(pending[1])
            pending = (outs[-1], stop)
    if pending is not None:
        jax.block_until_ready(pending[0])
        bar.update(pending[1])
    bar.close()
    return outs, valid


def simulate_losses(book: Book, spec: ModelSpec, params: ScenarioParams, *, paths: int, seed: int,
                    chunk: int = 65_536, devices: Sequence | None = None, progress: bool | None = None) -> np.ndarray:
    """Portfolio loss (minus P&L, margin currency) of paths 0..paths-1, full revaluation.

    Memory is bounded by ``chunk`` paths times the book size; the result is the same for any ``chunk``
    and any ``devices`` (default: every local device, the paths axis sharded across them).
    ``progress``: a progress line on stderr, updated as each chunk's result is ready (None: when stderr is a
    terminal and there is more than one chunk), or a callable ``progress(done, total)`` called once per chunk.
    """
    indices = np.arange(paths, dtype=np.uint32)
    outs, valid = _map_chunks(_losses, spec, book, params, seed, indices, chunk, devices, progress,
                              "pmjax monte carlo")
    return np.concatenate([np.asarray(o)[:v] for o, v in zip(outs, valid)]).astype(np.float64)


def tail_allocation(book: Book, spec: ModelSpec, params: ScenarioParams, *, seed: int, indices: np.ndarray,
                    chunk: int = 65_536, devices: Sequence | None = None) -> tuple[float, np.ndarray]:
    """(mean loss over the paths ``indices``, each position's part of it): the parts are
    quantity_j x d(mean loss)/d quantity_j by autodiff, which sum to the mean because values are linear
    in quantities. Per-path parts are averaged on the host in the order of ``indices``, so the result
    does not depend on the chunk size or the device count."""
    indices = np.asarray(indices, dtype=np.uint32)
    outs, valid = _map_chunks(_position_losses, spec, book, params, seed, indices, chunk, devices, False, "")
    per_path = np.concatenate([np.asarray(o, dtype=np.float64)[:v] for o, v in zip(outs, valid)])
    return float(per_path.sum(axis=1).mean()), per_path.mean(axis=0)


# ---------------------------------------------------------------- explicit scenarios (historical simulation)


@jax.jit
def _explicit_losses(book, shocks):
    return -scenario_pnl(book, shocks).sum(axis=-1)


@jax.jit
def _explicit_position_losses(book, shocks):
    """As ``_position_losses`` for explicit shocks."""
    def total(q):
        def one(shock, qi):
            b = eqx.tree_at(lambda bk: bk.quantity, book, qi)
            return -position_pnl(b, shock).sum()
        return jax.vmap(one)(shocks, q).sum()

    q = jnp.broadcast_to(book.quantity, shocks.dt.shape + book.quantity.shape)
    return jax.grad(total)(q) * q


def historical_shocks(book: Book, params: ScenarioParams, returns: np.ndarray, vol_changes: np.ndarray,
                      horizon_days: float) -> Shock:
    """Shocks applying each historical day's log-returns (t, u) and log ATM-vol changes (t, u) to ``book``."""
    dtype = book.quantity.dtype
    shift = np.asarray(params.atm_vol, np.float64) * np.expm1(vol_changes)
    t = len(returns)
    return Shock(jnp.asarray(np.exp(returns), dtype), jnp.asarray(shift[:, np.asarray(book.underlying)], dtype),
                 jnp.full((t,), horizon_days / DAYS_PER_YEAR, dtype), jnp.broadcast_to(params.vol_floor, (t,)))


def explicit_losses(book: Book, shocks: Shock) -> np.ndarray:
    """Portfolio loss under each of the given shocks (a leading scenario axis on every field)."""
    return np.asarray(_explicit_losses(book, shocks), dtype=np.float64)


def explicit_tail_allocation(book: Book, shocks: Shock, indices: np.ndarray) -> tuple[float, np.ndarray]:
    """As ``tail_allocation`` for explicit shocks (rows ``indices`` of ``shocks``)."""
    sub = jax.tree_util.tree_map(lambda a: a[np.asarray(indices)], shocks)
    per_path = np.asarray(_explicit_position_losses(book, sub), dtype=np.float64)
    return float(per_path.sum(axis=1).mean()), per_path.mean(axis=0)
