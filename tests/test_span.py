"""SPAN (SPEC section 5) against hand derivations, in float64.

Every expected number is computed here from SPEC's formulas (scipy's normal CDF for Black-76, the
scenario list written out literally), never by calling the code under test.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from pmjax.core.errors import InputError
from pmjax.io.market import market_from_dict
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.core.instruments import parse_instrument
from pmjax.core.book import book_from_portfolio
from pmjax.io.config import load_config
from pmjax.apps.margin import span_report
from pmjax.apps.risk_file import listed_contracts, risk_parameter_file
from pmjax.measures.span import span_margin, span_params

# ---------------------------------------------------------------- a market and config with round numbers

AS_OF = "2026-01-02T08:00:00Z"  # expiries are at 08:00 UTC, so days to expiry are whole numbers
BTC_S, ETH_S = 100_000.0, 3_000.0
FWD = {"BTC": {"2026-01-05": 100_030.0, "2026-01-22": 100_200.0, "2026-02-01": 100_300.0, "2026-05-02": 101_500.0},
       "ETH": {"2026-01-22": 3_003.0, "2026-05-02": 3_040.0}}
DAYS = {"2026-01-05": 3, "2026-01-22": 20, "2026-02-01": 30, "2026-05-02": 120}
VOL = {"BTC": 0.5, "ETH": 0.6}
SPOT = {"BTC": BTC_S, "ETH": ETH_S}

MARKET_DOC = {"as_of": AS_OF, "underlyings": {
    "BTC": {"spot": BTC_S, "forwards": FWD["BTC"], "vol": {"atm": VOL["BTC"]}},
    "ETH": {"spot": ETH_S, "forwards": FWD["ETH"], "vol": {"atm": VOL["ETH"]}}}}

UND = {
    "BTC": dict(price_scan_range=0.16, vol_scan_range=0.10, extreme_move_multiple=3.0, extreme_cover_fraction=0.33,
                short_option_minimum=0.005, tiers_days=[30, 90], intra_spread_rate=0.01, spot_days=7, spot_rate=0.01),
    "ETH": dict(price_scan_range=0.20, vol_scan_range=0.12, extreme_move_multiple=3.0, extreme_cover_fraction=0.33,
                short_option_minimum=0.006, tiers_days=[30, 90], intra_spread_rate=0.012, spot_days=7,
                spot_rate=0.012),
}
CFG = {"horizon_days": 1, "span": {"underlyings": UND,
                                   "inter_spreads": [{"legs": {"BTC": 1.0, "ETH": 30.0}, "credit_rate": 0.5}]}}
H = 1.0 / 365.0  # the horizon in years

# SPAN's 16 scenarios, written out as SPEC section 5 states them
STEPS = [0, 0, 1 / 3, 1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3, 1, 1, -1, -1]
VSTEPS = [1, -1] * 7 + [0, 0]
CD_STEPS = [-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1]
CD_WEIGHTS = [0.037, 0.111, 0.217, 0.270, 0.217, 0.111, 0.037]


def moves(u):
    p = UND[u]
    P, X = p["price_scan_range"], p["extreme_move_multiple"]
    return [m * P for m in STEPS] + [X * P, -X * P]


def vol_moves(u):
    return [v * UND[u]["vol_scan_range"] for v in VSTEPS]


def weights(u):
    return [1.0] * 14 + [UND[u]["extreme_cover_fraction"]] * 2


@pytest.fixture(scope="module")
def mkt():
    return market_from_dict(copy.deepcopy(MARKET_DOC), source="test-market")


# ---------------------------------------------------------------- hand valuation (SPEC section 4)

def b76(F, K, T, vol, call):
    if vol * vol * T <= 0:
        return max(F - K, 0.0) if call else max(K - F, 0.0)
    sd = vol * math.sqrt(T)
    d1 = math.log(F / K) / sd + 0.5 * sd
    d2 = d1 - sd
    return F * norm.cdf(d1) - K * norm.cdf(d2) if call else K * norm.cdf(-d2) - F * norm.cdf(-d1)


def d1_of(F, K, T, vol):
    sd = vol * math.sqrt(T)
    return math.log(F / K) / sd + 0.5 * sd


def leg_info(name):
    inst = parse_instrument(name)
    u = inst.underlying
    T = DAYS[inst.expiry.strftime("%Y-%m-%d")] / 365.0 if inst.expiry else 0.0
    F = FWD[u][inst.expiry.strftime("%Y-%m-%d")] if inst.expiry else SPOT[u]
    return inst, u, T, F


def usd_value(name, q, s=1.0, dv=0.0, dt=0.0):
    """USD value of q coins of ``name`` when its underlying's spot and forwards scale by s."""
    inst, u, T, F = leg_info(name)
    S = SPOT[u]
    if inst.kind == "spot":
        return q * S * s
    if inst.kind in ("future", "perpetual"):
        return q * (1.0 - 1.0 / s) * S * s if inst.settlement == "inverse" else q * (F * s - F)
    price = b76(F * s, inst.strike, max(T - dt, 0.0), max(VOL[u] + dv, 0.01), inst.right == "call")
    return q * (price / (F * s) * S * s if inst.settlement == "inverse" else price)


