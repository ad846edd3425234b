"""SPAN margin (SPEC section 5; formulas: docs/methodology.md section 5): risk arrays, scan risk,
composite delta, intra-commodity tiers, spot charge, inter-commodity credits, short option minimum and
net option value.

Three doors: ``span_params(config, dtype=...)`` -> ``SpanParams`` (per-underlying arrays, tiers padded with
+inf; invariants checked in ``SpanParams.__check_init__``); ``span_margin(book, params)`` -> ``SpanResult``,
one pure, branch-free function of a ``Book`` that callers jit, vmap over a leading accounts axis
(``jax.jit(jax.vmap(span_margin, in_axes=(0, None)))``) or shard (``pmjax.batch.sharding.map_accounts``);
``span_section(result, ...)`` -> the SPEC section 3 ``span`` JSON section.

Units: risk arrays and every margin figure are in the book's margin currency (losses positive);
composite deltas are in coins of the underlying.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from pmjax.core.book import FUTURE, OPTION, Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import no_shock, own_underlying_values, position_values
from pmjax.core.units import DAY, DAYS_PER_YEAR, SECONDS_PER_DAY
from pmjax.core.validate import config_number, finite_number, underlying_mapping
from pmjax.core.precision import check_dtype
from pmjax.measures.span_rules import CommodityCharges, SpanResult, commodity_row, span_rules
from pmjax.scenarios.grids import (
    COMPOSITE_DELTA_STEPS,
    COMPOSITE_DELTA_WEIGHTS,
    VOL_FLOOR,
    Grid,
    own_underlying_losses,
    span_grid,
)

#: per-underlying keys of the config's ``span.underlyings.<U>`` mapping
UNDERLYING_KEYS = ("price_scan_range", "vol_scan_range", "extreme_move_multiple", "extreme_cover_fraction",
                   "short_option_minimum", "tiers_days", "intra_spread_rate", "spot_days", "spot_rate")
#: the (u,) fields of ``SpanParams``, in the config's order
_PER_UNDERLYING = ("price_scan_range", "vol_scan_range", "extreme_move_multiple", "extreme_cover_fraction",
                   "short_option_minimum", "intra_spread_rate", "spot_days", "spot_rate")


def _concrete(*xs) -> bool:
    """Whether every array is a value (not a tracer inside jit/vmap/grad), so it can be checked now."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _invalid(field: str, message: str):
    raise InputError(message, source="SpanParams", field=field)


