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
chunk size and any number of devices. The models themselves are ``mc_models``. Formulas: docs/methodology.md
sections 7.1-7.5.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

try:
    from jax import shard_map
except ImportError:  # jax < 0.6
    from jax.experimental.shard_map import shard_map

from pmjax.batch.sharding import map_chunks
from pmjax.core.book import Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.market import Market
from pmjax.core.units import DAYS_PER_YEAR
from pmjax.core.validate import number
from pmjax.io import history
from pmjax.scenarios.mc_models import (
    MODELS,
    ScenarioModel,
    ScenarioParams,
    model_for,
    path_losses,
    path_position_losses,
    scenario_factors,
)

__all__ = ["DEFAULTS", "FHS_SCALES", "MODELS", "REVALUATIONS", "ScenarioModel", "ScenarioParams", "VarSettings", "build_model",
           "history_window", "map_paths", "model_for", "nearest_correlation", "path_losses", "scenario_factors",
           "simulate_losses", "tail_allocation", "var_settings"]
#: defaults of the ``var`` config section (configs/var.yaml documents each)
DEFAULTS = {
    "model": "student_t", "nu": 4.0, "confidence": 0.99, "paths": 100_000, "seed": 0, "chunk": "auto",
    "antithetic": False, "ewma_lambda": 0.94, "volatility_model": "ewma", "burn_in_days": 30,
    "vol_moves": True, "vol_floor": 0.01, "atm_days": 30, "history_start": None, "history_end": None,
    "vol": {}, "vol_of_vol": {}, "spot_vol_correlation": {}, "correlation": None, "historical": True,
    "progress": None, "fhs_scale": "implied", "revaluation": "exact_tail",
}
#: fhs: what scales the standardized residuals (``var.fhs_scale``)
FHS_SCALES = ("implied", "filtered")
#: ``var.revaluation``: exact_tail screens every path and revalues the tail in full (``tail_screen``);
#: full revalues every path. Both give the same VaR, ES, standard errors and contributions.
REVALUATIONS = ("exact_tail", "full")


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
    revaluation: str = "exact_tail"


def _number(v, field, source, **limits):
    return number(v, source=source, field=field, strings=False, **limits)


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
    if v["revaluation"] not in REVALUATIONS:
        raise InputError(f"must be one of {', '.join(REVALUATIONS)}, got {v['revaluation']!r}", source=source,
                         field=f("revaluation"))
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
        revaluation=v["revaluation"],
    )


def _day(value, field, source):
    try:
        return history.as_day(value)
    except (ValueError, TypeError):
        raise InputError(f"must be a date YYYY-MM-DD, got {value!r}", source=source, field=field) from None


# ---------------------------------------------------------------- the model


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


def _factor_correlation(market: Market, settings: VarSettings, joint) -> tuple[np.ndarray, dict, list, object]:
    """(positive-definite factor correlation, sources, notices, the given return correlation or None)."""
    us = UNDERLYINGS
    nu_ = len(us)
    notices: list[str] = []
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
    return corr, sources, notices, rho


def _vols(market: Market, settings: VarSettings, joint, present: list, sources: dict):
    """(ATM vol, scenario vol s, vol of vol), each (u,): 0 for underlyings the market lacks."""
    us = UNDERLYINGS

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
    dvol_sd = joint.values[:, len(us):].std(axis=0, ddof=1) * math.sqrt(DAYS_PER_YEAR)
    vov = np.array([settings.vol_of_vol.get(u, s) for u, s in zip(us, dvol_sd)])
    if settings.vol_of_vol:
        sources["vol_of_vol"] = "config"
    if not settings.vol_moves:
        vov = np.zeros(len(us))
    return atm, vol, vov


def build_model(market: Market, settings: VarSettings, *, dtype=jnp.float64) -> tuple[ScenarioModel,
                                                                                        ScenarioParams, dict]:
    """The scenario model for ``market``: (static model, arrays, a JSON-able description of the inputs)."""
    us = UNDERLYINGS
    nu_ = len(us)
    start, end = history_window(settings, market)
    joint = history.bundled_joint_returns(us, h=1, start=start, end=end, dvol=True)
    if len(joint) < 60:
        window = f"from {start} to {end}" if start is not None else f"up to {end}"
        raise InputError(f"only {len(joint)} days of joint price and DVOL history {window} (the bundled DVOL "
                         "starts 2021-03-24); need 60", field="var.history_start")
    corr, sources, notices, rho = _factor_correlation(market, settings, joint)
    chol = np.linalg.cholesky(corr)
    present = [u in market.underlyings for u in us]
    atm, vol, vov = _vols(market, settings, joint, present, sources)
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
    model = model_for(settings.model, antithetic=settings.antithetic, horizon_days=settings.horizon_days)
    fit = {"corr": corr, "start": start, "end": end, "present": present, "rho": rho, "notices": notices,
           "info": info, "sources": sources, "vol": vol, "resid": np.zeros((1, nu_)),
           "a_mat": np.zeros((nu_, nu_)), "m_mat": np.zeros((nu_, nu_))}
    model.fit(fit, settings)
    info["notices"] = notices
    f = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    params = ScenarioParams(f(fit["vol"]), f(atm), f(vov), f(chol), f(fit["a_mat"]), f(fit["m_mat"]),
                            f(fit["resid"]), f(settings.vol_floor), f(settings.horizon_days / DAYS_PER_YEAR),
                            f(settings.nu))
    return model, params, info


