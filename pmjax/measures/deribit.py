"""Deribit-style portfolio margin: the risk matrix of Deribit's ``private/pme/simulate`` (SPEC sections 2, 3).

Per underlying u (parameters from ``configs/deribit.yaml``, Deribit's own ``model_params`` names):

- standard table: price moves m_i = (i - B) pr / B, i = 0..2B, each under the vol states up, same,
  down (vector index 3 i + j); an option's vol becomes sigma (1 + up f) floored at
  ``min_volatility_for_shock_up`` (up), sigma (same), max(sigma (1 - down f), 0) (down), with
  f = (30 / max(DTE, 1 day))^p, p = ``short_term_vega_power`` below 30 days, else ``long_term_vega_power``;
- extended table: the moves ``extended_moves`` (-66% .. +500%) under the vol-up state, each entry the
  P&L times f_ext pr / |m| converted to coin at the edge price S (1 +- pr);
- aggregation: a plain sum over u's positions; then the extended entries shrink towards 0 by the dampener
  (|m|/pr - 1) ``extended_dampener`` / (S (1 +- pr)); then a gain counts only as
  min(gain ``pnl_offset``, ``max_offsetable_pnl`` / S);
- worst case = max(0, -min of both aggregated tables); roll shock = sum over expiries of
  |net coin delta| max(``min_annualised_move``, ``annualised_move_risk`` T); delta shock =
  |D| min(``max_delta_shock``, ``m_inc`` max(|D| S - threshold, 0) / S);
- risk-matrix margin = round9(worst case) + roll shock + delta shock; maintenance = ``mm_factor`` times
  that; initial = round9(risk-matrix margin + add-ons), the add-ons (Deribit's mmp_margin,
  open_orders_margin, spot_margin) being inputs (0 for a plain account).

The scenarios are data: ``DeribitParams.grid`` is the ``pmjax.scenarios.grids.deribit_grid`` preset (a
``grids.DeribitGrid``: per-scenario price moves, vol states and weights, and the expiry-dependent vol
rule ``grids.RelativeVolShock``), turned into one ``Shock`` batch as SPAN's ``grids.Grid`` is.
Every vector is P&L (gain positive) per pool: with ``deribit.pooling: cross`` (default) one pool per underlying,
in its coin, as Deribit reports a coin-settled book; with ``segregated`` USDC-settled instruments form pools of
their own in USDC (docs/deribit_grid.md, "Pools").
Valuation goes through ``pmjax.core.kernel.position_values`` (instantaneous: no time passes).

Three doors: ``deribit_params(config, *, dtype) -> DeribitParams`` (invariants checked in ``__check_init__``),
the pure, branch-free ``deribit_margin(book, params) -> DeribitResult`` (callers jit it, or vmap it over a
leading accounts axis: ``pmjax.apps.stress.deribit_margin_sharded``), and ``deribit_section(result, ...)``, the
SPEC JSON section. Add-ons (Deribit's mmp, open-orders and spot margin) are not part of the book: a caller
that has them applies ``add_initial_addons`` to the result inside its own jit (bitwise the figures of the
single call it replaces). Formulas: see docs/methodology.md section 6; sources and the choices no published
example pins down: docs/deribit_grid.md.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from pmjax.core.book import PERPETUAL, SPOT, Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import Shock, no_shock, position_values
from pmjax.core.validate import number
from pmjax.core.precision import check_dtype
from pmjax.scenarios.grids import (
    DERIBIT_DTE_FLOOR_DAYS,
    DERIBIT_EXTENDED_MOVES,
    DERIBIT_REFERENCE_DAYS,
    DERIBIT_VOL_STATES,
    VOL_SAME,
    DeribitGrid,
    RelativeVolShock,
    deribit_grid,
)

#: the vol states of each price bucket, in vector order (index 3 i + j)
VOL_STATES = DERIBIT_VOL_STATES
#: Deribit KB "Portfolio Margin": the extended table's price moves (vol-up only)
EXTENDED_MOVES = DERIBIT_EXTENDED_MOVES
#: the vol shock is (REFERENCE_DAYS / max(DTE, DTE_FLOOR_DAYS))^power times the vol range
REFERENCE_DAYS = DERIBIT_REFERENCE_DAYS
DTE_FLOOR_DAYS = DERIBIT_DTE_FLOOR_DAYS
#: Deribit states margins to 9 decimals of a coin
DECIMALS = 9

#: ``deribit.pooling``: ``cross`` puts every position of an index (coin-settled and USDC-settled) in one pool
#: valued in coin of the index (Deribit X:PM); ``segregated`` keeps one pool per index and settlement
#: currency, USDC-settled pools valued in USDC (Deribit S:PM). Sources: docs/deribit_grid.md "Pools".
POOLINGS = ("cross", "segregated")
#: the settlement-currency (``model_params.currency.<c>``) parameters; a USDC pool takes them from ``deribit.USDC``
CURRENCY_PARAMS = ("annualised_move_risk", "min_annualised_move", "extended_dampener", "pnl_offset",
                   "max_offsetable_pnl")

#: per-underlying float parameters, in Deribit's ``model_params`` names
FLOAT_PARAMS = (
    "price_range", "volatility_range_up", "volatility_range_down", "min_volatility_for_shock_up",
    "short_term_vega_power", "long_term_vega_power", "extended_table_factor", "annualised_move_risk",
    "min_annualised_move", "extended_dampener", "pnl_offset", "max_offsetable_pnl", "mm_factor", "m_inc",
    "max_delta_shock", "delta_total_liq_shock_threshold",
)
#: allowed range of each parameter (``validate.number`` bounds); the others are >= 0
_BOUNDS = {
    "price_range": dict(low=0.0, high=1.0, low_open=True, high_open=True),
    "volatility_range_down": dict(low=0.0, high=1.0),
    "pnl_offset": dict(low=0.0, high=1.0),
    "mm_factor": dict(low=0.0, low_open=True),
}
_NON_NEGATIVE = dict(low=0.0)


def _check_param(name: str, value, *, source, field) -> float:
    """One parameter value as a float within its range; ``InputError`` naming ``field`` otherwise."""
    return number(value, source=source, field=field, strings=False, **_BOUNDS.get(name, _NON_NEGATIVE))


def _check_buckets(value, *, source, field) -> int:
    return number(value, source=source, field=field, strings=False, integer=True, low=1.0)


def _check_moves(moves, *, source, field) -> list[float]:
    """Extended-table moves: a non-empty list of floats, each > -1 and non-zero."""
    if not isinstance(moves, (list, tuple)) or not moves:
        raise InputError("must be a non-empty list of price moves", source=source, field=field)
    moves = [number(m, source=source, field=field, strings=False) for m in moves]
    if any(m <= -1.0 or m == 0.0 for m in moves):
        raise InputError(f"each move must be > -1 and non-zero, got {moves}", source=source, field=field)
    return moves


class DeribitParams(eqx.Module):
    """Grid parameters, one entry per underlying in ``UNDERLYINGS`` order (shape (u,)); see the module doc."""

    price_range: Float[Array, " u"]  # largest standard move (fraction of price)
    volatility_range_up: Float[Array, " u"]  # relative vol-up shock at 30 days
    volatility_range_down: Float[Array, " u"]  # relative vol-down shock at 30 days
    min_volatility_for_shock_up: Float[Array, " u"]  # floor of the shocked-up vol
    short_term_vega_power: Float[Array, " u"]  # power of 30/DTE below 30 days
    long_term_vega_power: Float[Array, " u"]  # power of 30/DTE from 30 days
    extended_table_factor: Float[Array, " u"]  # scales the extended-table fraction pr/|m|
    annualised_move_risk: Float[Array, " u"]  # roll shock per year to expiry (fraction)
    min_annualised_move: Float[Array, " u"]  # roll shock floor (fraction)
    extended_dampener: Float[Array, " u"]  # USD per price range beyond the standard range
    pnl_offset: Float[Array, " u"]  # share of a scenario gain that counts
    max_offsetable_pnl: Float[Array, " u"]  # cap of the counted gain, USD
    mm_factor: Float[Array, " u"]  # maintenance / risk-matrix margin
    m_inc: Float[Array, " u"]  # delta-shock fraction per coin of net delta beyond the threshold
    max_delta_shock: Float[Array, " u"]  # cap of the delta-shock fraction
    delta_total_liq_shock_threshold: Float[Array, " u"]  # USD of net delta free of delta shock
    extended_moves: Float[Array, " e"]  # extended-table price moves (fractions), shared by all underlyings
    usdc: dict  # CURRENCY_PARAMS of the USDC settlement currency (scalars), used by ``segregated`` pools
    buckets_count: int = eqx.field(static=True)  # B: 2B+1 price points in the standard table
    pooling: str = eqx.field(static=True, default="cross")  # one of POOLINGS

    def __check_init__(self):
        """Invariants, however the params were built: shapes (u,) and (e,), ``buckets_count`` a whole number
        >= 1, each parameter in its range, extended moves > -1 and non-zero (``InputError`` naming the field).
        Values under a jax trace are not checked."""
        source = "DeribitParams"
        _check_buckets(self.buckets_count, source=source, field="buckets_count")
        if self.pooling not in POOLINGS:
            raise InputError(f"must be one of {', '.join(POOLINGS)}, got {self.pooling!r}", source=source,
                             field="pooling")
        if sorted(self.usdc) != sorted(CURRENCY_PARAMS):
            raise InputError(f"must have the keys {', '.join(CURRENCY_PARAMS)}, got {sorted(self.usdc)}",
                             source=source, field="usdc")
        arrays = {k: getattr(self, k) for k in FLOAT_PARAMS + ("extended_moves",)}
        if any(isinstance(x, jax.core.Tracer) for x in arrays.values()):
            return
        for name in FLOAT_PARAMS:
            x = np.asarray(arrays[name], np.float64)
            if x.shape != (len(UNDERLYINGS),):
                raise InputError(f"must have shape ({len(UNDERLYINGS)},), got {x.shape}", source=source, field=name)
            for u, v in zip(UNDERLYINGS, x.tolist()):
                _check_param(name, v, source=source, field=f"{name}[{u}]")
        moves = np.asarray(arrays["extended_moves"], np.float64)
        if moves.ndim != 1:
            raise InputError(f"must have one axis, got shape {moves.shape}", source=source, field="extended_moves")
        _check_moves(moves.tolist(), source=source, field="extended_moves")
        for name, v in self.usdc.items():
            x = np.asarray(v, np.float64)
            if x.shape != ():
                raise InputError(f"must be a number, got shape {x.shape}", source=source, field=f"usdc.{name}")
            _check_param(name, float(x), source=source, field=f"usdc.{name}")

    @property
    def pool_names(self) -> tuple[str, ...]:
        """The pools in result order: one per underlying (``cross``), then one per underlying settled in USDC
        (``segregated``: ``BTC``, ``ETH``, ``BTC_USDC``, ``ETH_USDC``)."""
        if self.pooling == "cross":
            return UNDERLYINGS
        return UNDERLYINGS + tuple(f"{u}_USDC" for u in UNDERLYINGS)

    @property
    def n_standard(self) -> int:
        return (2 * self.buckets_count + 1) * len(VOL_STATES)

    @property
    def vol_rule(self) -> RelativeVolShock:
        """The options' vol shock (``grids.RelativeVolShock``) from these parameters."""
        return RelativeVolShock(self.volatility_range_up, self.volatility_range_down,
                                self.min_volatility_for_shock_up, self.short_term_vega_power,
                                self.long_term_vega_power)

    @property
    def grid(self) -> DeribitGrid:
        """The standard + extended scenarios as data (``grids.deribit_grid``)."""
        return deribit_grid(self.price_range, self.buckets_count, self.vol_rule, self.extended_table_factor,
                            self.extended_moves, dtype=self.price_range.dtype)