class SpanParams(eqx.Module):
    """SPAN parameters as arrays: (u,) per underlying in ``UNDERLYINGS`` order; (p, 2) per inter spread.
    Leading batch axes are allowed (e.g. one parameter set per day); ``__check_init__`` checks shapes
    always and values whenever they are concrete."""

    price_scan_range: Float[Array, "*b u"]  # fraction of spot, in (0, 1]
    vol_scan_range: Float[Array, "*b u"]  # absolute vol (0.10 = 10 vol points)
    extreme_move_multiple: Float[Array, "*b u"]  # price_scan_range * multiple < 1
    extreme_cover_fraction: Float[Array, "*b u"]  # in [0, 1]
    short_option_minimum: Float[Array, "*b u"]  # fraction of spot per coin short
    intra_spread_rate: Float[Array, "*b u"]  # fraction of spot per coin of spread
    spot_days: Float[Array, "*b u"]
    spot_rate: Float[Array, "*b u"]  # fraction of spot per coin of near-expiry delta
    som_gross: Float[Array, "*b u"]  # 1: SOM on all short options (gross); 0: on the larger of calls, puts (max)
    tiers_days: Float[Array, "*b u k"]  # tier boundaries in days, positive, increasing, padded with +inf
    horizon_days: Float[Array, "*b"]
    inter_legs: Int[Array, "*b p 2"]  # underlying indices of the two legs
    inter_ratios: Float[Array, "*b p 2"]  # coins of delta per spread, per leg, > 0
    inter_credit_rate: Float[Array, "*b p"]  # in [0, 1]

    @property
    def grid(self) -> Grid:
        return span_grid(self.price_scan_range, self.vol_scan_range, self.extreme_move_multiple,
                         self.extreme_cover_fraction, self.horizon_days, vol_floor=VOL_FLOOR,
                         dtype=self.price_scan_range.dtype)

    def __check_init__(self):
        self._check_shapes()
        if _concrete(*jax.tree_util.tree_leaves(self)):
            self._check_values()

    def _check_shapes(self):
        n_und = len(UNDERLYINGS)
        for k in _PER_UNDERLYING + ("som_gross",):
            if jnp.shape(getattr(self, k))[-1:] != (n_und,):
                _invalid(k, f"expected a last axis of {n_und} underlyings, got shape {jnp.shape(getattr(self, k))}")
        if jnp.shape(self.tiers_days)[-2:-1] != (n_und,):
            _invalid("tiers_days", f"expected shape (..., {n_und}, k), got {jnp.shape(self.tiers_days)}")
        n_pairs = jnp.shape(self.inter_legs)[-2:-1]
        if jnp.shape(self.inter_legs)[-1:] != (2,) or jnp.shape(self.inter_ratios)[-2:] != n_pairs + (2,) \
                or jnp.shape(self.inter_credit_rate)[-1:] != n_pairs:
            _invalid("inter_legs", "inter_legs, inter_ratios must be (p, 2) and inter_credit_rate (p,)")

    def _check_values(self):
        v = {k: np.asarray(getattr(self, k), np.float64) for k in _PER_UNDERLYING + ("horizon_days",)}
        for k, x in v.items():
            if not np.all(np.isfinite(x) & (x >= 0)):
                _invalid(k, f"must be finite and >= 0, got {x.tolist()}")
        if not np.all((v["price_scan_range"] > 0) & (v["price_scan_range"] <= 1)):
            _invalid("price_scan_range", f"must be in (0, 1], got {v['price_scan_range'].tolist()}")
        if not np.all(np.isin(np.asarray(self.som_gross, np.float64), (0.0, 1.0))):
            _invalid("som_gross", "must be 0 (som_method max) or 1 (gross)")
        if not np.all(v["extreme_cover_fraction"] <= 1):
            _invalid("extreme_cover_fraction", f"must be in [0, 1], got {v['extreme_cover_fraction'].tolist()}")
        if not np.all(v["price_scan_range"] * v["extreme_move_multiple"] < 1):
            _invalid("extreme_move_multiple", "price_scan_range * extreme_move_multiple must be < 1")
        t = np.asarray(self.tiers_days, np.float64)
        if np.any(np.isnan(t)) or np.any(t <= 0) or np.any((np.diff(t, axis=-1) <= 0) & np.isfinite(t[..., 1:])):
            _invalid("tiers_days", "must be positive and increasing (padded with +inf)")
        legs = np.asarray(self.inter_legs)
        if np.any((legs < 0) | (legs >= len(UNDERLYINGS))) or np.any(legs[..., 0] == legs[..., 1]):
            _invalid("inter_legs", f"legs must be two different underlying indices, got {legs.tolist()}")
        ratios, rate = np.asarray(self.inter_ratios, np.float64), np.asarray(self.inter_credit_rate, np.float64)
        if not np.all(np.isfinite(ratios) & (ratios > 0)):
            _invalid("inter_ratios", f"must be finite and > 0, got {ratios.tolist()}")
        if not np.all((rate >= 0) & (rate <= 1)):
            _invalid("inter_credit_rate", f"must be in [0, 1], got {rate.tolist()}")


# ---------------------------------------------------------------- parameters

_number = config_number  # d[key] of a config mapping, InputError naming where.key


#: ``span.underlyings.<U>.som_method``: the short option minimum on the larger of short calls and short puts
#: (``max``, the default) or on all short options (``gross``); docs/methodology.md section 5
SOM_METHODS = ("max", "gross")


def som_method(d: dict, where: str, source: str) -> str:
    """``som_method`` of a commodity mapping (default ``max``); ``InputError`` naming the field otherwise."""
    m = str(d.get("som_method", "max")).lower()
    if m not in SOM_METHODS:
        raise InputError(f"som_method must be max or gross, got {d.get('som_method')!r}", source=source,
                         field=f"{where}.som_method")
    return m


