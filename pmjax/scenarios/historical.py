"""Historical simulation's scenarios: each day's actual joint h-day moves of BTC and ETH closes and of
their DVOL (log changes; overlapping windows for h > 1) applied to today's book (no random draws). Formulas:
docs/methodology.md section 7.8.

Each day's DVOL log change shifts the underlying's smile by atm_vol (exp(change) - 1) (absolute vol);
days without DVOL (before 2021-03-24) are not used. Time advances h/365 years.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pmjax.core.book import Book
from pmjax.core.kernel import Shock, position_pnl, scenario_pnl
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.market import Market
from pmjax.core.units import DAYS_PER_YEAR
from pmjax.io import history
from pmjax.scenarios.base import ScenarioSet
from pmjax.scenarios.mc_models import ScenarioParams
from pmjax.scenarios.montecarlo import VarSettings, history_window


class HistoricalScenarios(ScenarioSet):
    """One scenario per historical day (t days), per underlying of ``UNDERLYINGS``."""

    growth: Float[Array, "t u"]  # exp(log-return): spot and forwards scale by it
    vol_shift: Float[Array, "t u"]  # absolute implied-vol shift, atm_vol (exp(log DVOL change) - 1)
    dt: Float[Array, " t"]  # years: h / 365
    vol_floor: Float[Array, " t"]

    def shocks(self, book: Book) -> Shock:
        return Shock(self.growth, self.vol_shift[:, book.underlying], self.dt, self.vol_floor)


def historical_scenarios(market: Market, settings: VarSettings, params: ScenarioParams, *,
                         dtype) -> tuple[np.ndarray, HistoricalScenarios]:
    """(dates, scenarios) of the history window (``montecarlo.history_window``) at ``settings.horizon_days``
    (a whole number); ``params``: the scenario model's arrays (atm_vol and the vol floor)."""
    h = settings.horizon_days
    if h != int(h):
        raise ValueError(f"historical simulation needs a whole number of days, got {h}")
    start, end = history_window(settings, market)
    us = UNDERLYINGS
    joint = history.bundled_joint_returns(us, h=int(h), start=start, end=end, dvol=True)
    returns, vol_changes = joint.values[:, : len(us)], joint.values[:, len(us):]
    if not settings.vol_moves:
        vol_changes = np.zeros_like(vol_changes)
    shift = np.asarray(params.atm_vol, np.float64) * np.expm1(vol_changes)
    t = len(returns)
    return joint.dates, HistoricalScenarios(jnp.asarray(np.exp(returns), dtype), jnp.asarray(shift, dtype),
                                            jnp.full((t,), h / DAYS_PER_YEAR, dtype),
                                            jnp.broadcast_to(params.vol_floor, (t,)))


@jax.jit
def _losses(book, shocks):
    return -scenario_pnl(book, shocks).sum(axis=-1)


@jax.jit
def _position_losses(book, shocks):
    """Per scenario, each position's part of the loss: quantity_j x d loss / d quantity_j by autodiff."""
    def total(q):
        def one(shock, qi):
            b = eqx.tree_at(lambda bk: bk.quantity, book, qi)
            return -position_pnl(b, shock).sum()
        return jax.vmap(one)(shocks, q).sum()

    q = jnp.broadcast_to(book.quantity, shocks.dt.shape + book.quantity.shape)
    return jax.grad(total)(q) * q


def scenario_losses(book: Book, scenarios: ScenarioSet) -> np.ndarray:
    """Portfolio loss (minus P&L, margin currency) under each scenario of ``scenarios``."""
    return np.asarray(_losses(book, scenarios.shocks(book)), dtype=np.float64)


def scenario_tail_allocation(book: Book, scenarios: ScenarioSet, indices: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean loss over the scenarios ``indices``, each position's part of it), as
    ``montecarlo.tail_allocation`` for explicit scenarios."""
    sub = jax.tree_util.tree_map(lambda a: a[np.asarray(indices)], scenarios.shocks(book))
    per_path = np.asarray(_position_losses(book, sub), dtype=np.float64)
    return float(per_path.sum(axis=1).mean()), per_path.mean(axis=0)