class DeribitResult(eqx.Module):
    """The grid's results for one account (every field gains a leading axis under a vmap over accounts).

    Axis p is the pools (``DeribitParams.pool_names``: one per underlying, and with ``segregated`` pooling one
    more per underlying settled in USDC). Vectors are P&L, gain positive, in the pool's currency (coin of the
    underlying, or USDC); margins (``*_coin``) in that currency; ``initial`` and ``maintenance`` in the book's
    margin currency.
    """

    instrument_standard: Float[Array, "n s"]  # per position (Deribit's initial_risk_vectors), its pool's currency
    instrument_extended: Float[Array, "n e"]
    pre_aggregated_standard: Float[Array, "p s"]  # plain sum per pool (pre_aggregated_risk_vectors)
    pre_aggregated_extended: Float[Array, "p e"]
    standard: Float[Array, "p s"]  # after pnl_offset (aggregated_risk_vectors)
    extended: Float[Array, "p e"]  # after the dampener and pnl_offset
    price_moves: Float[Array, "p b"]  # the standard table's 2B+1 moves of the pool's underlying
    worst_case: Float[Array, " p"]
    worst_case_index: Int[Array, " p"]  # into standard ++ extended (ties: the vol-"same" entry of a bucket)
    roll_shock: Float[Array, " p"]
    delta_shock: Float[Array, " p"]
    net_delta: Float[Array, " p"]  # slope of the pool-currency value in the underlying's price scale
    risk_matrix_margin: Float[Array, " p"]
    maintenance_coin: Float[Array, " p"]
    initial_coin: Float[Array, " p"]
    initial: Float[Array, ""]  # sum over pools, margin currency at today's prices
    maintenance: Float[Array, ""]


