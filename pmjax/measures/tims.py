"""TIMS-style portfolio margin (OCC's Theoretical Intermarket Margining System as the customer
portfolio-margin rules use it; formulas and sources: docs/tims.md).

Per class group u (an underlying: its options, futures, perpetuals and spot) and valuation point s (the ten
points +-k/5 of u's price range, ``pmjax.scenarios.tims_grid``): the class group's loss L[u, s] (margin
currency, loss positive; gains and losses of its positions net fully). Within a product group g (class
groups whose gains may offset each other's losses, up to the group's offset percentage f_g) at the same
valuation point s: the credit f_g * sum of the group's gains offsets the group's losses, shared among the
losing class groups in proportion to their losses. The class group's risk is the largest loss after offsets
(floored at 0); its requirement is the larger of that and the per-contract minimum; the headline total is
the sum of the requirements. Option value is not netted (total is not risk - NOV as in SPAN): under the
portfolio-margin rules the requirement is set against account equity, which already counts long option
value as an asset and short option value as a liability.

Three doors, as ``pmjax.measures.span``: ``tims_params(config, dtype=...)`` -> ``TimsParams`` (invariants in
``TimsParams.__check_init__``); ``tims_margin(book, params)`` -> ``TimsResult``, pure and branch-free (jit it,
or ``jax.jit(jax.vmap(tims_margin, in_axes=(0, None)))`` over accounts); ``tims_section(result, underlyings)``
-> the ``tims`` JSON section.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from pmjax.core.book import OPTION, SPOT, Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import no_shock, position_values
from pmjax.core.precision import check_dtype
from pmjax.core.validate import config_number, number, underlying_mapping
from pmjax.scenarios.grids import VOL_FLOOR, Grid, own_underlying_losses
from pmjax.scenarios.tims_grid import tims_grid

#: ``tims.minimum_scope``: ``contracts`` (the rule: every option, future and perpetual, a long option's
#: minimum capped at its value; spot holdings none) or ``short_options`` (short options only, as SPAN's minimum)
MINIMUM_SCOPES = ("contracts", "short_options")
#: per-underlying keys of ``tims.underlyings.<U>``
UNDERLYING_KEYS = ("price_range", "vol_shifts", "minimum_per_contract")


def _concrete(*xs) -> bool:
    """Whether every array is a value (not a tracer inside jit/vmap/grad), so it can be checked now."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _invalid(field: str, message: str):
    raise InputError(message, source="TimsParams", field=field)


class TimsParams(eqx.Module):
    """TIMS parameters as arrays, one row per underlying in ``UNDERLYINGS`` order (see the module doc)."""

    price_range: Float[Array, " u"]  # largest valuation-point move, fraction of spot, in (0, 1)
    vol_shifts: Float[Array, "u v"]  # absolute implied-vol shifts applied at every price point
    minimum_per_contract: Float[Array, " u"]  # fraction of spot per coin (a Deribit contract is 1 coin)
    product_group: Int[Array, " u"]  # product group index of each class group (a lone class group: its own)
    offset: Float[Array, " u"]  # offset percentage of u's product group, in [0, 1] (equal within a group)
    horizon_days: Float[Array, ""]
    minimum_scope: str = eqx.field(static=True, default="contracts")  # one of MINIMUM_SCOPES

    @property
    def grid(self) -> Grid:
        return tims_grid(self.price_range, self.vol_shifts, self.horizon_days, vol_floor=VOL_FLOOR,
                         dtype=self.price_range.dtype)

    def __check_init__(self):
        n_und = len(UNDERLYINGS)
        for k in ("price_range", "minimum_per_contract", "product_group", "offset"):
            if jnp.shape(getattr(self, k)) != (n_und,):
                _invalid(k, f"expected shape ({n_und},), got {jnp.shape(getattr(self, k))}")
        if jnp.ndim(self.vol_shifts) != 2 or jnp.shape(self.vol_shifts)[0] != n_und or jnp.shape(self.vol_shifts)[1] < 1:
            _invalid("vol_shifts", f"expected shape ({n_und}, v), v >= 1, got {jnp.shape(self.vol_shifts)}")
        if self.minimum_scope not in MINIMUM_SCOPES:
            _invalid("minimum_scope", f"must be one of {', '.join(MINIMUM_SCOPES)}, got {self.minimum_scope!r}")
        if _concrete(*jax.tree_util.tree_leaves(self)):
            self._check_values()

    def _check_values(self):
        r = np.asarray(self.price_range, np.float64)
        if not np.all(np.isfinite(r) & (r > 0) & (r < 1)):
            _invalid("price_range", f"must be in (0, 1), got {r.tolist()}")
        if not np.all(np.isfinite(np.asarray(self.vol_shifts, np.float64))):
            _invalid("vol_shifts", "must be finite")
        m = np.asarray(self.minimum_per_contract, np.float64)
        if not np.all(np.isfinite(m) & (m >= 0)):
            _invalid("minimum_per_contract", f"must be finite and >= 0, got {m.tolist()}")
        f, g = np.asarray(self.offset, np.float64), np.asarray(self.product_group)
        if not np.all((f >= 0) & (f <= 1)):
            _invalid("offset", f"must be in [0, 1], got {f.tolist()}")
        if any(len(set(f[g == k].tolist())) > 1 for k in set(g.tolist())):
            _invalid("offset", "class groups of one product group must share its offset")
        h = float(np.asarray(self.horizon_days))
        if not (np.isfinite(h) and h >= 0):
            _invalid("horizon_days", f"must be finite and >= 0, got {h}")