def hand_risk_array(legs, u, margin="USD"):
    """L_i = w_i * sum over u's legs of (value today - value in scenario i), in the margin currency."""
    out = []
    for m, v, w in zip(moves(u), vol_moves(u), weights(u)):
        s = 1.0 + m
        total = 0.0
        for name, q in legs:
            if leg_info(name)[1] != u:
                continue
            today, scen = usd_value(name, q), usd_value(name, q, s, v, H)
            if margin != "USD":
                today, scen = today / SPOT[margin], scen / (SPOT[margin] * (s if margin == u else 1.0))
            total += today - scen
        out.append(w * total)
    return out


def usd_delta(name, s):
    """dV/dS (coins) per coin at spot scale s, vol unchanged, time advanced H (forwards scale with spot)."""
    inst, u, T, F = leg_info(name)
    if inst.kind == "spot" or inst.settlement == "inverse" and inst.kind != "option":
        return 1.0
    if inst.kind in ("future", "perpetual"):
        return F / SPOT[u]
    n = norm.cdf(d1_of(F * s, inst.strike, T - H, VOL[u])) - (0.0 if inst.right == "call" else 1.0)
    return n if inst.settlement == "inverse" else n * F / SPOT[u]


def composite_delta(name, q):
    u = leg_info(name)[1]
    P = UND[u]["price_scan_range"]
    return q * sum(w * usd_delta(name, 1.0 + m * P) for m, w in zip(CD_STEPS, CD_WEIGHTS))


def run(mkt, legs, margin="USD", cfg=CFG):
    pf = make_portfolio([Position(parse_instrument(n), q) for n, q in legs], margin_currency=margin)
    return span_report(pf, mkt, cfg, jnp.float64, positions=True)


