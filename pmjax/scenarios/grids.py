"""Scenario grids as data: price moves x vol moves x weights, per underlying (SPEC section 5).

A ``Grid`` holds, for every underlying u in ``UNDERLYINGS`` and every scenario i, the fractional spot
move ``price_move[u, i]`` (spot and every forward of u scale by 1 + move), the absolute implied-vol
shift ``vol_shift[u, i]`` applied to u's positions, and the weight of the scenario's loss. Time
advances ``dt`` years in every scenario and vols are floored at ``vol_floor``.

Grids are scanned one underlying at a time, as SPAN scans each combined commodity separately:
scenario i of underlying u moves only u; every other underlying (a coin margin currency included)
stays where it is. ``underlying_shocks`` turns a grid into a ``pmjax.core.kernel.Shock`` batch of shape
(u, s) for a book and ``full_pnl`` values every position under every underlying's scenarios;
``own_underlying_pnl`` gives each position's P&L under its own underlying's scenarios only (what SPAN
uses, half the work with two underlyings). Everything here is branch-free and works under ``jit`` and ``vmap`` (over accounts).

Two presets build grids from a method's parameters: ``span_grid`` (SPAN's 16 scenarios, a ``Grid``) and
``deribit_grid`` (Deribit's 3 (2B+1) standard + extended scenarios, a ``DeribitGrid``). A Deribit
scenario's vol move depends on each option's days to expiry, so ``DeribitGrid`` stores it as data: a
vol state per scenario (+1 up, 0 same, -1 down) and a ``RelativeVolShock`` rule that turns a state into
each position's absolute vol shift. Both are ``base.ScenarioSet``s: ``shocks(book)`` gives a batch of
``pmjax.core.kernel.Shock`` with one scenario axis (``Grid.shocks`` flattens ``underlying_shocks``), valued by
the same kernel (``pnl(book)``). Formulas: docs/methodology.md
sections 5.2 (SPAN's 16 scenarios) and 6.2-6.4 (the Deribit grid's standard and extended tables).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from pmjax.core.book import OPTION, Book
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import Shock, no_shock, own_underlying_values, position_values
from pmjax.core.units import DAY, DAYS_PER_YEAR
from pmjax.scenarios.base import ScenarioSet

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


class Grid(ScenarioSet):
    """Scenarios per underlying: (u, s) arrays of moves and weights, shared time step and vol floor.
    As a ``ScenarioSet`` its shocks are ``underlying_shocks`` flattened to (u s,), underlying-major."""

    price_move: Float[Array, "u s"]  # fractional spot/forward move of underlying u in scenario s
    vol_shift: Float[Array, "u s"]  # absolute implied-vol shift of u's positions
    weight: Float[Array, "u s"]  # multiplies the scenario's loss
    dt: Float[Array, ""]  # years the scenario advances time
    vol_floor: Float[Array, ""]

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[-1]

    def shocks(self, book: Book) -> Shock:
        """``underlying_shocks(book, self)`` flattened to one scenario axis of u x s (underlying-major)."""
        n_und, n_scen = self.price_move.shape
        return jax.tree_util.tree_map(lambda x: x.reshape((n_und * n_scen,) + x.shape[2:]),
                                      underlying_shocks(book, self))


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
    row = (1,) * X.ndim + (-1,)  # the 16 scenarios on the last axis, explicitly broadcast against (u,)
    steps = jnp.reshape(jnp.asarray(SPAN_PRICE_STEPS, dtype), row) + \
        jnp.reshape(jnp.asarray(SPAN_EXTREME_SIGN, dtype), row) * X[..., None]
    extreme = jnp.reshape(jnp.asarray(SPAN_IS_EXTREME), row)
    return Grid(
        price_move=steps * P[..., None],
        vol_shift=jnp.reshape(jnp.asarray(SPAN_VOL_STEPS, dtype), row) * V[..., None],
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
    n_und, n_scen = grid.price_move.shape
    return grid.pnl(book).reshape(n_und, n_scen, -1)


def own_underlying_pnl(book: Book, grid: Grid) -> Float[Array, "s n"]:
    """P&L of each position under its own underlying's scenarios: column p of ``full_pnl``'s row
    underlying[p], computed without valuing p under the other underlyings' scenarios."""
    move = grid.price_move[book.underlying].T  # (s, n)
    vol_shift = grid.vol_shift[book.underlying].T
    today = position_values(book, no_shock(book))
    values = jax.vmap(lambda m, v: own_underlying_values(book, 1.0 + m, v, grid.dt, grid.vol_floor))(move, vol_shift)
    return values - today[None, :]