# ------------------------------------------------------------------------------------------ parameters

def deribit_params(config: dict, *, dtype=jnp.float64) -> DeribitParams:
    """``DeribitParams`` from a merged config's ``deribit:`` section; raises ``InputError`` naming the field."""
    check_dtype(dtype)
    source = config.get("_source", "configs/deribit.yaml")
    section = config.get("deribit")
    if not isinstance(section, dict):
        raise InputError("missing the deribit: section", source=source, field="deribit")
    blocks = {str(k).upper(): v for k, v in section.items() if str(k).upper() in UNDERLYINGS}
    values: dict[str, list[float]] = {k: [] for k in FLOAT_PARAMS}
    buckets = []
    for u in UNDERLYINGS:
        block = blocks.get(u)
        if not isinstance(block, dict):
            raise InputError(f"missing the parameters of {u} (a mapping)", source=source, field=f"deribit.{u}")
        for name in FLOAT_PARAMS + ("buckets_count",):
            field = f"deribit.{u}.{name}"
            if name not in block:
                raise InputError("missing", source=source, field=field)
            if name == "buckets_count":
                buckets.append(_check_buckets(block[name], source=source, field=field))
            else:
                values[name].append(_check_param(name, block[name], source=source, field=field))
    if len(set(buckets)) != 1:
        raise InputError(f"buckets_count must be the same for every underlying (vectors share one layout), got "
                         f"{dict(zip(UNDERLYINGS, buckets))}", source=source, field="deribit.buckets_count")
    moves = _check_moves(section.get("extended_moves", list(EXTENDED_MOVES)), source=source,
                         field="deribit.extended_moves")
    pooling = section.get("pooling", "cross")
    if pooling not in POOLINGS:
        raise InputError(f"must be one of {', '.join(POOLINGS)}, got {pooling!r}", source=source,
                         field="deribit.pooling")
    usdc_block = section.get("USDC")
    if not isinstance(usdc_block, dict):
        raise InputError("missing the USDC settlement-currency parameters (a mapping)", source=source,
                         field="deribit.USDC")
    usdc = {}
    for name in CURRENCY_PARAMS:
        if name not in usdc_block:
            raise InputError("missing", source=source, field=f"deribit.USDC.{name}")
        usdc[name] = _check_param(name, usdc_block[name], source=source, field=f"deribit.USDC.{name}")
    arr = lambda v: jnp.asarray(v, dtype=dtype)  # noqa: E731
    return DeribitParams(**{k: arr(v) for k, v in values.items()}, extended_moves=arr(moves),
                         usdc={k: arr(v) for k, v in usdc.items()}, buckets_count=buckets[0], pooling=pooling)


