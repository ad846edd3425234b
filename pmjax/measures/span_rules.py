"""SPAN's commodity-level rules, from position-level inputs: what pmjax's own pricing (``pmjax.measures.span``)
and an exchange's supplied risk arrays (``pmjax.measures.span_arrays``) share.

Per combined commodity c (SPEC sections 5 and 6; formulas: docs/methodology.md section 5): risk array = sum of the
positions' weighted loss vectors; scan risk = max(0, max_i L_i); composite delta per tier; intra spreads between
tiers in the order (1,2), (1,3), ..., (2,3), ... charged per spread; spot charge per coin (or contract) of
spot-month delta; time, volatility and price risk; inter-commodity credits in priority order; short option
minimum per short option, of the larger of short calls and short puts (``max``) or of all of them (``gross``);
risk_c = max(scan + intra + spot - credit, SOM); total = max(sum_c risk_c - NOV, 0). Pure and branch-free.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class SpanResult(eqx.Module):
    """Everything SPAN computes for one account (a leading accounts axis when batched); axis u is the combined
    commodities (pmjax's own pricing: ``UNDERLYINGS``; supplied arrays: the file's commodities)."""

    risk_array: Float[Array, "u 16"]  # weighted losses per commodity, margin currency
    scan_risk: Float[Array, " u"]
    worst_scenario: Int[Array, " u"]  # 1-based
    intra_spread: Float[Array, " u"]  # margin currency
    spot_charge: Float[Array, " u"]
    inter_credit: Float[Array, " u"]
    short_option_minimum: Float[Array, " u"]
    composite_delta: Float[Array, " u"]  # coins (contracts with supplied arrays)
    time_risk: Float[Array, " u"]  # (L_1 + L_2) / 2
    volatility_risk: Float[Array, " u"]  # (L_w - L_pair(w)) / 2, 0 for the extreme scenarios
    price_risk: Float[Array, " u"]  # max(scan - time - volatility, 0)
    underlying_risk: Float[Array, " u"]  # risk_c
    risk: Float[Array, ""]
    nov: Float[Array, ""]
    total: Float[Array, ""]
    position_risk_array: Float[Array, "16 n"]  # weighted losses per position
    position_composite_delta: Float[Array, " n"]  # quantity included
    position_tier: Int[Array, " n"]  # 0-based intra-commodity tier
    position_in_spot_month: Bool[Array, " n"]
    position_value: Float[Array, " n"]  # today's value, margin currency (NOV counts the options')


class CommodityCharges(eqx.Module):
    """Per-commodity charges (margin currency) and the inter-commodity spreads."""

    intra_per_spread: Float[Array, " u"]  # per coin (contract) of spread between tiers
    spot_per_delta: Float[Array, " u"]  # per coin (contract) of net spot-month composite delta
    som_per_option: Float[Array, " u"]  # per short option coin (contract)
    som_gross: Bool[Array, " u"]  # True: all short options; False: the larger of short calls and short puts
    inter_legs: Int[Array, "p 2"]  # commodity indices of the two legs
    inter_ratios: Float[Array, "p 2"]  # delta per spread, per leg, > 0
    inter_credit_rate: Float[Array, " p"]


def intra_spreads(tier_delta, n_tiers: int):
    """(spreads per commodity, delta left per tier) from net composite delta per tier (u, t): pairs (1,2),
    (1,3), ..., (2,3), ... in order, each forming min(|D_a|, |D_b|) spreads when the signs differ and consuming
    that delta."""
    spreads = jnp.zeros(tier_delta.shape[0], tier_delta.dtype)
    left = tier_delta
    for a in range(n_tiers):
        for b in range(a + 1, n_tiers):
            da, db = left[:, a], left[:, b]
            s = jnp.where(da * db < 0, jnp.minimum(jnp.abs(da), jnp.abs(db)), 0.0)
            spreads = spreads + s
            left = left.at[:, a].add(-jnp.sign(da) * s).at[:, b].add(-jnp.sign(db) * s)
    return spreads, left


def inter_credits(risk_array, scan, worst, net_delta, charges: CommodityCharges):
    """(credit, time risk, volatility risk, price risk), each (u,): the inter-commodity spreads in priority
    order, n = min(|D_a|/r_a, |D_b|/r_b) when the signs differ, credit_c = n r_c price_risk_c/|D_c| rate."""
    n_c = risk_array.shape[0]
    time_risk = 0.5 * (risk_array[:, 0] + risk_array[:, 1])
    paired = worst ^ 1  # 0-based partner: 1<->2, 3<->4, ... (1-based)
    vol_risk = jnp.where(worst >= 14, 0.0, 0.5 * (jnp.take_along_axis(risk_array, worst[:, None], 1)[:, 0]
                                                    - jnp.take_along_axis(risk_array, paired[:, None], 1)[:, 0]))
    price_risk = jnp.maximum(scan - time_risk - vol_risk, 0.0)
    abs_delta = jnp.abs(net_delta)
    risk_per_delta = jnp.where(abs_delta > 0, price_risk / jnp.where(abs_delta > 0, abs_delta, 1.0), 0.0)
    credit = jnp.zeros(n_c, risk_array.dtype)
    remaining = net_delta
    for j in range(charges.inter_legs.shape[0]):
        a, b = charges.inter_legs[j, 0], charges.inter_legs[j, 1]
        ra, rb = charges.inter_ratios[j, 0], charges.inter_ratios[j, 1]
        da, db = remaining[a], remaining[b]
        n = jnp.where(da * db < 0, jnp.minimum(jnp.abs(da) / ra, jnp.abs(db) / rb), 0.0)
        rate = charges.inter_credit_rate[j]
        credit = credit.at[a].add(n * ra * risk_per_delta[a] * rate).at[b].add(n * rb * risk_per_delta[b] * rate)
        remaining = remaining.at[a].add(-jnp.sign(da) * n * ra).at[b].add(-jnp.sign(db) * n * rb)
    return credit, time_risk, vol_risk, price_risk


def span_rules(position_losses, composite_delta, tier, in_spot_month, commodity_hot, n_tiers: int,
               short_calls, short_puts, is_option, values, charges: CommodityCharges) -> SpanResult:
    """The result from position-level inputs: weighted losses (16, n), composite deltas (n,), 0-based tiers (n,),
    spot-month flags (n,), commodity one-hot (n, u), short call and put quantities per commodity (u,), option
    flags and values (n,) (margin currency), and the per-commodity ``charges``."""
    dtype = position_losses.dtype
    risk_array = (position_losses @ commodity_hot).T  # (u, 16)
    worst = jnp.argmax(risk_array, axis=1)
    scan = jnp.maximum(jnp.max(risk_array, axis=1), 0.0)
    tier_hot = (tier[:, None] == jnp.arange(n_tiers, dtype=tier.dtype)[None, :]).astype(dtype)  # (n, t)
    tier_delta = jnp.einsum("nu,nt,n->ut", commodity_hot, tier_hot, composite_delta)
    spreads, left = intra_spreads(tier_delta, n_tiers)
    intra = spreads * charges.intra_per_spread
    near_delta = (composite_delta * in_spot_month.astype(dtype)) @ commodity_hot
    spot_charge = jnp.abs(near_delta) * charges.spot_per_delta
    shorts = jnp.where(charges.som_gross, short_calls + short_puts, jnp.maximum(short_calls, short_puts))
    som = charges.som_per_option * shorts
    # delta left after intra spreads (intra spreads net to zero)
    credit, time_risk, vol_risk, price_risk = inter_credits(risk_array, scan, worst, left.sum(axis=1), charges)
    risk_c = jnp.maximum(scan + intra + spot_charge - credit, som)
    nov = jnp.sum(jnp.where(is_option, values, 0.0))
    risk = risk_c.sum()
    return SpanResult(
        risk_array=risk_array, scan_risk=scan, worst_scenario=(worst + 1).astype(jnp.int32), intra_spread=intra,
        spot_charge=spot_charge, inter_credit=credit, short_option_minimum=som,
        composite_delta=composite_delta @ commodity_hot, time_risk=time_risk, volatility_risk=vol_risk,
        price_risk=price_risk, underlying_risk=risk_c, risk=risk, nov=nov, total=jnp.maximum(risk - nov, 0.0),
        position_risk_array=position_losses, position_composite_delta=composite_delta,
        position_tier=tier.astype(jnp.int32), position_in_spot_month=in_spot_month, position_value=values,
    )


def host_float(x) -> float:
    return float(x) + 0.0  # + 0.0 turns -0.0 into 0.0


def commodity_row(r, i: int) -> dict:
    """One commodity's figures of a host (numpy) result: SPEC section 3's keys plus time, volatility and price
    risk (section 6)."""
    f = host_float
    return {"risk_array": [f(x) for x in r.risk_array[i]], "scan_risk": f(r.scan_risk[i]),
            "worst_scenario": int(r.worst_scenario[i]), "intra_spread": f(r.intra_spread[i]),
            "spot_charge": f(r.spot_charge[i]), "inter_credit": f(r.inter_credit[i]),
            "short_option_minimum": f(r.short_option_minimum[i]), "composite_delta": f(r.composite_delta[i]),
            "time_risk": f(r.time_risk[i]), "volatility_risk": f(r.volatility_risk[i]),
            "price_risk": f(r.price_risk[i]), "risk": f(r.underlying_risk[i])}