def _underlying_row(d, where: str, source: str) -> tuple[list[float], list[float]]:
    """One underlying's (u,) values in ``_PER_UNDERLYING`` order, and its tier boundaries (days)."""
    if not isinstance(d, dict):
        raise InputError(f"missing SPAN parameters for {where.rsplit('.', 1)[-1]}", source=source, field=where)
    unit = {"low": 0.0, "high": 1.0}
    row = [_number(d, "price_scan_range", where, source, low=0.0, low_open=True, high=1.0),
           _number(d, "vol_scan_range", where, source, low=0.0),
           _number(d, "extreme_move_multiple", where, source, low=0.0),
           _number(d, "extreme_cover_fraction", where, source, **unit)]
    row += [_number(d, k, where, source, low=0.0) for k in _PER_UNDERLYING[4:]]
    if row[0] * row[2] >= 1.0:
        raise InputError(f"price_scan_range * extreme_move_multiple must be < 1 (a move of -100% or more), got "
                         f"{row[0] * row[2]:g}", source=source, field=f"{where}.extreme_move_multiple")
    t = d.get("tiers_days", [])
    if not isinstance(t, list):
        raise InputError("tiers_days must be a list of days", source=source, field=f"{where}.tiers_days")
    t = [finite_number(x, source=source, field=f"{where}.tiers_days") for x in t]
    if any(x <= 0 for x in t) or any(b <= a for a, b in zip(t, t[1:])):
        raise InputError(f"tiers_days must be positive and increasing, got {t}", source=source,
                         field=f"{where}.tiers_days")
    return row, t


def _inter_spreads(span: dict, source: str):
    """(legs, ratios, rates) of ``span.inter_spreads``, in config order."""
    legs, ratios, rates = [], [], []
    inter = span.get("inter_spreads") or []
    if not isinstance(inter, list):
        raise InputError("inter_spreads must be a list", source=source, field="span.inter_spreads")
    for j, s in enumerate(inter):
        where = f"span.inter_spreads[{j}]"
        if not isinstance(s, dict) or not isinstance(s.get("legs"), dict) or len(s["legs"]) != 2:
            raise InputError("an inter spread needs legs: {A: ratio, B: ratio} (two underlyings) and credit_rate",
                             source=source, field=where)
        names = [str(u).upper() for u in s["legs"]]
        for u in names:
            if u not in UNDERLYINGS:
                raise InputError(f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=source,
                                 field=f"{where}.legs")
        if names[0] == names[1]:
            raise InputError("the two legs must be different underlyings", source=source, field=f"{where}.legs")
        legs.append([UNDERLYINGS.index(u) for u in names])
        leg_d = {str(u).upper(): v for u, v in s["legs"].items()}
        ratios.append([_number(leg_d, u, f"{where}.legs", source, low=0.0, low_open=True) for u in names])
        rates.append(_number(s, "credit_rate", where, source, low=0.0, high=1.0))
    return legs, ratios, rates


def span_params(config: dict, *, dtype=jnp.float64) -> SpanParams:
    """``SpanParams`` from a config (``pmjax.io.config.load_config``): its ``span`` section and ``horizon_days``.

    Raises ``InputError`` naming the file and field for anything missing or out of range.
    """
    check_dtype(dtype)
    source = config.get("_source", "config")
    span = config.get("span")
    if not isinstance(span, dict):
        raise InputError("missing span section", source=source, field="span")
    unds = underlying_mapping(span, "span", source, UNDERLYINGS)
    rows, tiers = zip(*[_underlying_row(unds.get(u), f"span.underlyings.{u}", source) for u in UNDERLYINGS])
    gross = [float(som_method(unds[u], f"span.underlyings.{u}", source) == "gross") for u in UNDERLYINGS]
    k = max(1, max(len(t) for t in tiers))
    tiers_arr = np.full((len(UNDERLYINGS), k), np.inf)
    for i, t in enumerate(tiers):
        tiers_arr[i, :len(t)] = t
    horizon = _number(config, "horizon_days", "", source, low=0.0) if "horizon_days" in config else 1.0
    legs, ratios, rates = _inter_spreads(span, source)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    cols = np.asarray(rows, dtype=np.float64).T
    return SpanParams(
        **{k: f(cols[i]) for i, k in enumerate(_PER_UNDERLYING)}, som_gross=f(gross), tiers_days=f(tiers_arr),
        horizon_days=f(horizon),
        inter_legs=jnp.asarray(np.asarray(legs, dtype=np.int32).reshape(-1, 2)),
        inter_ratios=f(np.asarray(ratios, dtype=np.float64).reshape(-1, 2)),
        inter_credit_rate=f(np.asarray(rates, dtype=np.float64).reshape(-1)),
    )