def own_underlying_losses(book: Book, grid: Grid) -> Float[Array, "s n"]:
    """Weighted losses (positive = loss) of each position under its own underlying's scenarios."""
    weight = grid.weight[book.underlying].T  # (s, n)
    return -weight * own_underlying_pnl(book, grid)


# ---------------------------------------------------------------- the Deribit grid

#: Deribit's vol states of each price point, in vector order (index 3 i + j), and their codes
DERIBIT_VOL_STATES = ("up", "same", "down")
VOL_UP, VOL_SAME, VOL_DOWN = 1, 0, -1
#: Deribit KB "Portfolio Margin": the extended table's price moves (vol-up only)
DERIBIT_EXTENDED_MOVES = (-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
#: the vol shock is (REFERENCE_DAYS / max(DTE, DTE_FLOOR_DAYS))^power times the vol range
DERIBIT_REFERENCE_DAYS = 30.0
DERIBIT_DTE_FLOOR_DAYS = 1.0


class RelativeVolShock(eqx.Module):
    """Deribit's relative, expiry-dependent vol shock, per underlying (shape (u,)).

    For an option of underlying u with days to expiry DTE, f = (reference_days / max(DTE, dte_floor_days))^p,
    p = ``short_term_power`` below ``reference_days``, else ``long_term_power``; the vol becomes
    max(sigma (1 + range_up f), min_vol_up) in state +1, sigma in state 0, max(sigma (1 - range_down f), 0)
    in state -1. Positions other than options are vol-blind (shift 0).
    """

    range_up: Float[Array, " u"]
    range_down: Float[Array, " u"]
    min_vol_up: Float[Array, " u"]
    short_term_power: Float[Array, " u"]
    long_term_power: Float[Array, " u"]
    reference_days: float = eqx.field(static=True, default=DERIBIT_REFERENCE_DAYS)
    dte_floor_days: float = eqx.field(static=True, default=DERIBIT_DTE_FLOOR_DAYS)

    def shocked_vols(self, book: Book):
        """(vol up, vol down) of each position of ``book`` (shape (n,) each)."""
        u = book.underlying
        dte = book.expiry_years * DAYS_PER_YEAR
        power = jnp.where(dte < self.reference_days, self.short_term_power[u], self.long_term_power[u])
        f = (self.reference_days / jnp.maximum(dte, self.dte_floor_days)) ** power
        up = jnp.maximum(book.vol * (1.0 + self.range_up[u] * f), self.min_vol_up[u])
        down = jnp.maximum(book.vol * (1.0 - self.range_down[u] * f), 0.0)
        return up, down

    def shifts(self, book: Book, vol_state) -> Float[Array, "s n"]:
        """Absolute vol shift of each position (what ``Shock.vol_shift`` takes) under each scenario's state."""
        up, down = self.shocked_vols(book)
        is_option = book.kind == OPTION
        up_shift = jnp.where(is_option, up - book.vol, 0.0)
        down_shift = jnp.where(is_option, down - book.vol, 0.0)
        state = vol_state[:, None]
        return jnp.where(state == VOL_UP, up_shift[None, :],
                         jnp.where(state == VOL_DOWN, down_shift[None, :], jnp.zeros((), up_shift.dtype)))


class DeribitGrid(ScenarioSet):
    """Deribit's scenarios as data: the first ``n_standard`` are the standard table, the rest the extended one.

    In scenario s every underlying u moves by ``price_move[u, s]`` at once (a position sees only its own
    underlying's move, and its P&L is in coin of that underlying); each option's vol follows
    ``vol_rule`` in state ``vol_state[s]``; the position's coin P&L is multiplied by ``weight[u, s]``
    (1 in the standard table; the extended fraction f_ext pr / |m| and the conversion to coin at the edge
    price, (1 + m) / (1 + sign(m) pr), in the extended one), or, for a P&L kept in USD(C), by
    ``weight_usd[u, s]`` (the same without the conversion). No time passes; no vol floor beyond the rule's.
    """

    price_move: Float[Array, "u s"]
    vol_state: Int[Array, " s"]  # VOL_UP, VOL_SAME, VOL_DOWN
    weight: Float[Array, "u s"]
    weight_usd: Float[Array, "u s"]
    is_extended: Bool[Array, " s"]
    vol_rule: RelativeVolShock
    dt: Float[Array, ""]
    vol_floor: Float[Array, ""]
    n_standard: int = eqx.field(static=True)

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[-1]

    def shocks(self, book: Book) -> Shock:
        """The grid as a ``Shock`` batch of shape (s,) for ``book``."""
        s = self.n_scenarios
        return Shock(1.0 + self.price_move.T, self.vol_rule.shifts(book, self.vol_state),
                     jnp.broadcast_to(self.dt, (s,)), jnp.broadcast_to(self.vol_floor, (s,)))


def deribit_grid(price_range, buckets_count: int, vol_rule: RelativeVolShock, extended_table_factor,
                 extended_moves=DERIBIT_EXTENDED_MOVES, *, dtype=None) -> DeribitGrid:
    """Deribit's standard + extended grid from its ``model_params`` (per-underlying arrays of shape (u,)).

    Standard: price moves m_i = (i - B) pr / B, i = 0..2B (B = ``buckets_count``), each under vol states
    up, same, down (scenario 3 i + j), weight 1. Extended: each of ``extended_moves`` under vol up, weight
    (1 + m) f_ext pr / |m| / (1 + sign(m) pr) (coin P&L), f_ext pr / |m| (USD P&L).
    """
    pr = jnp.asarray(price_range, dtype)
    dtype = pr.dtype
    f_ext = jnp.asarray(extended_table_factor, dtype)
    ext = jnp.asarray(extended_moves, dtype)  # (e,)
    B = int(buckets_count)
    n_vol = len(DERIBIT_VOL_STATES)
    n_ext = ext.shape[0]
    steps = jnp.arange(2 * B + 1, dtype=dtype) - B
    moves = steps[:, None] * pr[None, :] / B  # (2B+1, u)
    n_std = (2 * B + 1) * n_vol
    price_move = jnp.concatenate([jnp.repeat(moves, n_vol, axis=0),
                                  jnp.broadcast_to(ext[:, None], (n_ext, pr.shape[0]))]).T  # (u, s)
    codes = np.array([{"up": VOL_UP, "same": VOL_SAME, "down": VOL_DOWN}[v] for v in DERIBIT_VOL_STATES])
    vol_state = np.concatenate([np.tile(codes, 2 * B + 1), np.full(n_ext, VOL_UP)]).astype(np.int32)
    edge = 1.0 + jnp.sign(ext)[None, :] * pr[:, None]  # (u, e): the standard range's edge price / S
    ext_weight = (1.0 + ext[None, :]) * f_ext[:, None] * pr[:, None] / jnp.abs(ext)[None, :] / edge
    ones = jnp.ones((pr.shape[0], n_std), dtype)
    weight = jnp.concatenate([ones, ext_weight], axis=1)
    weight_usd = jnp.concatenate([ones, f_ext[:, None] * pr[:, None] / jnp.abs(ext)[None, :]], axis=1)
    zero = jnp.zeros((), dtype)
    return DeribitGrid(price_move=price_move, vol_state=jnp.asarray(vol_state), weight=weight, weight_usd=weight_usd,
                       is_extended=jnp.asarray(np.arange(n_std + n_ext) >= n_std), vol_rule=vol_rule,
                       dt=zero, vol_floor=zero, n_standard=n_std)