def close(a, b, rtol=1e-10, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- single positions

def test_linear_future_scan_is_range_times_forward_times_quantity(mkt):
    q, F, P = 2.0, FWD["BTC"]["2026-01-22"], 0.16
    doc = run(mkt, [("BTC_USDC-22JAN26", q)])
    b = doc["by_underlying"]["BTC"]
    # linear future: P&L q F m P, so the loss is largest at m = -1 (scenario 13; 14 ties) and the
    # extreme scenario covers only 0.33 * 3 = 0.99 of it
    expected = [-w * q * F * m for m, w in zip(moves("BTC"), weights("BTC"))]
    close(b["risk_array"], expected)
    close(b["scan_risk"], q * F * P)
    assert b["worst_scenario"] == 13
    close(b["composite_delta"], q * F / BTC_S)  # dF/dS = F/S when forwards scale with spot
    for k in ("intra_spread", "spot_charge", "inter_credit", "short_option_minimum"):
        assert b[k] == 0.0
    close([doc["risk"], doc["nov"], doc["total"]], [q * F * P, 0.0, q * F * P])
    assert list(doc["by_underlying"]) == ["BTC"]


def test_inverse_future_in_coin_margin_loses_most_at_the_extreme_down_move(mkt):
    # long 1 inverse future, BTC margin: coin value q (1 - 1/s) is convex, so the 48% fall (weighted
    # 0.33) costs 0.33 (1/0.52 - 1) = 0.3046 BTC, more than the 16% fall's 1/0.84 - 1 = 0.1905 BTC
    q, P, X, c = 1.0, 0.16, 3.0, 0.33
    doc = run(mkt, [("BTC-22JAN26", q)], margin="BTC")
    b = doc["by_underlying"]["BTC"]
    close(b["risk_array"], [w * q * (1.0 / (1.0 + m) - 1.0) for m, w in zip(moves("BTC"), weights("BTC"))])
    close(b["scan_risk"], c * q * (1.0 / (1.0 - X * P) - 1.0))
    assert b["worst_scenario"] == 16
    # coin delta: S' d(q (1 - 1/s))/dS' = q / s, averaged over the 7 price points
    close(b["composite_delta"], sum(w * q / (1.0 + m * P) for m, w in zip(CD_STEPS, CD_WEIGHTS)))
    close(doc["total"], c * q * (1.0 / (1.0 - X * P) - 1.0))
    # the risk array equals the hand valuation of the general formula too
    close(b["risk_array"], hand_risk_array([("BTC-22JAN26", q)], "BTC", "BTC"))


def test_long_option_risk_is_at_most_its_premium_and_total_is_zero(mkt):
    name = "BTC-1FEB26-100000-C"
    doc = run(mkt, [(name, 1.0)])
    b = doc["by_underlying"]["BTC"]
    ra = hand_risk_array([(name, 1.0)], "BTC")
    premium = usd_value(name, 1.0)
    close(b["risk_array"], ra)
    close(b["scan_risk"], max(0.0, max(ra)))
    assert b["worst_scenario"] == int(np.argmax(ra)) + 1
    close(doc["nov"], premium)
    assert b["scan_risk"] <= premium
    assert b["short_option_minimum"] == 0.0
    close(doc["risk"], max(ra))
    assert doc["total"] == 0.0
    close(b["composite_delta"], composite_delta(name, 1.0))


def test_covered_call(mkt):
    legs = [("BTC", 1.0), ("BTC-22JAN26-110000-C", -1.0)]  # both in the first tier (spot; 20 days)
    doc = run(mkt, legs)
    b = doc["by_underlying"]["BTC"]
    ra = hand_risk_array(legs, "BTC")
    close(b["risk_array"], ra)
    scan = max(0.0, max(ra))
    close(b["scan_risk"], scan)
    # the call caps the upside: the worst case is a fall, here the 48% one (0.33 of a 48% fall of
    # the coin outweighs the 16% fall less the call premium it frees)
    assert b["worst_scenario"] == int(np.argmax(ra)) + 1 == 16
    close(b["short_option_minimum"], 0.005 * BTC_S * 1.0)
    close(b["composite_delta"], 1.0 + composite_delta("BTC-22JAN26-110000-C", -1.0))
    assert b["intra_spread"] == 0.0 and b["spot_charge"] == 0.0
    call = usd_value("BTC-22JAN26-110000-C", 1.0)
    close(doc["nov"], -call)
    close(doc["total"], max(scan, 500.0) + call)


def test_short_straddle_is_set_by_an_extreme_scenario(mkt):
    legs = [("BTC_USDC-22JAN26-100000-C", -1.0), ("BTC_USDC-22JAN26-100000-P", -1.0)]
    doc = run(mkt, legs)
    b = doc["by_underlying"]["BTC"]
    ra = hand_risk_array(legs, "BTC")
    close(b["risk_array"], ra)
    # 0.33 of a 48% move beats a 16% move for a short straddle worth ~9% of spot
    assert int(np.argmax(ra)) + 1 in (15, 16)
    assert b["worst_scenario"] == int(np.argmax(ra)) + 1
    close(b["scan_risk"], max(ra))
    close(b["short_option_minimum"], 0.005 * BTC_S * 1.0)  # max(1 short call, 1 short put)
    premium = usd_value(legs[0][0], 1.0) + usd_value(legs[1][0], 1.0)
    close(doc["nov"], -premium)
    close(doc["total"], max(ra) + premium)


# ---------------------------------------------------------------- intra, spot, inter, SOM

def test_calendar_spread_pays_an_intra_commodity_charge(mkt):
    # inverse futures in USD margin all gain q S (s - 1): deltas are exactly +-1 coin.
    # tiers: 20 days -> 1, exactly 30 days -> 2 (the boundary belongs to the later tier), 120 days -> 3.
    legs = [("BTC-22JAN26", 1.0), ("BTC-1FEB26", -0.5), ("BTC-2MAY26", -1.0)]
    doc = run(mkt, legs)
    b = doc["by_underlying"]["BTC"]
    net = 1.0 - 0.5 - 1.0
    close(b["risk_array"], [-w * net * BTC_S * m for m, w in zip(moves("BTC"), weights("BTC"))])
    close(b["scan_risk"], abs(net) * BTC_S * 0.16)  # short 0.5 coin: worst at +16%
    assert b["worst_scenario"] == 11
    # tier deltas (+1, -0.5, -1): pair (1,2) spreads 0.5, leaving (+0.5, 0, -1); (1,3) spreads 0.5
    spreads = 0.5 + 0.5
    close(b["intra_spread"], spreads * 0.01 * BTC_S)
    close(b["composite_delta"], net)
    close(doc["total"], abs(net) * BTC_S * 0.16 + spreads * 0.01 * BTC_S)
    tiers = {p["instrument"]: p["tier"] for p in doc["by_position"]}
    assert tiers == {"BTC-22JAN26": 1, "BTC-1FEB26": 2, "BTC-2MAY26": 3}


def test_spot_charge_on_near_expiry_futures_not_on_perpetuals(mkt):
    # a 3-day future against the perpetual: no price risk, no intra spread (both in tier 1), and the
    # spot charge on the future's delta alone (perpetuals are not charged)
    doc = run(mkt, [("BTC-5JAN26", 1.0), ("BTC-PERPETUAL", -1.0)])
    b = doc["by_underlying"]["BTC"]
    close(b["risk_array"], [0.0] * 16, atol=1e-8)
    assert b["intra_spread"] == 0.0
    close(b["spot_charge"], 1.0 * 0.01 * BTC_S)
    close(doc["total"], 1.0 * 0.01 * BTC_S)


@pytest.mark.parametrize("eth_qty", [-30.0, -15.0, -60.0, 30.0])
def test_btc_long_eth_short_earns_an_inter_commodity_credit(mkt, eth_qty):
    # linear perpetuals: P&L q S m P, delta exactly q; time and vol risk are zero, so price risk = scan
    legs = [("BTC_USDC-PERPETUAL", 1.0), ("ETH_USDC-PERPETUAL", eth_qty)]
    doc = run(mkt, legs)
    btc, eth = doc["by_underlying"]["BTC"], doc["by_underlying"]["ETH"]
    scan_btc, scan_eth = 1.0 * BTC_S * 0.16, abs(eth_qty) * ETH_S * 0.20
    close([btc["scan_risk"], eth["scan_risk"]], [scan_btc, scan_eth])
    close([btc["composite_delta"], eth["composite_delta"]], [1.0, eth_qty])
    n = min(1.0 / 1.0, abs(eth_qty) / 30.0) if eth_qty < 0 else 0.0
    credit_btc = n * 1.0 * (scan_btc / 1.0) * 0.5
    credit_eth = n * 30.0 * (scan_eth / abs(eth_qty)) * 0.5
    close([btc["inter_credit"], eth["inter_credit"]], [credit_btc, credit_eth])
    close([btc["risk"], eth["risk"]], [scan_btc - credit_btc, scan_eth - credit_eth])
    close(doc["total"], scan_btc + scan_eth - credit_btc - credit_eth)


def test_inter_credit_takes_time_and_volatility_risk_out_of_an_option_book(mkt):
    call = "BTC-1FEB26-100000-C"
    legs = [(call, 2.0), ("ETH_USDC-PERPETUAL", -40.0)]
    doc = run(mkt, legs)
    btc, eth = doc["by_underlying"]["BTC"], doc["by_underlying"]["ETH"]
    ra = hand_risk_array(legs, "BTC")
    w = int(np.argmax(ra))  # 0-based; its pair is the scenario with the same price move, other vol move
    assert w < 14
    pair = w + 1 if w % 2 == 0 else w - 1
    time_risk = (ra[0] + ra[1]) / 2
    vol_risk = (ra[w] - ra[pair]) / 2
    price_risk = max(max(ra) - time_risk - vol_risk, 0.0)
    d_btc, d_eth = composite_delta(call, 2.0), -40.0
    close(btc["composite_delta"], d_btc)
    n = min(abs(d_btc) / 1.0, abs(d_eth) / 30.0)
    close(btc["inter_credit"], n * 1.0 * price_risk / abs(d_btc) * 0.5)
    scan_eth = 40.0 * ETH_S * 0.20
    close(eth["inter_credit"], n * 30.0 * scan_eth / 40.0 * 0.5)
    close(doc["total"], max(ra) - btc["inter_credit"] + scan_eth - eth["inter_credit"] - usd_value(call, 2.0))


def test_inter_spreads_apply_in_order_and_consume_delta(mkt):
    cfg = copy.deepcopy(CFG)
    cfg["span"]["inter_spreads"] = [{"legs": {"BTC": 1.0, "ETH": 30.0}, "credit_rate": 0.5},
                                    {"legs": {"ETH": 15.0, "BTC": 0.5}, "credit_rate": 0.25}]
    doc = run(mkt, [("BTC_USDC-PERPETUAL", 1.5), ("ETH_USDC-PERPETUAL", -60.0)], cfg=cfg)
    btc, eth = doc["by_underlying"]["BTC"], doc["by_underlying"]["ETH"]
    scan_btc, scan_eth = 1.5 * BTC_S * 0.16, 60.0 * ETH_S * 0.20
    per_btc, per_eth = scan_btc / 1.5, scan_eth / 60.0  # price risk per coin of delta
    n1 = min(1.5 / 1.0, 60.0 / 30.0)  # 1.5 spreads: BTC left 0, ETH left -15
    n2 = 0.0  # nothing left of BTC's delta for the second pair
    close(btc["inter_credit"], n1 * 1.0 * per_btc * 0.5 + n2)
    close(eth["inter_credit"], n1 * 30.0 * per_eth * 0.5 + n2)


def test_short_option_minimum_binds_for_far_out_of_the_money_shorts(mkt):
    name = "BTC-22JAN26-40000-P"
    legs = [(name, -10.0)]
    doc = run(mkt, legs)
    b = doc["by_underlying"]["BTC"]
    ra = hand_risk_array(legs, "BTC")
    close(b["risk_array"], ra, atol=1e-7)
    som = 0.005 * BTC_S * 10.0
    assert max(ra) < som
    close(b["short_option_minimum"], som)
    close(b["risk"], som)
    put = usd_value(name, 1.0)
    close(doc["total"], som + 10.0 * put)


def test_usd_charges_convert_to_a_coin_margin_currency_at_todays_spot(mkt):
    name = "BTC-22JAN26-40000-P"
    doc = run(mkt, [(name, -10.0)], margin="BTC")
    b = doc["by_underlying"]["BTC"]
    close(b["risk_array"], hand_risk_array([(name, -10.0)], "BTC", "BTC"), atol=1e-12)
    close(b["short_option_minimum"], 0.005 * 10.0)  # 0.005 * spot * 10 USD = 0.05 BTC
    close(b["risk"], 0.005 * 10.0)
    doc = run(mkt, [("BTC-5JAN26", 1.0), ("BTC-PERPETUAL", -1.0)], margin="ETH")
    close(doc["by_underlying"]["BTC"]["spot_charge"], 1.0 * 0.01 * BTC_S / ETH_S)


def test_spot_of_the_margin_coin_carries_no_risk(mkt):
    legs = [("BTC", 3.0), ("ETH_USDC-PERPETUAL", 10.0)]
    doc = run(mkt, legs, margin="BTC")
    btc, eth = doc["by_underlying"]["BTC"], doc["by_underlying"]["ETH"]
    close(btc["risk_array"], [0.0] * 16, atol=1e-12)
    assert btc["scan_risk"] <= 1e-12
    close(btc["composite_delta"], 0.0, atol=1e-12)  # 3 BTC are worth 3 BTC whatever BTC does
    # the ETH perpetual's USD P&L, in BTC at the unchanged BTC price (ETH scenarios move only ETH)
    close(eth["risk_array"], [-w * 10.0 * ETH_S * m / BTC_S for m, w in zip(moves("ETH"), weights("ETH"))])
    close(eth["scan_risk"], 10.0 * ETH_S * 0.20 / BTC_S)
    close(eth["composite_delta"], 10.0)
    # no BTC delta to pair: the credit is zero up to the rounding of BTC's composite delta (~1e-16 coins)
    assert abs(btc["inter_credit"]) < 1e-15 and abs(eth["inter_credit"]) < 1e-15
    close(doc["total"], 10.0 * ETH_S * 0.20 / BTC_S)
    # the same BTC in a USD account loses 16% of its value
    usd = run(mkt, [("BTC", 3.0)])["by_underlying"]["BTC"]
    close(usd["scan_risk"], 3.0 * BTC_S * 0.16)


# ---------------------------------------------------------------- properties

MENU = ["BTC", "BTC-PERPETUAL", "BTC_USDC-22JAN26", "BTC-2MAY26", "BTC-1FEB26-100000-C", "BTC-22JAN26-90000-P",
        "BTC_USDC-2MAY26-120000-C", "ETH", "ETH_USDC-PERPETUAL", "ETH-22JAN26-3000-C", "ETH-2MAY26-2500-P"]
book_st = st.lists(st.tuples(st.sampled_from(MENU), st.floats(-5, 5).filter(lambda x: abs(x) > 0.01)),
                   min_size=1, max_size=4, unique_by=lambda t: t[0])


def scans(mkt, legs, params, margin="USD"):
    pf = make_portfolio([Position(parse_instrument(n), q) for n, q in legs], margin_currency=margin,
                        allow_empty=True)
    book, _ = book_from_portfolio(pf, mkt, size=8)
    return np.asarray(jax.jit(span_margin)(book, params).scan_risk)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(legs=book_st, k=st.floats(0.1, 10.0), margin=st.sampled_from(["USD", "BTC"]))
def test_scan_risk_is_positively_homogeneous(mkt, legs, k, margin):
    params = span_params(CFG)
    base = scans(mkt, legs, params, margin)
    scaled = scans(mkt, [(n, k * q) for n, q in legs], params, margin)
    np.testing.assert_allclose(scaled, k * base, rtol=1e-9, atol=1e-9)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=book_st, b=book_st, margin=st.sampled_from(["USD", "ETH"]))