# ---------------------------------------------------------------- numeric core

def _days(book: Book):
    """Days to expiry, nudged up by a few ulps so an expiry exactly on a boundary (30.0 days computed
    as 29.999999999999996) counts as reaching it."""
    d = book.expiry_years * DAYS_PER_YEAR
    return d + jnp.maximum(d, 1.0) * (1024 * jnp.finfo(d.dtype).eps)


def position_composite_deltas(book: Book, params: SpanParams) -> Float[Array, " n"]:
    """Composite delta of each position, coins (quantity included): its delta averaged over price moves
    -1..+1 price scan ranges (weights 0.037..0.270..0.037), vol unchanged, time advanced the horizon.

    Delta is the derivative of the position's margin-currency value with respect to its underlying's
    spot (forwards scaling in proportion), times the scenario's margin-coin price: for a USD margin
    currency the USD delta; for a coin margin currency the delta of the coin value in coin-equivalents,
    so the margin coin itself (spot) has delta 0 in its own currency, as it carries no risk there.
    As in the scan, a price point of underlying u moves only u.
    """
    dtype = book.quantity.dtype
    dt = params.horizon_days * DAY
    no_vol_shift = jnp.zeros_like(book.quantity)
    coin = jnp.maximum(book.margin_coin, 0)
    own_coin = book.underlying == coin
    range_of_position = params.price_scan_range[book.underlying]

    def delta_at(step):
        """Per-position delta with each position's underlying at ``step`` price scan ranges."""
        scale = 1.0 + step * range_of_position
        values = lambda sc: own_underlying_values(book, sc, no_vol_shift, dt)  # noqa: E731
        # values are elementwise in positions: one forward pass with unit tangents gives every d value_p / d scale_p
        d_scale = jax.jvp(values, (scale,), (jnp.ones_like(scale),))[1]
        coin_price = jnp.where(book.margin_coin >= 0,
                               book.underlying_spot[coin] * jnp.where(own_coin, scale, 1.0), 1.0)
        return d_scale * coin_price / book.spot

    deltas = jax.vmap(delta_at)(jnp.asarray(COMPOSITE_DELTA_STEPS, dtype))  # (7, n)
    return jnp.asarray(COMPOSITE_DELTA_WEIGHTS, dtype) @ deltas


def _usd_to_margin(book: Book):
    """Margin currency per USD at today's prices."""
    spot_u = book.underlying_spot
    return jnp.where(book.margin_coin >= 0, 1.0 / spot_u[jnp.maximum(book.margin_coin, 0)],
                     jnp.ones((), spot_u.dtype))


class SpanTerms(eqx.Module):
    """What SPAN reads of each row that is proportional to its quantity (margin currency): the scan's losses, the
    composite delta (coins) and today's value. ``span_from_terms`` takes them from elsewhere: the monitor values
    each contract once (quantity 1) and scales by every account's quantity."""

    losses: Float[Array, "16 n"]  # weighted loss in each scenario of the row's own underlying
    composite_delta: Float[Array, " n"]
    value: Float[Array, " n"]


def span_terms(book: Book, params: SpanParams) -> SpanTerms:
    """Every row's ``SpanTerms`` (quantity included)."""
    return SpanTerms(own_underlying_losses(book, params.grid), position_composite_deltas(book, params),
                     position_values(book, no_shock(book)))


