"""Scenario grids as data: price moves x vol moves x weights, per underlying (SPEC section 5).

A ``Grid`` holds, for every underlying u in ``UNDERLYINGS`` and every scenario i, the fractional spot
move ``price_move[u, i]`` (spot and every forward of u scale by 1 + move), the absolute implied-vol
shift ``vol_shift[u, i]`` applied to u's positions, and the weight of the scenario's loss. Time
advances ``dt`` years in every scenario and vols are floored at ``vol_floor``.

Grids are scanned one underlying at a time, as SPAN scans each combined commodity separately:
scenario i of underlying u moves only u; every other underlying (a coin margin currency included)
stays where it is. ``underlying_shocks`` turns a grid into a ``pmjax.kernel.Shock`` batch of shape
(u, s) for a book and ``full_pnl`` values every position under every underlying's scenarios;
``own_underlying_pnl`` gives each position's P&L under its own underlying's scenarios only (what SPAN
uses, half the work with two underlyings). Everything here is branch-free and works under ``jit`` and ``vmap`` (over accounts).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .book import Book
from .instruments import UNDERLYINGS
from .kernel import DAY, Shock, no_shock, own_underlying_values, position_values, scenario_pnl

#: implied vols never fall below 1% in a scenario
VOL_FLOOR = 0.01

#: SPAN's 16 scenarios: price move in price scan ranges (15, 16 are +-extreme multiple, filled in by
#: ``span_grid``), vol move in vol scan ranges, and whether the extreme cover fraction weights the loss
SPAN_PRICE_STEPS = np.array([0, 0, 1 / 3, 1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3, 1, 1, -1, -1, 0, 0])
SPAN_EXTREME_SIGN = np.array([0.0] * 14 + [1.0, -1.0])
SPAN_VOL_STEPS = np.array([1.0, -1.0] * 7 + [0.0, 0.0])
SPAN_IS_EXTREME = np.array([False] * 14 + [True, True])
N_SPAN_SCENARIOS = 16

#: composite delta: price points (in price scan ranges) and their weights (sum to 1)
COMPOSITE_DELTA_STEPS = np.array([-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0])
COMPOSITE_DELTA_WEIGHTS = np.array([0.037, 0.111, 0.217, 0.270, 0.217, 0.111, 0.037])


class Grid(eqx.Module):
    """Scenarios per underlying: (u, s) arrays of moves and weights, shared time step and vol floor."""

    price_move: Float[Array, "u s"]  # fractional spot/forward move of underlying u in scenario s
    vol_shift: Float[Array, "u s"]  # absolute implied-vol shift of u's positions
    weight: Float[Array, "u s"]  # multiplies the scenario's loss
    dt: Float[Array, ""]  # years the scenario advances time
    vol_floor: Float[Array, ""]

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[-1]


def span_grid(price_scan_range, vol_scan_range, extreme_move_multiple, extreme_cover_fraction, horizon_days, *,
              vol_floor=VOL_FLOOR, dtype=None) -> Grid:
    """SPAN's 16-scenario grid from per-underlying parameters (arrays of shape (u,), or scalars).

    m = 0,0,+-1/3,+-2/3,+-1 (pairs, times P) then +X, -X (times P); v = +1,-1 alternating (times V,
    absolute) for 1..14 and 0 for 15, 16; weight 1, and c for 15, 16; dt = horizon_days / 365.
    """
    P = jnp.asarray(price_scan_range, dtype)
    dtype = P.dtype
    V = jnp.asarray(vol_scan_range, dtype)
    X = jnp.asarray(extreme_move_multiple, dtype)
    c = jnp.asarray(extreme_cover_fraction, dtype)
    P, V, X, c = jnp.broadcast_arrays(P, V, X, c)
    steps = jnp.asarray(SPAN_PRICE_STEPS, dtype) + jnp.asarray(SPAN_EXTREME_SIGN, dtype) * X[..., None]
    extreme = jnp.asarray(SPAN_IS_EXTREME)
    return Grid(
        price_move=steps * P[..., None],
        vol_shift=jnp.asarray(SPAN_VOL_STEPS, dtype) * V[..., None],
        weight=jnp.where(extreme, c[..., None], jnp.ones_like(c)[..., None]),
        dt=jnp.asarray(horizon_days, dtype) * DAY,
        vol_floor=jnp.asarray(vol_floor, dtype),
    )


def underlying_shocks(book: Book, grid: Grid) -> Shock:
    """The grid as a ``Shock`` batch with leading axes (u, s): shock [u, i] moves only underlying u
    (spot_scale 1 for the others) and shifts only the vols of u's positions."""
    n_und = len(UNDERLYINGS)
    dtype = book.quantity.dtype
    own = jnp.eye(n_und, dtype=bool)  # [u, w]: is w the underlying moved in u's scenarios
    spot_scale = jnp.where(own[:, None, :], 1.0 + grid.price_move[:, :, None], jnp.ones((), dtype))  # (u, s, w)
    of_u = book.underlying[None, :] == jnp.arange(n_und, dtype=book.underlying.dtype)[:, None]  # (u, n)
    vol_shift = jnp.where(of_u[:, None, :], grid.vol_shift[:, :, None], jnp.zeros((), dtype))  # (u, s, n)
    shape = grid.price_move.shape
    return Shock(spot_scale, vol_shift, jnp.broadcast_to(grid.dt, shape), jnp.broadcast_to(grid.vol_floor, shape))


def full_pnl(book: Book, grid: Grid) -> Float[Array, "u s n"]:
    """P&L of every position (margin currency, gain positive) under scenario s of underlying u."""
    shocks = underlying_shocks(book, grid)
    n_und, n_scen = grid.price_move.shape
    flat = jax.tree_util.tree_map(lambda x: x.reshape((n_und * n_scen,) + x.shape[2:]), shocks)
    return scenario_pnl(book, flat).reshape(n_und, n_scen, -1)


def own_underlying_pnl(book: Book, grid: Grid) -> Float[Array, "s n"]:
    """P&L of each position under its own underlying's scenarios: column p of ``full_pnl``'s row
    underlying[p], computed without valuing p under the other underlyings' scenarios."""
    move = grid.price_move[book.underlying].T  # (s, n)
    vol_shift = grid.vol_shift[book.underlying].T
    today = position_values(book, no_shock(book))
    values = jax.vmap(lambda m, v: own_underlying_values(book, 1.0 + m, v, grid.dt, grid.vol_floor))(move, vol_shift)
    return values - today


def own_underlying_losses(book: Book, grid: Grid) -> Float[Array, "s n"]:
    """Weighted losses (positive = loss) of each position under its own underlying's scenarios."""
    weight = grid.weight[book.underlying].T  # (s, n)
    return -weight * own_underlying_pnl(book, grid)