def test_scan_risk_is_sub_additive(mkt, a, b, margin):
    params = span_params(CFG)
    both: dict[str, float] = {}
    for n, q in a + b:
        both[n] = both.get(n, 0.0) + q
    total = scans(mkt, list(both.items()), params, margin)
    assert np.all(total <= scans(mkt, a, params, margin) + scans(mkt, b, params, margin) + 1e-9)


# ---------------------------------------------------------------- parameters, precision, files

def test_shipped_config_loads_with_both_underlyings():
    params = span_params(load_config())
    assert params.price_scan_range.shape == (2,) and params.tiers_days.shape[0] == 2
    assert params.inter_legs.shape[1] == 2


@pytest.mark.parametrize("field,value", [
    ("price_scan_range", [0.0, 0.1]), ("extreme_cover_fraction", [0.3, 1.5]), ("vol_scan_range", [np.nan, 0.1]),
    ("tiers_days", [[30.0, 10.0], [30.0, np.inf]]), ("inter_legs", [[0, 0]]), ("inter_credit_rate", [-0.1]),
    ("spot_rate", [0.1]),  # wrong shape
])
def test_span_params_built_any_way_are_checked(field, value):
    from pmjax.measures.span import SpanParams

    params = span_params(CFG)
    fields = {k: getattr(params, k) for k in params.__dataclass_fields__}
    SpanParams(**fields)  # as built: valid
    # a wrong shape is caught by the jaxtyping annotations when the tests check them at run time (a
    # TypeError naming the field), else by __check_init__ (InputError); values always by __check_init__
    with pytest.raises((InputError, TypeError), match=field):
        SpanParams(**{**fields, field: jnp.asarray(value, fields[field].dtype)})