class TimsResult(eqx.Module):
    """Everything TIMS computes for one account (a leading accounts axis when batched). Margin currency."""

    price_move: Float[Array, "u s"]  # the valuation points: spot move of u (fraction)
    vol_shift: Float[Array, "u s"]  # and its absolute vol shift
    loss: Float[Array, "u s"]  # class group loss at each point (loss positive), before offsets
    offset: Float[Array, "u s"]  # product-group offset credited to u's loss at each point (>= 0)
    loss_after_offset: Float[Array, "u s"]
    worst_point: Int[Array, " u"]  # 1-based index of the largest loss after offsets
    risk: Float[Array, " u"]  # max(0, largest loss after offsets)
    minimum: Float[Array, " u"]  # per-contract minimum of the class group
    requirement: Float[Array, " u"]  # max(risk, minimum)
    total: Float[Array, ""]  # sum of requirements: the headline
    nov: Float[Array, ""]  # net option value today (information only: not netted)
    position_loss: Float[Array, "s n"]  # each position's loss at its own class group's points
    position_minimum: Float[Array, " n"]


# ---------------------------------------------------------------- parameters

def _underlying_row(d, where: str, source: str) -> tuple[float, list[float], float]:
    """(price_range, vol_shifts, minimum_per_contract) of ``tims.underlyings.<U>``."""
    if not isinstance(d, dict):
        raise InputError(f"missing TIMS parameters for {where.rsplit('.', 1)[-1]}", source=source, field=where)
    r = config_number(d, "price_range", where, source, low=0.0, high=1.0, low_open=True, high_open=True,
                      strings=False)
    shifts = d.get("vol_shifts", [0.0])
    if not isinstance(shifts, list) or not shifts:
        raise InputError("vol_shifts must be a non-empty list of absolute vol shifts (e.g. [0.0])", source=source,
                         field=f"{where}.vol_shifts")
    shifts = [number(x, source=source, field=f"{where}.vol_shifts", strings=False) for x in shifts]
    m = config_number(d, "minimum_per_contract", where, source, low=0.0, strings=False)
    return r, shifts, m


def _product_groups(tims: dict, source: str) -> tuple[list[int], list[float]]:
    """(product group index, offset) per underlying from ``tims.product_groups``; a class group in no
    product group is a group of its own with offset 0."""
    groups = tims.get("product_groups") or []
    if not isinstance(groups, list):
        raise InputError("product_groups must be a list", source=source, field="tims.product_groups")
    index, offset = [-1] * len(UNDERLYINGS), [0.0] * len(UNDERLYINGS)
    for j, g in enumerate(groups):
        where = f"tims.product_groups[{j}]"
        if not isinstance(g, dict) or not isinstance(g.get("class_groups"), list) or not g["class_groups"]:
            raise InputError("a product group needs class_groups: [underlyings] and offset", source=source,
                             field=where)
        f = config_number(g, "offset", where, source, low=0.0, high=1.0, strings=False)
        for name in g["class_groups"]:
            u = str(name).upper()
            if u not in UNDERLYINGS:
                raise InputError(f"unknown underlying {name!r} (known: {', '.join(UNDERLYINGS)})", source=source,
                                 field=f"{where}.class_groups")
            i = UNDERLYINGS.index(u)
            if index[i] >= 0:
                raise InputError(f"{u} is in more than one product group", source=source,
                                 field=f"{where}.class_groups")
            index[i], offset[i] = j, f
    n = len(groups)
    for i in range(len(UNDERLYINGS)):  # lone class groups: groups of their own after the configured ones
        if index[i] < 0:
            index[i], n = n, n + 1
    return index, offset


