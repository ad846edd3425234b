"""Monte Carlo scenario models as strategy objects: each turns (key, path index) into unit-variance
factors (zr, zv) per underlying; see ``pmjax.scenarios.montecarlo``. Formulas: docs/methodology.md section 7.3.

A model is a frozen dataclass (hashable: it is a jit-static argument), chosen once from the config
name (``var.model``) through ``MODELS``. Path i's draws come from ``fold_in(key, i)`` alone.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pmjax.core.book import Book
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import Shock, position_pnl, scenario_pnl
from pmjax.io import history


class ScenarioParams(eqx.Module):
    """The array part of a scenario model (one row per underlying of ``UNDERLYINGS``); a leading ``*b`` axis
    holds a batch of models (the backtest's days)."""

    vol: Float[Array, "*b u"]  # annual vol of log-returns; 0 for an underlying the market lacks
    atm_vol: Float[Array, "*b u"]  # today's ATM implied vol: the smile shift is atm_vol (exp(x) - 1)
    vol_of_vol: Float[Array, "*b u"]  # annual vol of the log ATM vol; 0 turns vol moves off
    chol: Float[Array, "*b f f"]  # Cholesky factor of the factor correlation, f = 2 u: (returns, vols)
    vol_given_return: Float[Array, "*b u u"]  # FHS: A in zv = A zr + M e
    vol_residual_chol: Float[Array, "*b u u"]  # FHS: M
    residuals: Float[Array, "*b t u"]  # FHS: standardized daily residuals (unit variance); zeros otherwise
    vol_floor: Float[Array, "*b"]
    horizon_years: Float[Array, "*b"]  # h / 365
    nu: Float[Array, "*b"]  # student_t degrees of freedom


@dataclasses.dataclass(frozen=True)
class ScenarioModel(abc.ABC):
    """The static (compile-time) part of a scenario model; the horizon and nu are arrays in
    ``ScenarioParams`` so that changing them does not recompile."""

    name: ClassVar[str] = ""
    antithetic: bool = False

    @property
    def model(self) -> str:
        """The config name (``var.model``)."""
        return self.name

    def factors(self, params: ScenarioParams, key, i):
        """Unit-variance factors (zr (u,), zv (u,)) of path ``i`` (a uint32 scalar); depends on (key, i) only."""
        dtype = params.vol.dtype
        draw = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32  # same draws for float32 and float64
        if self.antithetic:
            pair, sign = i // 2, jnp.where(i % 2 == 1, -1.0, 1.0).astype(dtype)
        else:
            pair, sign = i, jnp.ones((), dtype)
        k_normal, k_extra = jax.random.split(jax.random.fold_in(key, pair))
        zr, zv = self.draw(params, k_normal, k_extra, draw, dtype)
        return sign * zr, sign * zv

    @abc.abstractmethod
    def draw(self, params: ScenarioParams, k_normal, k_extra, draw, dtype):
        """(zr, zv) before the antithetic sign, from the path's two keys; ``draw`` the sampling dtype."""

    def fit(self, fit: dict, settings) -> None:
        """Model-specific inputs while the model is built (``montecarlo.build_model``): updates ``fit``
        (arrays ``resid``, ``a_mat``, ``m_mat``, ``vol`` and the ``info`` description) in place."""


@dataclasses.dataclass(frozen=True)
class NormalModel(ScenarioModel):
    """(zr, zv) = L e, e standard normal, L the Cholesky factor of the factor correlation."""

    name: ClassVar[str] = "normal"

    def draw(self, params, k_normal, k_extra, draw, dtype):
        nu_ = params.vol.shape[0]
        z = self.scale(params, params.chol @ jax.random.normal(k_normal, (2 * nu_,), draw).astype(dtype),
                       k_extra, draw, dtype)
        return z[:nu_], z[nu_:]

    def scale(self, params, z, k_extra, draw, dtype):
        return z


@dataclasses.dataclass(frozen=True)
class StudentTModel(NormalModel):
    """The normal factors times sqrt((nu - 2) / W), W ~ chi^2(nu) shared by the path's factors."""

    name: ClassVar[str] = "student_t"

    def scale(self, params, z, k_extra, draw, dtype):
        nu = params.nu.astype(draw)
        w = 2.0 * jax.random.gamma(k_extra, nu / 2.0, dtype=draw)  # chi^2 with nu degrees of freedom
        return z * jnp.sqrt((nu - 2.0) / w).astype(dtype)

    def fit(self, fit: dict, settings) -> None:
        fit["info"]["nu"] = settings.nu


@dataclasses.dataclass(frozen=True)
class FilteredHistoricalModel(ScenarioModel):
    """zr: the mean of ``days`` random historical days' standardized residuals times sqrt(days); the vol
    factor is Gaussian given zr, zv = A zr + M e."""

    name: ClassVar[str] = "fhs"
    days: int = 1  # historical days summed per path (the horizon in whole days)

    def draw(self, params, k_normal, k_extra, draw, dtype):
        nu_ = params.vol.shape[0]
        h = self.days
        days = jax.random.randint(k_extra, (h,), 0, params.residuals.shape[0])
        zr = params.residuals[days].sum(axis=0) / jnp.sqrt(jnp.asarray(h, dtype))
        e = jax.random.normal(k_normal, (nu_,), draw).astype(dtype)
        zv = params.vol_given_return @ zr + params.vol_residual_chol @ e
        return zr, zv

    def fit(self, fit: dict, settings) -> None:
        fhs_inputs(fit, settings)


#: ``var.model`` name -> model class
MODELS: dict[str, type[ScenarioModel]] = {m.name: m for m in (NormalModel, StudentTModel, FilteredHistoricalModel)}


def model_for(name: str, *, antithetic: bool = False, horizon_days: float = 1.0) -> ScenarioModel:
    """The model named ``name`` (a key of ``MODELS``); fhs draws ``int(horizon_days)`` days a path."""
    cls = MODELS[name]
    if cls is FilteredHistoricalModel:
        return cls(antithetic, int(horizon_days))
    return cls(antithetic)


def fhs_inputs(fit: dict, settings) -> None:
    """Filtered historical simulation's inputs (``FilteredHistoricalModel.fit``): the standardized
    residuals, A and M of zv = A zr + M e, the filtered vol when ``fhs_scale: filtered``, and ``info['fhs']``."""
    us, nu_, corr, info = UNDERLYINGS, len(UNDERLYINGS), fit["corr"], fit["info"]
    closes = history.bundled_joint_returns(us, h=1, start=fit["start"], end=fit["end"])
    res = history.standardized_residuals(closes, settings.volatility_model, ewma_lambda=settings.ewma_lambda,
                                         burn_in=settings.burn_in_days)
    z = res.z - res.z.mean(axis=0)
    resid = z / z.std(axis=0)  # unit variance, so s is the scenario's vol as in the other models
    c_rr, c_rv, c_vv = corr[:nu_, :nu_], corr[:nu_, nu_:], corr[nu_:, nu_:]
    a_mat = np.linalg.solve(c_rr, c_rv).T
    cond = c_vv - a_mat @ c_rv
    fit["resid"], fit["a_mat"], fit["m_mat"] = resid, a_mat, np.linalg.cholesky(nearest_correlation_cov(cond))
    info["fhs"] = {"days": len(resid), "start": str(res.dates[0]), "end": str(res.dates[-1]),
                   "volatility_model": res.model,
                   "residual_correlation": float(np.corrcoef(resid.T)[0, 1]),
                   "filtered_vol": {u: float(x) for u, x in zip(us, res.annual_next_vol())},
                   "scale": settings.fhs_scale}
    if settings.fhs_scale == "filtered":  # s = today's filter forecast (a config ``vol`` still wins)
        filtered, present = res.annual_next_vol(), fit["present"]
        fit["vol"] = np.array([settings.vol.get(u, f) if p else 0.0 for u, f, p in zip(us, filtered, present)])
        info["volatility"] = {u: float(x) for u, x, p in zip(us, fit["vol"], present) if p}
        fit["sources"]["vol"] = "config" if settings.vol else f"filtered {res.model}"
    if res.model == "ewma":
        info["fhs"]["ewma_lambda"] = settings.ewma_lambda
    else:
        info["fhs"]["garch"] = {u: {"omega": g.omega, "alpha": g.alpha, "beta": g.beta}
                                for u, g in zip(us, res.garch)}
    if fit["rho"] is not None:
        fit["notices"].append("fhs keeps the historical dependence between underlyings; the given correlation "
                              "applies to the vol factors only")


def nearest_correlation_cov(c: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """A covariance matrix with its eigenvalues floored at ``floor`` (so it has a Cholesky factor)."""
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    return (v * np.maximum(w, floor)) @ v.T


# ---------------------------------------------------------------- paths to shocks


def path_factors(model: ScenarioModel, params: ScenarioParams, key, i):
    """``model.factors(params, key, i)``."""
    return model.factors(params, key, i)


def factor_moves(params: ScenarioParams, zr, zv):
    """(log-return r, log ATM-vol change x) of each underlying, from the path's unit-variance factors."""
    tau = params.horizon_years
    r = params.vol * jnp.sqrt(tau) * zr - 0.5 * params.vol**2 * tau
    x = params.vol_of_vol * jnp.sqrt(tau) * zv - 0.5 * params.vol_of_vol**2 * tau
    return r, x


def shock_from_factors(model: ScenarioModel, params: ScenarioParams, book: Book, zr, zv) -> Shock:
    """The market shock of one path from its factors (formulas in ``pmjax.scenarios.montecarlo``)."""
    r, x = factor_moves(params, zr, zv)
    shift = params.atm_vol * jnp.expm1(x)
    return Shock(jnp.exp(r), shift[book.underlying], params.horizon_years, params.vol_floor)


def path_shock(model: ScenarioModel, params: ScenarioParams, book: Book, key, i) -> Shock:
    zr, zv = model.factors(params, key, i)
    return shock_from_factors(model, params, book, zr, zv)


@functools.partial(jax.jit, static_argnums=0)
def path_factors_batch(model, params, key, idx):
    """Factors of the paths ``idx`` (jit; the model static)."""
    return jax.vmap(lambda i: model.factors(params, key, i))(idx)


@functools.partial(jax.jit, static_argnums=0)
def path_losses(model, book, params, key, idx):
    """Portfolio loss of the paths ``idx`` (jit; the model static)."""
    shocks = jax.vmap(lambda i: path_shock(model, params, book, key, i))(idx)
    return -scenario_pnl(book, shocks).sum(axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def path_position_losses(model, book, params, key, idx):
    """Per path, each position's part of the loss: quantity_j x d loss / d quantity_j by autodiff
    (values are linear in quantities, so the parts sum to the path's loss). Shape (paths, positions)."""
    def total(q):  # q: (paths, positions), one copy of the quantities per path
        def one(i, qi):
            b = eqx.tree_at(lambda bk: bk.quantity, book, qi)
            return -position_pnl(b, path_shock(model, params, b, key, i)).sum()
        return jax.vmap(one)(idx, q).sum()

    q = jnp.broadcast_to(book.quantity, idx.shape + book.quantity.shape)
    return jax.grad(total)(q) * q


def scenario_factors(model: ScenarioModel, params: ScenarioParams, seed: int, indices) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """The factors (zr, zv), each (len(indices), u), of the given paths (for checks and plots)."""
    idx = jnp.asarray(np.asarray(indices, dtype=np.uint32))
    zr, zv = path_factors_batch(model, params, jax.random.key(seed), idx)
    return np.asarray(zr), np.asarray(zv)