def test_scenario_sets_share_one_abstraction(mkt):
    from pmjax.core.kernel import position_pnl
    from pmjax.scenarios.base import ScenarioSet
    from pmjax.scenarios.grids import full_pnl
    from pmjax.scenarios.named import StressScenario, named_scenarios

    pf = make_portfolio([Position(parse_instrument(n), q) for n, q in [("BTC-22JAN26-110000-C", -1.0), ("ETH", 2.0)]])
    book, _ = book_from_portfolio(pf, mkt, size=4)
    grid = span_params(CFG).grid
    assert isinstance(grid, ScenarioSet) and grid.shocks(book).dt.shape == (2 * 16,)
    np.testing.assert_array_equal(grid.pnl(book).reshape(2, 16, -1), full_pnl(book, grid))
    named = named_scenarios([StressScenario("a", (-0.3, 0.1), (0.2, 0.0), 2.0)])
    assert isinstance(named, ScenarioSet)
    one = jax.tree_util.tree_map(lambda x: x[0], named.shocks(book))
    np.testing.assert_array_equal(named.pnl(book)[0], position_pnl(book, one))


@pytest.mark.parametrize("path,value,field", [
    (("span", "underlyings", "BTC", "price_scan_range"), -0.1, "price_scan_range"),
    (("span", "underlyings", "ETH", "tiers_days"), [90, 30], "tiers_days"),
    (("span", "underlyings", "BTC", "extreme_move_multiple"), 7.0, "extreme_move_multiple"),
    (("span", "inter_spreads"), [{"legs": {"BTC": 1.0}, "credit_rate": 0.5}], "inter_spreads[0]"),
    (("span", "inter_spreads"), [{"legs": {"BTC": 1.0, "DOGE": 2.0}, "credit_rate": 0.5}], "legs"),
    (("span", "inter_spreads"), [{"legs": {"BTC": 1.0, "ETH": 30.0}, "credit_rate": 1.5}], "credit_rate"),
])
def test_bad_span_config_is_an_input_error_naming_the_field(path, value, field):
    cfg = copy.deepcopy(CFG)
    d = cfg
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(InputError, match=re.escape(field)):
        span_params(cfg)