# ---------------------------------------------------------------- chunked, sharded driver


def paths_mesh(devices) -> Mesh:
    """A one-axis ('paths') mesh over ``devices``."""
    return Mesh(np.array(devices), ("paths",))


@functools.lru_cache(maxsize=64)
def per_device(fn, model: ScenarioModel, mesh: Mesh):
    """``fn(model, book, params, key, idx)`` run by each device on its own slice of the paths
    (``shard_map``): the paths are independent, so no device waits for another. Under plain sharding
    (jit of a sharded array) the Student-t chi-square draw's rejection loop (``jax.random.gamma``, a
    while loop over the batch) would be partitioned with a cross-device all-reduce of its loop condition,
    and XLA's CPU host devices (``--xla_force_host_platform_device_count``) can deadlock on that
    collective when the devices outnumber the free threads. Each path's figures are the same either way."""
    paths, rep = PartitionSpec("paths"), PartitionSpec()
    body = functools.partial(fn, model)
    # check_vma=False: the body is per-path and local; with the check on, the quantities' gradient in
    # path_position_losses (a replicated input meeting per-device paths) would be summed over the devices
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


def map_paths(fn, model: ScenarioModel, book: Book, params: ScenarioParams, seed: int, indices: np.ndarray,
              chunk: int, devices, progress, label, *, shrink: bool = True):
    """Run ``fn(model, book, params, key, idx)`` over ``indices`` in padded chunks sharded over ``devices``
    (padding rows repeat path 0 and are dropped; ``pmjax.batch.sharding.map_chunks``); returns the per-chunk
    outputs and valid rows in each. Progress (``progress`` True, or a callable ``(done, total)``) counts a
    chunk once its result is ready; the outputs are the same with progress on or off. ``shrink``: a chunk
    larger than the paths asked for shrinks to the power of two covering them; ``False`` keeps ``chunk``, so
    the compiled program, and each path's result to the last bit, are those of a run over every path (XLA
    may vectorise a reduction differently for a different batch shape).
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    n = len(indices)
    size = _chunk_size(chunk, max(n, 1) if shrink else max(chunk, 1), len(devices))
    mesh = paths_mesh(devices)
    rows = NamedSharding(mesh, PartitionSpec("paths"))
    replicated = NamedSharding(mesh, PartitionSpec())
    run = functools.partial(fn, model) if len(devices) == 1 else per_device(fn, model, mesh)
    key = jax.device_put(jax.random.key(seed), replicated)
    book = jax.device_put(book, replicated)
    params = jax.device_put(params, replicated)
    if progress is None:
        progress = sys.stderr.isatty() and n > size
    bar = _Progress(n, progress, label)
    outs, valid = map_chunks(lambda idx: run(book, params, key, idx), indices, size,
                             put=lambda idx: jax.device_put(idx, rows), on_ready=bar.update if bar.enabled else None)
    bar.close()
    return outs, valid


def simulate_losses(book: Book, model: ScenarioModel, params: ScenarioParams, *, paths: int, seed: int,
                    chunk: int = 65_536, devices: Sequence | None = None,
                    progress: bool | Callable | None = None) -> np.ndarray:
    """Portfolio loss (minus P&L, margin currency) of paths 0..paths-1, full revaluation.

    Memory is bounded by ``chunk`` paths times the book size; the result is the same for any ``chunk``
    and any ``devices`` (default: every local device, the paths axis sharded across them).
    ``progress``: a progress line on stderr, updated as each chunk's result is ready (None: when stderr is a
    terminal and there is more than one chunk), or a callable ``progress(done, total)`` called once per chunk.
    """
    indices = np.arange(paths, dtype=np.uint32)
    outs, valid = map_paths(path_losses, model, book, params, seed, indices, chunk, devices, progress,
                            "pmjax monte carlo")
    return np.concatenate([np.asarray(o)[:v] for o, v in zip(outs, valid)]).astype(np.float64)


def tail_allocation(book: Book, model: ScenarioModel, params: ScenarioParams, *, seed: int, indices: np.ndarray,
                    chunk: int = 65_536, devices: Sequence | None = None) -> tuple[float, np.ndarray]:
    """(mean loss over the paths ``indices``, each position's part of it): the parts are
    quantity_j x d(mean loss)/d quantity_j by autodiff, which sum to the mean because values are linear
    in quantities. Per-path parts are averaged on the host in the order of ``indices``, so the result
    does not depend on the chunk size or the device count."""
    indices = np.asarray(indices, dtype=np.uint32)
    outs, valid = map_paths(path_position_losses, model, book, params, seed, indices, chunk, devices, False, "")
    per_path = np.concatenate([np.asarray(o, dtype=np.float64)[:v] for o, v in zip(outs, valid)])
    return float(per_path.sum(axis=1).mean()), per_path.mean(axis=0)