# ------------------------------------------------------------------------------------------ the core

def _round_half_up(x, decimals: int):
    """Round to ``decimals`` places, halves up, as Deribit states margins; float32 cannot resolve 1e-9 of a
    coin, so there it is left as is (a static choice on the dtype). The gradient passes straight through (the
    rounding's own derivative is 0 almost everywhere, which would hide every marginal margin): x + (r - x) is r
    exactly, r - x being exact for r and x this close (Sterbenz)."""
    if x.dtype != jnp.float64:
        return x
    scale = 10.0 ** decimals
    rounded = jnp.floor(x * scale + 0.5) / scale
    return x + jax.lax.stop_gradient(rounded - x)


def _as_usd_book(book: Book) -> Book:
    return eqx.tree_at(lambda b: b.margin_coin, book, jnp.full_like(book.margin_coin, -1))


def _sum_by_pool(x, member):
    """x (..., n) summed over the positions of each pool -> (..., p); no matmul (TF32 on GPUs). One masked sum
    over the last axis per pool (p is 2 or 4, static): a reduction over a contiguous axis, where summing a
    (..., n, p) mask over n was most of a small book's grid on CPU."""
    return jnp.stack([jnp.sum(jnp.where(member[:, k], x, 0.0), axis=-1) for k in range(member.shape[-1])], axis=-1)


class _Pools(eqx.Module):
    """Which pool each position is in and what each pool is (static layout from ``DeribitParams.pooling``)."""

    of_position: Int[Array, " n"]  # pool of each position
    underlying: Int[Array, " p"]  # the index (underlying) of each pool
    in_usd: Bool[Array, " p"]  # valued in USDC (segregated USDC-settled pool) rather than in coin
    currency: dict  # CURRENCY_PARAMS per pool, each (p,)