def tims_params(config: dict, *, dtype=jnp.float64) -> TimsParams:
    """``TimsParams`` from a config (``pmjax.io.config.load_config``): its ``tims`` section and ``horizon_days``.

    Raises ``InputError`` naming the file and field (``tims.underlyings.BTC.price_range``, ...) for anything
    missing or out of range.
    """
    check_dtype(dtype)
    source = config.get("_source", "config")
    tims = config.get("tims")
    if not isinstance(tims, dict):
        raise InputError("missing tims section", source=source, field="tims")
    unds = underlying_mapping(tims, "tims", source, UNDERLYINGS)
    rows = [_underlying_row(unds.get(u), f"tims.underlyings.{u}", source) for u in UNDERLYINGS]
    for u, (_, shifts, _) in zip(UNDERLYINGS, rows):
        if len(shifts) != len(rows[0][1]):
            raise InputError(f"every underlying needs as many vol_shifts as {UNDERLYINGS[0]} ({len(rows[0][1])}), "
                             f"got {len(shifts)}", source=source, field=f"tims.underlyings.{u}.vol_shifts")
    scope = tims.get("minimum_scope", "contracts")
    if scope not in MINIMUM_SCOPES:
        raise InputError(f"must be one of {', '.join(MINIMUM_SCOPES)}, got {scope!r}", source=source,
                         field="tims.minimum_scope")
    group, offset = _product_groups(tims, source)
    horizon = (config_number(config, "horizon_days", "", source, low=0.0, strings=False)
               if "horizon_days" in config else 1.0)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return TimsParams(price_range=f([r[0] for r in rows]), vol_shifts=f([r[1] for r in rows]),
                      minimum_per_contract=f([r[2] for r in rows]),
                      product_group=jnp.asarray(np.asarray(group, np.int32)), offset=f(offset),
                      horizon_days=f(horizon), minimum_scope=scope)


# ---------------------------------------------------------------- numeric core

def product_group_offsets(loss: Float[Array, "u s"], params: TimsParams) -> Float[Array, "u s"]:
    """The offset credited to each class group's loss at each valuation point (>= 0, margin currency).

    At point s in product group g: credit C = f_g * sum of the group's gains max(-L, 0); the group's losses
    P = max(L, 0) absorb A = min(C, sum of P), each losing class group u getting A P[u] / sum of P.
    """
    dtype = loss.dtype
    same = (params.product_group[:, None] == params.product_group[None, :]).astype(dtype)  # (u, u)
    gain, lose = jnp.maximum(-loss, 0.0), jnp.maximum(loss, 0.0)
    credit = params.offset[:, None] * (same @ gain)
    group_loss = same @ lose
    applied = jnp.minimum(credit, group_loss)
    has_loss = group_loss > 0
    return jnp.where(has_loss, applied * lose / jnp.where(has_loss, group_loss, 1.0), 0.0)


def position_minimums(book: Book, params: TimsParams, values) -> Float[Array, " n"]:
    """Each position's per-contract minimum (margin currency): ``minimum_per_contract`` x today's spot x |q|
    converted to the margin currency; for ``contracts`` on every option, future and perpetual (a long option's
    capped at its value, spot holdings 0), for ``short_options`` on short options only."""
    spot_u = book.underlying_spot
    usd_to_mc = jnp.where(book.margin_coin >= 0, 1.0 / spot_u[jnp.maximum(book.margin_coin, 0)],
                          jnp.ones((), spot_u.dtype))
    per_coin = params.minimum_per_contract[book.underlying] * spot_u[book.underlying] * usd_to_mc
    raw = per_coin * jnp.abs(book.quantity)
    is_option = book.kind == OPTION
    if params.minimum_scope == "short_options":  # static: the same program for every book
        return jnp.where(is_option & (book.quantity < 0), raw, 0.0)
    long_option = is_option & (book.quantity > 0)
    return jnp.where(long_option, jnp.minimum(raw, jnp.maximum(values, 0.0)),
                     jnp.where(book.kind != SPOT, raw, 0.0))