def span_margin(book: Book, params: SpanParams) -> SpanResult:
    """SPAN for one account's book (SPEC section 5; formulas: docs/methodology.md section 5). Pure and
    branch-free: jit it, or ``jax.jit(jax.vmap(span_margin, in_axes=(0, None)))`` over accounts."""
    return span_from_terms(book, params, span_terms(book, params))


def span_from_terms(book: Book, params: SpanParams, terms: SpanTerms) -> SpanResult:
    """SPAN of ``book`` from its rows' ``terms`` (``span_terms(book, params)``, or the same figures computed
    another way); the rows' market data other than ``expiry_years`` and ``underlying_spot`` are not read."""
    dtype = book.quantity.dtype
    n_und = len(UNDERLYINGS)
    und_index = jnp.arange(n_und, dtype=book.underlying.dtype)
    one_hot = (book.underlying[:, None] == und_index[None, :]).astype(dtype)  # (n, u)
    spot_u = book.underlying_spot
    usd_to_mc = _usd_to_margin(book)

    pos_losses, cd = terms.losses, terms.composite_delta  # (16, n), (n,)
    days = _days(book)
    dated = (book.kind == OPTION) | (book.kind == FUTURE)  # spot and perpetuals go to the first tier
    tier = jnp.where(dated, jnp.sum(params.tiers_days[book.underlying] <= days[:, None], axis=1, dtype=jnp.int32), 0)
    near = dated & (days < params.spot_days[book.underlying])  # spot charge: options and futures inside spot_days
    is_option = book.kind == OPTION
    short = jnp.maximum(-book.quantity, 0.0)
    short_calls = (short * (is_option & book.is_call).astype(dtype)) @ one_hot
    short_puts = (short * (is_option & ~book.is_call).astype(dtype)) @ one_hot
    per_coin = spot_u * usd_to_mc  # charges stated as fractions of spot, in the margin currency
    charges = CommodityCharges(params.intra_spread_rate * per_coin, params.spot_rate * per_coin,
                               params.short_option_minimum * per_coin, params.som_gross > 0.5, params.inter_legs,
                               params.inter_ratios, params.inter_credit_rate)
    return span_rules(pos_losses, cd, tier, near, one_hot, params.tiers_days.shape[1] + 1, short_calls, short_puts,
                      is_option, terms.value, charges)


class SpanLinearTerms(eqx.Module):
    """The parts of SPAN that are linear in the quantities, per coin of each row (what a hedge's linear program
    reads; ``pmjax.apps.hedge``). Margin currency unless stated."""

    risk_array: Float[Array, "16 n"]  # weighted loss per coin in each scenario (of the row's own underlying)
    near_delta: Float[Array, " n"]  # composite delta per coin of rows in the spot month (0 elsewhere), coins
    spot_charge_rate: Float[Array, " u"]  # spot charge per coin of net spot-month composite delta
    option_value: Float[Array, " n"]  # today's value per coin of options (0 elsewhere): NOV's part


def span_linear_terms(book: Book, params: SpanParams) -> SpanLinearTerms:
    """Per coin of every row of ``book`` (its quantities are ignored): the risk arrays, spot-month deltas and
    option values from which ``span_margin``'s scan risk, spot charge and NOV follow for any quantities; the
    intra spreads, inter credits and short option minimum are not linear."""
    r = span_margin(eqx.tree_at(lambda b: b.quantity, book, jnp.ones_like(book.quantity)), params)
    return SpanLinearTerms(r.position_risk_array, jnp.where(r.position_in_spot_month, r.position_composite_delta, 0.0),
                           params.spot_rate * book.underlying_spot * _usd_to_margin(book),
                           jnp.where(book.kind == OPTION, r.position_value, 0.0))


# ---------------------------------------------------------------- JSON

def _f(x) -> float:
    return float(np.asarray(x)) + 0.0  # + 0.0 turns -0.0 into 0.0