def _pools(book: Book, params: DeribitParams) -> _Pools:
    n_und = len(UNDERLYINGS)
    und = book.underlying
    block = {k: getattr(params, k) for k in CURRENCY_PARAMS}
    if params.pooling == "cross":
        return _Pools(und, jnp.arange(n_und, dtype=und.dtype), jnp.zeros(n_und, bool), block)
    # coins held (spot) are the coin's balance, not a USDC-settled product
    usdc = ~book.inverse & (book.kind != SPOT)
    twice = lambda x: jnp.concatenate([x, x])  # noqa: E731
    currency = {k: jnp.concatenate([v, jnp.full_like(v, params.usdc[k])]) for k, v in block.items()}
    return _Pools(jnp.where(usdc, und + n_und, und), twice(jnp.arange(n_und, dtype=und.dtype)),
                  jnp.arange(2 * n_und) >= n_und, currency)


def _to_margin(book: Book, pools: _Pools):
    """Margin currency per unit of each pool's currency at today's prices (coin u -> USD at S_u -> margin
    coin; USDC -> margin coin)."""
    S = book.underlying_spot
    mc = book.margin_coin
    coin_usd = jnp.where(mc >= 0, S[jnp.maximum(mc, 0)], 1.0)
    own = pools.underlying == mc
    return jnp.where(pools.in_usd, 1.0 / coin_usd, jnp.where(own, 1.0, S[pools.underlying] / coin_usd))


#: books of at most this many rows find their roll-shock groups by pairwise comparison, larger ones by a sort
PAIRWISE_GROUPS = 128


def _roll_groups(book: Book, pools: _Pools):
    """(each position's roll-shock group: the row of the group's first member; roll rate of each position, per
    coin of net delta). A group is one expiry of one pool; a perpetual is its own group (T = 0)."""
    pool = pools.of_position
    T = book.expiry_years
    perp = book.kind == PERPETUAL
    n = pool.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    if n <= PAIRWISE_GROUPS:  # small books (the monitor's): an n x n comparison, vectorised (a sort is not on CPU)
        same = (pool[:, None] == pool[None, :]) & (T[:, None] == T[None, :]) & (perp[:, None] == perp[None, :])
        group = jnp.min(jnp.where(same, rows[None, :], n), axis=1).astype(jnp.int32)
    else:  # sorting on (pool, T, perpetual, row): O(n log n), not n x n (10,000 positions: 8 s warm)
        group = _first_of_group_sorted(pool, T, perp, rows)
    rate = jnp.maximum(pools.currency["min_annualised_move"][pool], pools.currency["annualised_move_risk"][pool] * T)
    return group, rate


def _first_of_group_sorted(pool, T, perp, rows):
    """Each row's group's first row, groups (pool, T, perpetual), by one lexsort."""
    n = rows.shape[0]
    order = jnp.lexsort((rows, perp, T, pool))
    sp, sT, sperp = pool[order], T[order], perp[order]
    new = jnp.concatenate([jnp.ones(1, bool), (sp[1:] != sp[:-1]) | (sT[1:] != sT[:-1]) | (sperp[1:] != sperp[:-1])])
    start = jax.lax.cummax(jnp.where(new, rows, 0))
    return jnp.zeros(n, jnp.int32).at[order].set(order[start].astype(jnp.int32))


def _roll_and_delta_shocks(book: Book, params: DeribitParams, pools: _Pools, delta, member):
    """(roll shock, net delta, delta shock), each (p,), from each position's delta (n,) in its pool's currency."""
    S = book.underlying_spot
    # roll shock: per expiry group, |net delta| x rate, each group once
    group, rate = _roll_groups(book, pools)
    n = group.shape[0]
    first = group == jnp.arange(n, dtype=group.dtype)
    group_delta = jax.ops.segment_sum(delta, group, num_segments=n)[group]
    roll = _sum_by_pool(jnp.where(first, jnp.abs(group_delta) * rate, 0.0), member)

    # delta shock on the net delta beyond the liquidity threshold (USD); its size in coins of the index
    u = pools.underlying
    net_delta = _sum_by_pool(delta, member)
    delta_usd = jnp.abs(net_delta) * jnp.where(pools.in_usd, 1.0, S[u])
    beyond = jnp.maximum(delta_usd - params.delta_total_liq_shock_threshold[u], 0.0) / S[u]
    delta_shock = jnp.abs(net_delta) * jnp.minimum(params.max_delta_shock[u], params.m_inc[u] * beyond)
    return roll, net_delta, delta_shock