def test_float32_agrees_with_float64(mkt):
    legs = [("BTC", 1.0), ("BTC-22JAN26-110000-C", -1.0), ("ETH_USDC-PERPETUAL", -20.0), ("BTC-2MAY26", 0.3)]
    pf = make_portfolio([Position(parse_instrument(n), q) for n, q in legs])
    d64 = span_report(pf, mkt, CFG, jnp.float64)
    d32 = span_report(pf, mkt, CFG, jnp.float32)
    for k in ("risk", "nov", "total"):
        close(d32[k], d64[k], rtol=2e-4, atol=1e-2)
    for u in ("BTC", "ETH"):
        close(d32["by_underlying"][u]["risk_array"], d64["by_underlying"][u]["risk_array"], rtol=0, atol=0.5)


def test_risk_parameter_file_has_every_listed_contract(mkt, tmp_path):
    contracts = listed_contracts(mkt)
    # this market lists no smiles: its contracts are the futures of each forward and the perpetuals
    assert sorted(c.name for c in contracts) == sorted(
        ["BTC-5JAN26", "BTC-22JAN26", "BTC-1FEB26", "BTC-2MAY26", "BTC-PERPETUAL", "ETH-22JAN26", "ETH-2MAY26",
         "ETH-PERPETUAL"])
    rows = risk_parameter_file(mkt, CFG, str(tmp_path / "span.csv"))
    with open(tmp_path / "span.csv", newline="") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) == len(contracts)
    eth = next(r for r in read if r["instrument"] == "ETH-PERPETUAL")
    # 1 coin long inverse perpetual in USD: loss -w S m
    close([float(eth[f"L{i}"]) for i in range(1, 17)], [-w * ETH_S * m for m, w in zip(moves("ETH"), weights("ETH"))])
    risk_parameter_file(mkt, CFG, str(tmp_path / "span.json"))
    doc = json.loads((tmp_path / "span.json").read_text())
    assert [c["instrument"] for c in doc["contracts"]] == [r["instrument"] for r in read]
    assert len(doc["contracts"][0]["risk_array"]) == 16
    with pytest.raises(InputError):
        risk_parameter_file(mkt, CFG, str(tmp_path / "span.txt"))


def test_risk_parameter_file_on_the_bundled_chain_matches_single_positions(market, tmp_path):
    rows = risk_parameter_file(market, load_config(), str(tmp_path / "chain.csv"))
    n_options = sum(len(s.strikes) * 2 for u in market.underlyings.values() for s in u.smiles.values())
    assert sum(r["kind"] == "option" for r in rows) == n_options
    pick = next(r for r in rows if r["kind"] == "option" and r["right"] == "put" and r["days"] > 30)
    one = span_report(make_portfolio([Position(parse_instrument(pick["instrument"]), 1.0)]), market, load_config())
    b = one["by_underlying"][pick["underlying"]]
    close([pick[f"L{i}"] for i in range(1, 17)], b["risk_array"], rtol=1e-9, atol=1e-8)
    close(pick["composite_delta"], b["composite_delta"])