def tims_margin(book: Book, params: TimsParams) -> TimsResult:
    """TIMS for one account's book (docs/tims.md section 3). Pure and branch-free: jit it, or
    ``jax.jit(jax.vmap(tims_margin, in_axes=(0, None)))`` over accounts."""
    dtype = book.quantity.dtype
    n_und = len(UNDERLYINGS)
    one_hot = (book.underlying[:, None] == jnp.arange(n_und, dtype=book.underlying.dtype)[None, :]).astype(dtype)
    grid = params.grid
    pos_loss = own_underlying_losses(book, grid)  # (s, n)
    loss = (pos_loss @ one_hot).T  # (u, s)
    offset = product_group_offsets(loss, params)
    after = loss - offset
    worst = jnp.argmax(after, axis=1)
    risk = jnp.maximum(jnp.max(after, axis=1), 0.0)
    values = position_values(book, no_shock(book))
    pos_min = position_minimums(book, params, values)
    minimum = pos_min @ one_hot
    requirement = jnp.maximum(risk, minimum)
    nov = jnp.sum(jnp.where(book.kind == OPTION, values, 0.0))
    return TimsResult(price_move=grid.price_move, vol_shift=grid.vol_shift, loss=loss, offset=offset,
                      loss_after_offset=after, worst_point=(worst + 1).astype(jnp.int32), risk=risk,
                      minimum=minimum, requirement=requirement, total=requirement.sum(), nov=nov,
                      position_loss=pos_loss, position_minimum=pos_min)


# ---------------------------------------------------------------- JSON

def _f(x) -> float:
    return float(np.asarray(x)) + 0.0  # + 0.0 turns -0.0 into 0.0


def tims_section(result: TimsResult, underlyings, *, params: TimsParams | None = None) -> dict:
    """The ``tims`` JSON section of one (unbatched) result for ``underlyings`` (names): ``total`` (the headline,
    margin currency), ``nov`` (not netted) and per underlying the valuation points (``price_moves``,
    ``vol_shifts``), the ``loss``, ``offset`` and ``loss_after_offset`` vectors, the ``worst_point`` (1-based),
    its ``worst_move``, the ``offset_applied`` there, ``risk``, ``minimum`` and ``requirement``. With
    ``params`` it adds ``parameters`` (ranges, vol shifts, minimums, product groups, horizon)."""
    r = jax.tree_util.tree_map(np.asarray, result)
    by = {}
    for u in UNDERLYINGS:
        if u not in underlyings:
            continue
        i = UNDERLYINGS.index(u)
        w = int(r.worst_point[i]) - 1
        by[u] = {"price_moves": [_f(x) for x in r.price_move[i]], "vol_shifts": [_f(x) for x in r.vol_shift[i]],
                 "loss": [_f(x) for x in r.loss[i]], "offset": [_f(x) for x in r.offset[i]],
                 "loss_after_offset": [_f(x) for x in r.loss_after_offset[i]], "worst_point": w + 1,
                 "worst_move": _f(r.price_move[i, w]), "offset_applied": _f(r.offset[i, w]),
                 "risk": _f(r.risk[i]), "minimum": _f(r.minimum[i]), "requirement": _f(r.requirement[i])}
    doc = {"total": _f(r.total), "nov": _f(r.nov), "by_underlying": by}
    if params is not None:
        doc["parameters"] = _parameters_section(params)
    return doc


def _parameters_section(params: TimsParams) -> dict:
    p = jax.tree_util.tree_map(np.asarray, params)
    unds = {u: {"price_range": _f(p.price_range[i]), "vol_shifts": [_f(x) for x in p.vol_shifts[i]],
                "minimum_per_contract": _f(p.minimum_per_contract[i])} for i, u in enumerate(UNDERLYINGS)}
    groups = []
    for g in sorted(set(p.product_group.tolist())):
        members = [u for i, u in enumerate(UNDERLYINGS) if p.product_group[i] == g]
        if len(members) > 1:
            groups.append({"class_groups": members, "offset": _f(p.offset[UNDERLYINGS.index(members[0])])})
    return {"horizon_days": _f(p.horizon_days), "minimum_scope": params.minimum_scope, "underlyings": unds,
            "product_groups": groups}


__all__ = ["MINIMUM_SCOPES", "TimsParams", "TimsResult", "position_minimums", "product_group_offsets",
           "tims_margin", "tims_params", "tims_section"]