def _extended_dampener(book: Book, params: DeribitParams, pools: _Pools, grid: DeribitGrid):
    """(p, e): how far each pool's extended entry shrinks towards 0, in the pool's currency:
    (|m|/pr - 1) ``extended_dampener`` / (unit price today x edge price factor)."""
    u, S = pools.underlying, book.underlying_spot
    ext = grid.price_move[u, grid.n_standard:]  # (p, e)
    prU = params.price_range[u][:, None]
    unit_today = jnp.where(pools.in_usd, 1.0, S[u])[:, None]  # USD per unit of the pool's currency
    excess_ranges = jnp.maximum(jnp.abs(ext) / prU, 1.0) - 1.0
    edge = jnp.where(pools.in_usd[:, None], 1.0, 1.0 + jnp.sign(ext) * prU)
    return excess_ranges * pools.currency["extended_dampener"][:, None] / (unit_today * edge)


def _position_pnl(book: Book, grid: DeribitGrid, pools: _Pools):
    """(s + e, n): each position's P&L in every scenario of both tables, in its pool's currency (coin of its
    underlying valued at that scenario's coin price, or USDC), each extended entry times its weight f pr/|m|
    (and, for coin, converted at the edge price)."""
    und, S = book.underlying, book.underlying_spot
    in_usd = pools.in_usd[pools.of_position]
    usd_book = _as_usd_book(book)
    shocks = grid.shocks(book)  # (s + e,) through the kernel, like SPAN's grid
    value_usd = jax.vmap(position_values, in_axes=(None, 0))(usd_book, shocks)  # (s + e, n)
    unit_price = jnp.where(in_usd[None, :], 1.0, (S[None, :] * shocks.spot_scale)[:, und])
    today = position_values(usd_book, no_shock(usd_book)) / jnp.where(in_usd, 1.0, S[und])
    weight = jnp.where(in_usd[None, :], grid.weight_usd[und].T, grid.weight[und].T)
    return (value_usd / unit_price - today[None, :]) * weight


def _position_delta(book: Book, pools: _Pools):
    """(n,): slope of each position's pool-currency value in its underlying's price scale (scale 1 -> 1 + ds)."""
    dtype = book.quantity.dtype
    und, S = book.underlying, book.underlying_spot
    in_usd = pools.in_usd[pools.of_position]
    usd_book = _as_usd_book(book)
    zero = jnp.zeros((), dtype)

    def pool_values(s):
        v = position_values(usd_book, Shock(s, jnp.zeros_like(book.quantity), zero, zero))
        return v / jnp.where(in_usd, 1.0, (S * s)[und])

    ones = jnp.ones_like(S)
    return jax.jvp(pool_values, (ones,), (ones,))[1]


class DeribitTerms(eqx.Module):
    """What the grid reads of each row that is proportional to its quantity, in its pool's currency: the P&L in
    every scenario (standard table, then the weighted extended one) and the net delta. ``deribit_from_terms``
    takes them from elsewhere: the monitor values each contract once and scales by every account's quantity."""

    pnl: Float[Array, "se n"]
    delta: Float[Array, " n"]


def deribit_terms(book: Book, params: DeribitParams) -> DeribitTerms:
    """Every row's ``DeribitTerms`` (quantity included)."""
    pools = _pools(book, params)
    return DeribitTerms(_position_pnl(book, params.grid, pools), _position_delta(book, pools))


def deribit_margin(book: Book, params: DeribitParams) -> DeribitResult:
    """The grid for one account, add-ons 0 (see docs/methodology.md section 6). Pure: jit it, or vmap it over
    books stacked on a leading accounts axis with ``in_axes=(0, None)``."""
    return deribit_from_terms(book, params, deribit_terms(book, params))