def test_own_underlying_scan_and_composite_delta_equal_the_full_cross_underlying_reference():
    """SPAN values each position only under its own underlying's scenarios and takes its composite delta
    by one forward pass; the reference values every position under every underlying's move (``full_pnl``)
    and differentiates with respect to the whole vector of underlying scales."""
    import jax

    from pmjax.bench.books import random_account_books
    from pmjax.core.kernel import Shock, position_values
    from pmjax.scenarios.grids import COMPOSITE_DELTA_STEPS, COMPOSITE_DELTA_WEIGHTS, full_pnl, own_underlying_pnl
    from pmjax.measures.span import position_composite_deltas

    params = span_params(load_config())
    books = random_account_books(12, 10, seed=3)
    assert set(np.asarray(books.margin_coin).tolist()) == {-1, 0, 1}  # USD, BTC and ETH margin
    for i in range(12):
        book = jax.tree_util.tree_map(lambda x: jnp.asarray(x[i]), books)
        u = np.asarray(book.underlying)
        full = np.asarray(full_pnl(book, params.grid))  # (u, s, n)
        ref = full[u, :, np.arange(u.size)].T  # each position's own underlying's row
        assert np.abs(full).max() > 0
        np.testing.assert_allclose(np.asarray(own_underlying_pnl(book, params.grid)), ref, rtol=1e-13,
                                   atol=1e-13 * np.abs(ref).max())

        dt = params.horizon_days / 365.0
        coin = max(int(book.margin_coin), 0)
        cds = np.zeros(u.size)
        for step, w in zip(COMPOSITE_DELTA_STEPS, COMPOSITE_DELTA_WEIGHTS):
            for k in range(2):
                scale = jnp.ones(2).at[k].set(1.0 + step * params.price_scan_range[k])
                jac = jax.jacfwd(lambda sc: position_values(book, Shock(sc, jnp.zeros_like(book.quantity), dt,
                                                                          jnp.zeros(()))))(scale)[:, k]
                coin_price = float(book.underlying_spot[coin] * scale[coin]) if int(book.margin_coin) >= 0 else 1.0
                cds += np.where(u == k, w * np.asarray(jac) * coin_price / np.asarray(book.spot), 0.0)
        np.testing.assert_allclose(np.asarray(position_composite_deltas(book, params)), cds, rtol=1e-12,
                                   atol=1e-12 * np.abs(cds).max())


# ---------------------------------------------------------------- re-deriving every figure from the JSON

#: tiers 1 (3 and 20 days, the 3-day ones in the spot month), 2 (30 days) and 3 (120 days), options and
#: futures, and BTC long / ETH short delta for the inter pair
REDERIVE_LEGS = [("BTC-5JAN26", 0.3), ("BTC-5JAN26-98000-P", 2.0), ("BTC-22JAN26", 1.5), ("BTC-1FEB26", -0.5),
                 ("BTC-1FEB26-100000-C", -1.0), ("BTC-2MAY26-110000-C", -1.0), ("BTC-2MAY26-90000-P", -0.7),
                 ("BTC-PERPETUAL", 2.0), ("ETH-22JAN26-3000-C", -12.0), ("ETH_USDC-2MAY26", -25.0),
                 ("ETH-22JAN26-2500-P", -8.0)]
#: a low ETH cover fraction puts ETH's worst scenario inside 1..14, so its volatility risk is not 0
REDERIVE_CFG = copy.deepcopy(CFG)
REDERIVE_CFG["span"]["underlyings"]["ETH"]["extreme_cover_fraction"] = 0.1


