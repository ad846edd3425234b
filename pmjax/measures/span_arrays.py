"""SPAN on supplied risk arrays (SPEC section 6): an exchange's published per-contract arrays replace pmjax's own
pricing; the commodity-level rules are SPAN's own (``pmjax.measures.span_rules``).

Three doors, as every measure: ``span_array_params(rp, *, dtype) -> SpanArrayParams`` (the file's contracts as
arrays, the commodities' charges), the pure ``span_array_margin(positions, params) -> SpanResult`` over a
``ContractBook`` (contract row and quantity per position, padded; jit it, or vmap it over accounts with
``in_axes=(0, None)``), and ``span_array_section(result, params, positions)``, the JSON ``span`` section.
Quantities are contracts and every figure is in the file's currency. Formulas: docs/methodology.md section 5.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from pmjax.core.book import bucket_size
from pmjax.core.errors import InputError
from pmjax.core.precision import check_dtype
from pmjax.io.risk_parameters import ContractPortfolio, RiskParameters
from pmjax.measures.span_rules import CommodityCharges, SpanResult, commodity_row, host_float as _f, span_rules


class SpanArrayParams(eqx.Module):
    """A risk parameter file as arrays: one row per contract (c), one entry per commodity (u)."""

    risk_array: Float[Array, "c 16"]  # losses of one long contract, weighted
    delta: Float[Array, " c"]
    tier: Int[Array, " c"]  # 0-based
    spot_month: Bool[Array, " c"]
    commodity: Int[Array, " c"]
    is_option: Bool[Array, " c"]
    is_call: Bool[Array, " c"]
    price: Float[Array, " c"]  # 0 where the file gives none
    charges: CommodityCharges
    n_tiers: int = eqx.field(static=True)
    commodities: tuple[str, ...] = eqx.field(static=True)
    contract_ids: tuple[str, ...] = eqx.field(static=True)
    currency: str = eqx.field(static=True)

    def __check_init__(self):
        c = len(self.contract_ids)
        if jnp.shape(self.risk_array) != (c, 16):
            raise ValueError(f"risk_array must be ({c}, 16), got {jnp.shape(self.risk_array)}")
        if len(self.commodities) != jnp.shape(self.charges.intra_per_spread)[0]:
            raise ValueError("one set of charges per commodity")


class ContractBook(eqx.Module):
    """An account's positions on a file: contract row (into ``SpanArrayParams``) and quantity (contracts),
    padded to a bucket with quantity 0."""

    row: Int[Array, " n"]
    quantity: Float[Array, " n"]


def span_array_params(rp: RiskParameters, *, dtype=jnp.float64) -> SpanArrayParams:
    """``SpanArrayParams`` of a loaded file."""
    check_dtype(dtype)
    names = tuple(rp.commodities)
    contracts = list(rp.contracts.values())
    f = lambda a: jnp.asarray(np.asarray(a, np.float64), dtype)  # noqa: E731
    comm = [rp.commodities[n] for n in names]
    legs = [[names.index(a), names.index(b)] for (a, b), _, _ in rp.inter_spreads]
    charges = CommodityCharges(
        f([c["intra_spread_charge"] for c in comm]), f([c["spot_charge"] for c in comm]),
        f([c["short_option_minimum"] for c in comm]), jnp.asarray([c["som_method"] == "gross" for c in comm]),
        jnp.asarray(np.asarray(legs, np.int32).reshape(-1, 2)),
        f(np.asarray([r for _, r, _ in rp.inter_spreads], np.float64).reshape(-1, 2)),
        f(np.asarray([c for _, _, c in rp.inter_spreads], np.float64).reshape(-1)))
    return SpanArrayParams(
        risk_array=f([c.risk_array for c in contracts]), delta=f([c.delta for c in contracts]),
        tier=jnp.asarray([c.tier - 1 for c in contracts], jnp.int32),
        spot_month=jnp.asarray([c.spot_month for c in contracts]),
        commodity=jnp.asarray([names.index(c.commodity) for c in contracts], jnp.int32),
        is_option=jnp.asarray([c.is_option for c in contracts]), is_call=jnp.asarray([c.type == "call" for c in contracts]),
        price=f([c.price or 0.0 for c in contracts]), charges=charges, n_tiers=max(c.tier for c in contracts),
        commodities=names, contract_ids=tuple(c.id for c in contracts), currency=rp.currency)


def contract_book(portfolio: ContractPortfolio, params: SpanArrayParams, *, size: int | None = None,
                  dtype=jnp.float64) -> ContractBook:
    """The positions as a padded ``ContractBook`` (``size``: at least the positions; default their bucket)."""
    index = {cid: i for i, cid in enumerate(params.contract_ids)}
    n = len(portfolio.positions)
    size = bucket_size(max(n, 1)) if size is None else size
    if size < n:
        raise InputError(f"{n} positions do not fit a book of {size}", source=portfolio.source)
    row = np.zeros(size, np.int32)
    q = np.zeros(size)
    for i, (cid, qty) in enumerate(portfolio.positions):
        row[i], q[i] = index[cid], qty
    return ContractBook(jnp.asarray(row), jnp.asarray(q, dtype))


def span_array_margin(positions: ContractBook, params: SpanArrayParams) -> SpanResult:
    """SPAN of the positions from the file's arrays (SPEC section 6). Pure and branch-free."""
    q, r = positions.quantity, positions.row
    dtype = q.dtype
    n_c = len(params.commodities)
    hot = (params.commodity[r][:, None] == jnp.arange(n_c, dtype=jnp.int32)[None, :]).astype(dtype)  # (n, u)
    losses = params.risk_array[r].T * q[None, :]  # (16, n)
    is_option = params.is_option[r]
    short = jnp.maximum(-q, 0.0)
    short_calls = (short * (is_option & params.is_call[r]).astype(dtype)) @ hot
    short_puts = (short * (is_option & ~params.is_call[r]).astype(dtype)) @ hot
    return span_rules(losses, params.delta[r] * q, params.tier[r], params.spot_month[r] & (q != 0), hot,
                      params.n_tiers, short_calls, short_puts, is_option, params.price[r] * q, params.charges)


def span_array_section(result: SpanResult, params: SpanArrayParams, portfolio: ContractPortfolio) -> dict:
    """The ``span`` JSON section: per commodity held (SPEC section 3's keys plus time, volatility and price
    risk), the totals, and ``by_position`` (contract, quantity, tier, risk array, composite delta, value)."""
    r = jax.tree_util.tree_map(np.asarray, result)
    index = {cid: i for i, cid in enumerate(params.contract_ids)}
    held = {params.commodities[int(params.commodity[index[cid]])] for cid, _ in portfolio.positions}
    by = {}
    for i, name in enumerate(params.commodities):
        if name in held:
            by[name] = commodity_row(r, i)
    rows = [{"contract": cid, "quantity": q, "tier": int(r.position_tier[i]) + 1,
             "in_spot_month": bool(r.position_in_spot_month[i]),
             "risk_array": [_f(x) for x in r.position_risk_array[:, i]],
             "composite_delta": _f(r.position_composite_delta[i]), "value": _f(r.position_value[i])}
            for i, (cid, q) in enumerate(portfolio.positions)]
    return {"risk": _f(r.risk), "nov": _f(r.nov), "total": _f(r.total), "currency": params.currency,
            "source": "supplied risk arrays", "by_underlying": by, "by_position": rows}