def deribit_from_terms(book: Book, params: DeribitParams, terms: DeribitTerms) -> DeribitResult:
    """The grid of ``book`` from its rows' ``terms`` (``deribit_terms(book, params)`` or the same figures computed
    another way); of the rows' market data only ``expiry_years`` and ``underlying_spot`` are read."""
    pools = _pools(book, params)
    pool, u = pools.of_position, pools.underlying
    member = pool[:, None] == jnp.arange(u.shape[0], dtype=pool.dtype)[None, :]  # (n, p)
    grid = params.grid  # the scenarios as data: standard table, then the extended one
    n_std = grid.n_standard

    standard, extended = terms.pnl[:n_std], terms.pnl[n_std:]
    moves = grid.price_move[u, :n_std:len(VOL_STATES)]  # (p, 2B+1)

    # aggregation per pool: plain sum, then the dampener (extended) and pnl_offset (USD amounts in pool units)
    pre_std = _sum_by_pool(standard, member).T  # (p, s)
    pre_ext = _sum_by_pool(extended, member).T  # (p, e)
    dampener = _extended_dampener(book, params, pools, grid)
    damped = jnp.where(jnp.abs(pre_ext) > dampener, pre_ext - jnp.sign(pre_ext) * dampener, 0.0)  # towards 0
    unit_today = jnp.where(pools.in_usd, 1.0, book.underlying_spot[u])[:, None]
    cap = pools.currency["max_offsetable_pnl"][:, None] / unit_today
    pnl_offset = pools.currency["pnl_offset"][:, None]
    offset = lambda x: jnp.where(x > 0.0, jnp.minimum(x * pnl_offset, cap), x)  # noqa: E731
    agg_std, agg_ext = offset(pre_std), offset(damped)

    # worst case over both tables; among ties, the vol-"same" entry of a standard bucket (as Deribit reports)
    both = jnp.concatenate([agg_std, agg_ext], axis=1)
    lowest = jnp.min(both, axis=1)
    worst = jnp.maximum(-lowest, 0.0)
    is_low = both == lowest[:, None]
    preferred = is_low & (~grid.is_extended & (grid.vol_state == VOL_SAME))[None, :]
    worst_index = jnp.where(preferred.any(axis=1), jnp.argmax(preferred, axis=1), jnp.argmax(is_low, axis=1))

    roll, net_delta, delta_shock = _roll_and_delta_shocks(book, params, pools, terms.delta, member)
    rmm = _round_half_up(worst, DECIMALS) + roll + delta_shock  # + correlation contingency (0: not set)
    maintenance = params.mm_factor[u] * rmm
    initial = _round_half_up(rmm, DECIMALS)
    to_margin = _to_margin(book, pools)  # to the margin currency at today's prices
    return DeribitResult(
        instrument_standard=standard.T, instrument_extended=extended.T,
        pre_aggregated_standard=pre_std, pre_aggregated_extended=pre_ext,
        standard=agg_std, extended=agg_ext, price_moves=moves,
        worst_case=worst, worst_case_index=worst_index, roll_shock=roll, delta_shock=delta_shock,
        net_delta=net_delta, risk_matrix_margin=rmm, maintenance_coin=maintenance, initial_coin=initial,
        initial=jnp.sum(initial * to_margin), maintenance=jnp.sum(maintenance * to_margin),
    )


class DeribitLinearTerms(eqx.Module):
    """The parts of the grid that are linear in the quantities, per coin of each row (what a hedge's linear
    program reads; ``pmjax.apps.hedge``). Pool currency unless stated."""

    pool: Int[Array, " n"]  # pool of each row
    standard: Float[Array, "n s"]  # P&L per coin in each standard scenario
    extended: Float[Array, "n e"]  # weighted P&L per coin in each extended scenario
    dampener: Float[Array, "p e"]  # how far each pool's extended entry shrinks towards 0
    delta: Float[Array, " n"]  # net delta per coin
    roll_group: Int[Array, " n"]  # roll-shock group (its first row)
    roll_rate: Float[Array, " n"]  # roll shock per coin of the group's net delta
    to_margin: Float[Array, " p"]  # margin currency per unit of the pool's currency


def deribit_linear_terms(book: Book, params: DeribitParams) -> DeribitLinearTerms:
    """Per coin of every row of ``book`` (its quantities are ignored): the scenario P&L, deltas and roll groups
    from which ``deribit_margin``'s worst case (with the dampener and the pnl_offset, both piecewise linear) and
    roll shock follow for any quantities; the delta shock and the 9-decimal rounding are not linear."""
    ones = eqx.tree_at(lambda b: b.quantity, book, jnp.ones_like(book.quantity))
    pools = _pools(ones, params)
    grid = params.grid
    pnl = _position_pnl(ones, grid, pools)
    group, rate = _roll_groups(ones, pools)
    return DeribitLinearTerms(pools.of_position, pnl[:grid.n_standard].T, pnl[grid.n_standard:].T,
                              _extended_dampener(ones, params, pools, grid), _position_delta(ones, pools), group,
                              rate, _to_margin(ones, pools))


def add_initial_addons(result: DeribitResult, book: Book, params: DeribitParams, initial_addons) -> DeribitResult:
    """``result`` with amounts per pool (shape (p,), in each pool's currency: Deribit's mmp_margin +
    open_orders_margin + spot_margin) added to the initial margin: initial_coin = round9(risk-matrix margin + add-ons). Pure; jit it
    together with ``deribit_margin`` for bitwise the figures of one call."""
    initial = _round_half_up(result.risk_matrix_margin + initial_addons, DECIMALS)
    result = eqx.tree_at(lambda r: r.initial_coin, result, initial)
    return eqx.tree_at(lambda r: r.initial, result, jnp.sum(initial * _to_margin(book, _pools(book, params))))