def rederive_span(span: dict) -> dict:
    """Every SPAN figure of a ``pmjax margin --json`` ``span`` section from its ``by_position`` and
    ``parameters`` alone, following SPEC section 5 word for word (numpy, no pmjax)."""
    par, pos = span["parameters"], span["by_position"]
    conv = par["usd_to_margin"]
    out = {}
    for u, p in par["underlyings"].items():
        mine = [x for x in pos if x["underlying"] == u]
        if not mine:
            continue
        S = p["spot"]
        ra = np.sum([x["risk_array"] for x in mine], axis=0)
        scan = max(0.0, ra.max())
        worst = int(np.argmax(ra))  # 0-based
        # tiers: the first tier whose boundary exceeds d; spot and perpetuals in the first
        n_tiers = len(p["tiers_days"]) + 1
        tier_delta = np.zeros(n_tiers)
        for x in mine:
            d = x["days_to_expiry"]
            tier = 0 if d is None else sum(b <= d for b in p["tiers_days"])
            assert x["tier"] == tier + 1, x["instrument"]
            tier_delta[tier] += x["composite_delta"]
        spreads = 0.0
        for a in range(n_tiers):
            for b in range(a + 1, n_tiers):
                if tier_delta[a] * tier_delta[b] < 0:
                    s = min(abs(tier_delta[a]), abs(tier_delta[b]))
                    spreads += s
                    tier_delta[a] -= np.sign(tier_delta[a]) * s
                    tier_delta[b] -= np.sign(tier_delta[b]) * s
        intra = spreads * p["intra_spread_rate"] * S * conv
        near = 0.0
        for x in mine:
            in_spot = x["days_to_expiry"] is not None and x["days_to_expiry"] < p["spot_days"]
            assert x["in_spot_month"] == in_spot, x["instrument"]
            near += x["composite_delta"] if in_spot else 0.0
        spot = abs(near) * p["spot_rate"] * S * conv
        calls = sum(max(-x["quantity"], 0.0) for x in mine if x["kind"] == "option" and x["right"] == "call")
        puts = sum(max(-x["quantity"], 0.0) for x in mine if x["kind"] == "option" and x["right"] == "put")
        som = p["short_option_minimum"] * S * max(calls, puts) * conv
        time_risk = (ra[0] + ra[1]) / 2
        vol_risk = 0.0 if worst >= 14 else (ra[worst] - ra[worst + 1 if worst % 2 == 0 else worst - 1]) / 2
        price_risk = max(scan - time_risk - vol_risk, 0.0)
        out[u] = {"risk_array": ra, "scan_risk": scan, "worst_scenario": worst + 1, "intra_spread": intra,
                  "spot_charge": spot, "short_option_minimum": som, "inter_credit": 0.0,
                  "composite_delta": sum(x["composite_delta"] for x in mine), "_delta_left": tier_delta.sum(),
                  "_price_risk": price_risk}
    left = {u: v["_delta_left"] for u, v in out.items()}
    for spread in par["inter_spreads"]:
        (a, ra_), (b, rb_) = spread["legs"].items()
        da, db = left.get(a, 0.0), left.get(b, 0.0)
        n = min(abs(da) / ra_, abs(db) / rb_) if da * db < 0 else 0.0
        for u, r, d in ((a, ra_, da), (b, rb_, db)):
            if u in out and n > 0:
                out[u]["inter_credit"] += n * r * out[u]["_price_risk"] / abs(d) * spread["credit_rate"]
                left[u] -= np.sign(d) * n * r
    for v in out.values():
        v["risk"] = max(v["scan_risk"] + v["intra_spread"] + v["spot_charge"] - v["inter_credit"],
                        v["short_option_minimum"])
    risk = sum(v["risk"] for v in out.values())
    nov = sum(x["value"] for x in pos if x["kind"] == "option")
    return {"by_underlying": out, "risk": risk, "nov": nov, "total": max(risk - nov, 0.0)}


@pytest.mark.parametrize("margin", ["USD", "BTC"])
def test_every_figure_re_derives_from_the_margin_json(mkt, tmp_path, capsys, margin):
    from pmjax import cli

    (tmp_path / "market.json").write_text(json.dumps(MARKET_DOC))
    (tmp_path / "config.json").write_text(json.dumps(REDERIVE_CFG))
    (tmp_path / "book.json").write_text(json.dumps({"account": "rederive", "margin_currency": margin, "positions": [
        {"instrument": n, "quantity": q} for n, q in REDERIVE_LEGS]}))
    assert cli.main(["margin", str(tmp_path / "book.json"), "--market", str(tmp_path / "market.json"), "--config",
                     str(tmp_path / "config.json"), "--method", "span", "--json"]) == 0
    span = json.loads(capsys.readouterr().out)["span"]
    assert len(span["by_position"]) == len(REDERIVE_LEGS)
    assert all(len(x["risk_array"]) == 16 for x in span["by_position"])
    mine = rederive_span(span)
    scale = max(abs(span["total"]), abs(span["nov"]), 1e-300)

    def same(a, b, what):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * scale, err_msg=what)

    for u, v in span["by_underlying"].items():
        d = mine["by_underlying"][u]
        assert v["worst_scenario"] == d["worst_scenario"]
        for k in ("risk_array", "scan_risk", "intra_spread", "spot_charge", "inter_credit", "short_option_minimum",
                  "composite_delta", "risk"):
            same(v[k], d[k], f"{u}.{k}")
    for k in ("risk", "nov", "total"):
        same(span[k], mine[k], k)
    # the book exercises what it is meant to: three tiers with an intra spread, the spot month, the inter pair
    btc, eth = span["by_underlying"]["BTC"], span["by_underlying"]["ETH"]
    assert {x["tier"] for x in span["by_position"]} == {1, 2, 3}
    assert btc["intra_spread"] > 0 and btc["spot_charge"] > 0
    assert btc["inter_credit"] > 0 and eth["inter_credit"] > 0
    assert sum(x["in_spot_month"] for x in span["by_position"]) == 2
    assert btc["worst_scenario"] == 16 and eth["worst_scenario"] <= 14  # both inter-credit branches