def span_section(result: SpanResult, underlyings, resolved=None, *, as_of=None, params: SpanParams | None = None,
                 market=None, margin_currency: str = "USD") -> dict:
    """The SPEC section 3 ``span`` JSON section of one (unbatched) result, for ``underlyings`` (names);
    with ``resolved`` (the book's positions, in book order) it adds ``by_position`` (``_position_rows``;
    ``as_of``: the market's, for exact days to expiry); with ``params`` (and the ``market``, the book's
    ``margin_currency``) it adds ``parameters`` (``_parameters_section``): enough to re-derive every figure."""
    r = jax.tree_util.tree_map(np.asarray, result)
    by = {}
    for u in UNDERLYINGS:
        if u not in underlyings:
            continue
        by[u] = commodity_row(r, UNDERLYINGS.index(u))
    doc = {"risk": _f(r.risk), "nov": _f(r.nov), "total": _f(r.total), "by_underlying": by}
    if resolved is not None:
        doc["by_position"] = _position_rows(r, resolved, as_of=as_of)
    if params is not None:
        doc["parameters"] = _parameters_section(params, market, margin_currency)
    return doc


def _days_to_expiry(p, as_of) -> float:
    """Days from ``as_of`` to the expiry (exact for whole days), else from the position's year fraction."""
    if as_of is not None:
        return (p.instrument.expiry - as_of).total_seconds() / SECONDS_PER_DAY
    return p.expiry_years * DAYS_PER_YEAR


def _position_rows(result: SpanResult, resolved, *, as_of=None) -> list[dict]:
    """Per-position detail (SPEC section 5 inputs), in book order: instrument, underlying, kind, right
    (options), quantity (coins), days_to_expiry (None for spot and perpetuals), tier (1-based),
    in_spot_month, risk_array (16 weighted losses, margin currency), composite_delta (coins, quantity
    included) and value (today, margin currency). The by-underlying figures are sums over these rows."""
    r = jax.tree_util.tree_map(np.asarray, result)
    rows = []
    for i, p in enumerate(resolved):
        inst = p.instrument
        dated = inst.kind in ("option", "future")
        rows.append({"instrument": inst.name, "underlying": inst.underlying, "kind": inst.kind,
                     "right": inst.right if inst.is_option else None, "quantity": p.quantity,
                     "days_to_expiry": _days_to_expiry(p, as_of) if dated else None,
                     "tier": int(r.position_tier[i]) + 1, "in_spot_month": bool(r.position_in_spot_month[i]),
                     "risk_array": [_f(x) for x in r.position_risk_array[:, i]],
                     "composite_delta": _f(r.position_composite_delta[i]), "value": _f(r.position_value[i])})
    return rows


def _parameters_section(params: SpanParams, market, margin_currency: str) -> dict:
    """The SPAN inputs a user needs besides the positions to redo SPEC section 5 by hand: per underlying
    today's ``spot`` (USD) and its parameters, the inter-commodity spreads in the order they apply, the
    horizon, and ``usd_to_margin`` (1 for USD, 1 / spot of the margin coin) that converts the USD-stated
    charges (intra, spot, short option minimum)."""
    p = jax.tree_util.tree_map(np.asarray, params)
    unds = {}
    for i, u in enumerate(UNDERLYINGS):
        unds[u] = {"spot": float(market.underlyings[u].spot) if u in market.underlyings else None,
                   **{k: float(getattr(p, k)[i]) for k in UNDERLYING_KEYS if k != "tiers_days"},
                   "tiers_days": [float(x) for x in p.tiers_days[i] if np.isfinite(x)]}
    inter = [{"legs": {UNDERLYINGS[int(p.inter_legs[j, k])]: float(p.inter_ratios[j, k]) for k in range(2)},
              "credit_rate": float(p.inter_credit_rate[j])} for j in range(p.inter_legs.shape[0])]
    usd_to_margin = 1.0 if margin_currency == "USD" else 1.0 / float(market.spot(margin_currency))
    return {"horizon_days": float(p.horizon_days), "currency": margin_currency, "usd_to_margin": usd_to_margin,
            "underlyings": unds, "inter_spreads": inter}


__all__ = ["SpanParams", "SpanResult", "SpanTerms", "position_composite_deltas", "span_from_terms", "span_margin",
           "span_params", "span_section", "span_terms"]