# ------------------------------------------------------------------------------------------ report

def _floats(x) -> list:
    return np.asarray(x, np.float64).tolist()


def _worst_case_bucket(index: int, params: DeribitParams, u: int) -> dict:
    """Deribit's ``worst_case_bucket`` for an index into standard ++ extended (bucket numbered from 1)."""
    n_std = params.n_standard
    if index < n_std:
        bucket = index // len(VOL_STATES)
        move = (bucket - params.buckets_count) * float(params.price_range[u]) / params.buckets_count
        return {"bucket": bucket + 1, "side": "left" if move < 0 else "right" if move > 0 else "centre",
                "source": "standard", "index": index, "vol_state": VOL_STATES[index % len(VOL_STATES)]}
    k = index - n_std
    move = float(params.extended_moves[k])
    return {"bucket": k + 1, "side": "left" if move < 0 else "right", "source": "extended", "index": k,
            "vol_state": "up"}


def _pool_of(position, params: DeribitParams) -> int:
    """Index into ``params.pool_names`` of a resolved position (as ``_pools`` assigns it)."""
    inst = position.instrument
    u = UNDERLYINGS.index(inst.underlying)
    usdc = params.pooling == "segregated" and inst.settlement == "linear" and inst.kind != "spot"
    return u + len(UNDERLYINGS) * usdc


def _settlement_name(position) -> str:
    inst = position.instrument
    return "USDC" if inst.settlement == "linear" and inst.kind != "spot" else inst.underlying


def deribit_section(result: DeribitResult, resolved, margin_currency: str, params: DeribitParams) -> dict:
    """SPEC section 3's ``deribit`` section from one account's ``DeribitResult`` (no accounts axis; host or
    device arrays) and its resolved positions (``pmjax.core.book.ResolvedPosition``, in book order).

    ``by_underlying[POOL]`` (pools holding positions: ``BTC``, ``ETH``, and with segregated pooling
    ``BTC_USDC``, ``ETH_USDC``): the aggregated vectors (``standard``: 3 (2B+1) entries, index 3 i + j for
    price point i and vol state j in up/same/down; ``extended``), their ``pre_aggregated`` sums, worst case,
    roll and delta shocks, risk-matrix margin, ``initial``/``maintenance``, all in the pool's ``currency``;
    ``settlements``: the settlement currencies of its positions. ``by_instrument``: each position's vectors.
    ``initial``/``maintenance``: in the margin currency; ``pooling``: ``cross`` or ``segregated``."""
    r = jax.tree_util.tree_map(np.asarray, result)
    names = params.pool_names
    pool_of = [_pool_of(p, params) for p in resolved]
    by_underlying = {}
    for i, name in enumerate(names):
        members = [p for p, k in zip(resolved, pool_of) if k == i]
        if not members:
            continue
        u = i % len(UNDERLYINGS)
        by_underlying[name] = {
            "currency": "USDC" if i >= len(UNDERLYINGS) else name,
            "settlements": sorted({_settlement_name(p) for p in members}),
            "standard": _floats(r.standard[i]), "extended": _floats(r.extended[i]),
            "worst_case": float(r.worst_case[i]), "roll_shock": float(r.roll_shock[i]),
            "delta_shock": float(r.delta_shock[i]), "risk_matrix_margin": float(r.risk_matrix_margin[i]),
            "initial": float(r.initial_coin[i]), "maintenance": float(r.maintenance_coin[i]),
            "net_delta": float(r.net_delta[i]),
            "worst_case_bucket": _worst_case_bucket(int(r.worst_case_index[i]), params, u),
            "pre_aggregated": {"standard": _floats(r.pre_aggregated_standard[i]),
                               "extended": _floats(r.pre_aggregated_extended[i])},
            "price_moves": _floats(r.price_moves[i]),
        }
    by_instrument = {
        p.instrument.name: {"underlying": p.instrument.underlying, "pool": names[k], "quantity": p.quantity,
                            "standard": _floats(r.instrument_standard[j]),
                            "extended": _floats(r.instrument_extended[j])}
        for j, (p, k) in enumerate(zip(resolved, pool_of))}
    return {"by_underlying": by_underlying, "initial": float(r.initial), "maintenance": float(r.maintenance),
            "currency": margin_currency, "pooling": params.pooling, "vol_states": list(VOL_STATES),
            "extended_moves": _floats(params.extended_moves), "by_instrument": by_instrument}
