"""Rules-based margin (pmjax.measures.rules): every figure re-derived here from the published formulas, with option
marks from pmjax.price_instruments (the kernel's Black-76), never from pmjax.measures.rules itself."""

import numpy as np
import pytest

import pmjax
from pmjax.io.config import deep_merge, load_config
from pmjax.core.errors import InputError
from pmjax.io.market import market_from_dict
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.measures.qualification import account_equity, pm_qualification, qualifies_for_pm
from pmjax.measures.rules import rules_margin, rules_params, rules_section
from pmjax.io.portfolio import read_collateral

# Deribit standard-margin rates (configs/rules.yaml cites the sources); test_default_rates pins them.
A, FLOOR, M = 0.15, 0.10, 0.075
FUT = {"BTC": (0.02, 0.00005, 0.01, 0.00005), "ETH": (0.02, 0.000004, 0.01, 0.000004)}

S_BTC, S_ETH = 90_000.0, 3_000.0
F = {"30JAN26": 90_500.0, "27MAR26": 91_000.0, "26JUN26": 92_000.0}


@pytest.fixture(scope="module")
def mkt():
    return market_from_dict({
        "as_of": "2026-01-02T08:00:00Z",
        "underlyings": {
            "BTC": {"spot": S_BTC, "forwards": {"2026-01-30": F["30JAN26"], "2026-03-27": F["27MAR26"],
                                                 "2026-06-26": F["26JUN26"]}, "vol": {"atm": 0.5}},
            "ETH": {"spot": S_ETH, "forwards": {"2026-03-27": 3_030.0}, "vol": {"atm": 0.6}},
        }}, source="test-market")


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def rules(portfolio, market, config, **kw):
    """The rules section of ``portfolio`` (the three doors: params, margin, section)."""
    return rules_section(rules_margin(portfolio, market, rules_params(config, **kw)))


def with_rules(cfg, **over):
    return deep_merge(cfg, {"rules": over})


def book(*pairs, currency="USD"):
    return make_portfolio([Position(pmjax.parse_instrument(n), q) for n, q in pairs], margin_currency=currency)


def mark(name, market):
    (row,) = pmjax.price_instruments([pmjax.parse_instrument(name)], market)
    return row["price_usd"]


def fwd(name):
    return F[name.split("-")[1]]


# hand formulas, per coin, USD (Deribit standard margin; P = index for inverse, U for linear)
def short_call(K, U, P, mk):
    return max(A - max(K - U, 0.0) / U, FLOOR) * P + mk, M * P + mk


def short_put(K, U, P, mk):
    mm = max(M * P, M * mk) + mk
    return max(max(A - max(U - K, 0.0) / U, FLOOR) * P + mk, mm), mm


def naked(name, q, market):
    """(initial, maintenance) of a position margined alone, USD, from the formulas above (long spot: nothing,
    a coin held is collateral)."""
    inst = pmjax.parse_instrument(name)
    u = inst.underlying
    S = market.spot(u)
    if inst.is_option:
        mk = mark(name, market)
        if q > 0:
            return q * mk, q * mk
        U = market.forward(u, inst.expiry)
        P = S if inst.settlement == "inverse" else U
        im, mm = (short_call if inst.right == "call" else short_put)(inst.strike, U, P, mk)
        return -q * im, -q * mm
    if inst.kind == "spot" and q >= 0:
        return 0.0, 0.0
    b, s, mb, ms = FUT[u]
    P = S if inst.settlement == "inverse" else market.forward(u, inst.expiry)
    return (b + abs(q) * s) * abs(q) * P, (mb + abs(q) * ms) * abs(q) * P


def only_strategy(r):
    assert r["naked"] == [], r["naked"]
    (s,) = r["strategies"]
    return s


def check_totals(r):
    """Totals are the sums of strategies and naked legs, and of the by_position slices."""
    tot_i = sum(s["initial"] for s in r["strategies"]) + sum(n["initial"] for n in r["naked"])
    tot_m = sum(s["maintenance"] for s in r["strategies"]) + sum(n["maintenance"] for n in r["naked"])
    assert r["initial"] == pytest.approx(tot_i, rel=1e-12)
    assert r["maintenance"] == pytest.approx(tot_m, rel=1e-12)
    assert r["initial"] == pytest.approx(sum(p["initial"] for p in r["by_position"]), rel=1e-12, abs=1e-9)
    assert r["maintenance"] == pytest.approx(sum(p["maintenance"] for p in r["by_position"]), rel=1e-12, abs=1e-9)


# ---------------------------------------------------------------- config

def test_default_rates(cfg):
    r = cfg["rules"]
    assert r["mode"] == "strategy" and r["long_option_charge"] == "premium" and r["option_underlying"] == "forward"
    for u, (b, s, mb, ms) in FUT.items():
        d = r["underlyings"][u]
        assert (d["option_initial"], d["option_initial_floor"], d["option_maintenance"]) == (A, FLOOR, M)
        assert (d["future_initial"], d["future_initial_per_coin"], d["future_maintenance"],
                d["future_maintenance_per_coin"]) == (b, s, mb, ms)


@pytest.mark.parametrize("over,field", [({"mode": "reg_t"}, "rules.mode"),
                                        ({"long_option_charge": "half"}, "rules.long_option_charge"),
                                        ({"strategy_priority": ["vertical", "butterfly"]}, "rules.strategy_priority"),
                                        ({"underlyings": {"BTC": {"option_initial": -0.1}}},
                                         "rules.underlyings.BTC.option_initial")])
def test_bad_config_is_input_error(mkt, cfg, over, field):
    with pytest.raises(InputError) as e:
        rules(book(("BTC-27MAR26-95000-C", -1)), mkt, with_rules(cfg, **over))
    assert e.value.field == field


# ---------------------------------------------------------------- naked legs (Deribit standard)

@pytest.mark.parametrize("name", [
    "BTC-27MAR26-95000-C",    # OTM call, 0.15 - OTM/U = 0.106 > floor
    "BTC-27MAR26-120000-C",   # far OTM call: the 10% floor binds
    "BTC-27MAR26-80000-C",    # ITM call: full 15%
    "BTC-27MAR26-80000-P",    # OTM put: floor
    "BTC-27MAR26-88000-P",    # near-the-money OTM put
    "BTC-27MAR26-100000-P",   # ITM put
    "ETH_USDC-27MAR26-3200-C",  # linear: requirement on the forward, not the index
    "ETH_USDC-27MAR26-2800-P",
])
def test_short_option_standard(mkt, cfg, name):
    r = rules(book((name, -2)), mkt, with_rules(cfg, mode="deribit_standard"))
    im, mm = naked(name, -2, mkt)
    assert r["initial"] == pytest.approx(im, rel=1e-12) and r["maintenance"] == pytest.approx(mm, rel=1e-12)
    assert r["strategies"] == [] and r["naked"][0]["quantity"] == -2
    check_totals(r)


def test_otm_call_rate_by_hand(mkt, cfg):
    """Spelled out once: K 95000, U 91000: 0.15 - 4000/91000 = 0.10604 of the index, plus the mark."""
    mk = mark("BTC-27MAR26-95000-C", mkt)
    r = rules(book(("BTC-27MAR26-95000-C", -1)), mkt, cfg)
    assert r["initial"] == pytest.approx((0.15 - 4000 / 91000) * 90000 + mk, rel=1e-12)
    assert r["maintenance"] == pytest.approx(0.075 * 90000 + mk, rel=1e-12)


def test_deep_itm_put_initial_is_maintenance(mkt, cfg):
    """Deribit's put rule: IM = max(rate P + mark, MM), MM = max(0.075 P, 0.075 mark) + mark. A put struck at
    over 3x the forward has an inverse mark above 2 coins, so 0.075 mark > 0.15 P and MM sets IM."""
    name = "BTC-27MAR26-300000-P"
    mk = mark(name, mkt)
    assert mk > 2 * S_BTC
    r = rules(book((name, -1)), mkt, cfg)
    assert r["maintenance"] == pytest.approx(1.075 * mk, rel=1e-12)
    assert r["initial"] == pytest.approx(r["maintenance"], rel=1e-12)
    assert r["initial"] > 0.15 * S_BTC + mk


def test_index_underlying_option(mkt, cfg):
    name = "BTC-27MAR26-95000-C"
    r = rules(book((name, -1)), mkt, with_rules(cfg, option_underlying="index"))
    im, mm = short_call(95000, S_BTC, S_BTC, mark(name, mkt))
    assert r["initial"] == pytest.approx(im, rel=1e-12) and r["maintenance"] == pytest.approx(mm, rel=1e-12)


def test_long_option_premium_or_nothing(mkt, cfg):
    name = "BTC-27MAR26-100000-P"
    mk = mark(name, mkt)
    r = rules(book((name, 3)), mkt, cfg)
    assert r["initial"] == pytest.approx(3 * mk, rel=1e-12) and r["maintenance"] == pytest.approx(3 * mk, rel=1e-12)
    r0 = rules(book((name, 3)), mkt, with_rules(cfg, long_option_charge="none"))
    assert r0["initial"] == 0.0 and r0["maintenance"] == 0.0


@pytest.mark.parametrize("name,q", [("BTC-27MAR26", 150.0), ("BTC-27MAR26", -40.0), ("BTC-PERPETUAL", -2.5),
                                    ("ETH_USDC-PERPETUAL", 1000.0), ("ETH-27MAR26", -500.0), ("BTC", -1.0)])
def test_futures_size_terms(mkt, cfg, name, q):
    r = rules(book((name, q)), mkt, cfg)
    im, mm = naked(name, q, mkt)
    assert r["initial"] == pytest.approx(im, rel=1e-12) and r["maintenance"] == pytest.approx(mm, rel=1e-12)
    # the size term matters: 150 BTC at 2% + 150 * 0.005% = 2.75%
    if (name, q) == ("BTC-27MAR26", 150.0):
        assert r["initial"] == pytest.approx(0.0275 * 150 * S_BTC, rel=1e-12)


def test_long_spot_is_collateral_not_a_requirement(mkt, cfg):
    """Coins held need nothing (their value is equity); the old ``long_spot_charge: full_value`` is refused by
    name, ``none`` is still accepted."""
    r = rules(book(("BTC", 2.0), ("ETH", 10.0)), mkt, cfg)
    assert r["initial"] == 0.0 and r["maintenance"] == 0.0 and len(r["naked"]) == 2
    assert r["standard"] == {"initial": 0.0, "maintenance": 0.0}
    r = rules(book(("BTC", 2.0), ("ETH", 10.0)), mkt, with_rules(cfg, long_spot_charge="none"))
    assert r["initial"] == 0.0 and r["maintenance"] == 0.0
    with pytest.raises(InputError) as e:
        rules_params(with_rules(cfg, long_spot_charge="full_value"))
    assert e.value.field == "rules.long_spot_charge" and "collateral" in str(e.value)


def test_coin_margin_currency(mkt, cfg):
    pairs = [("BTC-27MAR26-95000-C", -1), ("ETH-27MAR26-2800-P", -10), ("BTC-27MAR26", 5)]
    usd = rules(book(*pairs), mkt, cfg)
    for cur, spot in (("BTC", S_BTC), ("ETH", S_ETH)):
        coin = rules(book(*pairs, currency=cur), mkt, cfg)
        assert coin["initial"] == pytest.approx(usd["initial"] / spot, rel=1e-12)
        assert coin["maintenance"] == pytest.approx(usd["maintenance"] / spot, rel=1e-12)
    # the long future covers the short call (nothing on the call); the ETH put stays naked
    im = naked("ETH-27MAR26-2800-P", -10, mkt)[0] + naked("BTC-27MAR26", 5, mkt)[0]
    coin = rules(book(*pairs, currency="BTC"), mkt, cfg)
    assert [s["type"] for s in coin["strategies"]] == ["covered_call"]
    assert coin["initial"] == pytest.approx(im / S_BTC, rel=1e-12)
    std = rules(book(*pairs, currency="ETH"), mkt, with_rules(cfg, mode="deribit_standard"))
    assert std["initial"] == pytest.approx(sum(naked(n, q, mkt)[0] for n, q in pairs) / S_ETH, rel=1e-12)


# ---------------------------------------------------------------- strategies

@pytest.mark.parametrize("short,long_,type_", [
    ("BTC-27MAR26-95000-C", "BTC-27MAR26-100000-C", "vertical_call_credit"),
    ("BTC-27MAR26-85000-P", "BTC-27MAR26-80000-P", "vertical_put_credit"),
])
def test_credit_vertical(mkt, cfg, short, long_, type_):
    q = 2.0
    r = rules(book((short, -q), (long_, q)), mkt, cfg)
    s = only_strategy(r)
    width = abs(pmjax.parse_instrument(short).strike - pmjax.parse_instrument(long_).strike)
    standalone_mm = naked(short, -q, mkt)[1] + naked(long_, q, mkt)[1]
    assert s["type"] == type_ and s["quantity"] == q
    assert s["initial"] == pytest.approx(q * width, rel=1e-12)
    assert s["maintenance"] == pytest.approx(min(q * width, standalone_mm), rel=1e-12)
    assert {(g["instrument"], g["quantity"]) for g in s["legs"]} == {(short, -q), (long_, q)}
    check_totals(r)


@pytest.mark.parametrize("short,long_,type_", [
    ("BTC-27MAR26-100000-C", "BTC-27MAR26-95000-C", "vertical_call_debit"),
    ("BTC-27MAR26-80000-P", "BTC-27MAR26-85000-P", "vertical_put_debit"),
])
def test_debit_vertical(mkt, cfg, short, long_, type_):
    r = rules(book((short, -1.5), (long_, 1.5)), mkt, cfg)
    s = only_strategy(r)
    debit = mark(long_, mkt) - mark(short, mkt)
    assert debit > 0 and s["type"] == type_
    assert s["initial"] == pytest.approx(1.5 * debit, rel=1e-12)
    assert s["maintenance"] == pytest.approx(1.5 * debit, rel=1e-12)
    check_totals(r)


def test_iron_condor_wider_wing(mkt, cfg):
    legs = [("BTC-27MAR26-75000-P", 1), ("BTC-27MAR26-80000-P", -1), ("BTC-27MAR26-100000-C", -1),
            ("BTC-27MAR26-108000-C", 1)]
    r = rules(book(*legs), mkt, cfg)
    s = only_strategy(r)
    assert s["type"] == "iron_condor" and s["quantity"] == 1
    assert s["initial"] == pytest.approx(8000.0, rel=1e-12)  # the call wing, 108000 - 100000, is the wider
    assert s["maintenance"] == pytest.approx(min(8000.0, sum(naked(n, q, mkt)[1] for n, q in legs)), rel=1e-12)
    # the condor beats two verticals (5000 + 8000) and the naked legs
    assert r["initial"] < 13000.0 < r["standard"]["initial"]
    check_totals(r)
    # by_position shares the condor's requirement in proportion to the legs' standalone requirements
    alone = {n: naked(n, q, mkt) for n, q in legs}
    tot_i, tot_m = sum(a[0] for a in alone.values()), sum(a[1] for a in alone.values())
    for row in r["by_position"]:
        assert row["strategy"] == "iron_condor" and row["strategy_id"] == s["id"]
        assert row["initial"] == pytest.approx(s["initial"] * alone[row["instrument"]][0] / tot_i, rel=1e-12)
        assert row["maintenance"] == pytest.approx(s["maintenance"] * alone[row["instrument"]][1] / tot_m, rel=1e-12)


def test_covered_call_with_spot(mkt, cfg):
    r = rules(book(("BTC-27MAR26-100000-C", -1), ("BTC", 1)), mkt, cfg)
    s = only_strategy(r)
    # the call needs nothing; the spot needs nothing either (a coin held is collateral)
    assert s["type"] == "covered_call" and s["initial"] == s["maintenance"] == 0.0
    assert r["initial"] == r["maintenance"] == 0.0
    assert r["standard"]["initial"] == pytest.approx(naked("BTC-27MAR26-100000-C", -1, mkt)[0], rel=1e-12)


def test_covered_call_with_future(mkt, cfg):
    """The option needs nothing; the future keeps its own margin (size term on its whole position)."""
    r = rules(book(("BTC-27MAR26-100000-C", -2), ("BTC-26JUN26", 3)), mkt, cfg)
    (s,) = r["strategies"]
    b, sz, mb, ms = FUT["BTC"]
    assert s["type"] == "covered_call" and s["quantity"] == 2
    assert s["initial"] == pytest.approx(2 * (b + 3 * sz) * S_BTC, rel=1e-12)
    assert s["maintenance"] == pytest.approx(2 * (mb + 3 * ms) * S_BTC, rel=1e-12)
    (n,) = r["naked"]
    assert n["instrument"] == "BTC-26JUN26" and n["quantity"] == pytest.approx(1.0)
    assert n["initial"] == pytest.approx((b + 3 * sz) * S_BTC, rel=1e-12)
    assert r["initial"] == pytest.approx(naked("BTC-26JUN26", 3, mkt)[0], rel=1e-12)
    check_totals(r)


def test_future_expiring_first_does_not_cover(mkt, cfg):
    r = rules(book(("BTC-27MAR26-100000-C", -1), ("BTC-30JAN26", 1)), mkt, cfg)
    assert r["strategies"] == [] and r["initial"] == pytest.approx(r["standard"]["initial"], rel=1e-12)


def test_covered_put_with_short_future(mkt, cfg):
    r = rules(book(("ETH-27MAR26-2800-P", -10), ("ETH-PERPETUAL", -10)), mkt, cfg)
    s = only_strategy(r)
    b, sz, mb, ms = FUT["ETH"]
    assert s["type"] == "covered_put" and s["quantity"] == 10
    assert s["initial"] == pytest.approx(10 * (b + 10 * sz) * S_ETH, rel=1e-12)
    assert s["maintenance"] == pytest.approx(10 * (mb + 10 * ms) * S_ETH, rel=1e-12)


def test_covered_put_with_short_spot_by_hand(mkt, cfg):
    """A short put against short (borrowed) spot: nothing on the put; the short spot keeps its own requirement,
    the delta-one rate on its whole size: 2 coins x (2% + 2 x 0.005%) x index 90,000 = 3,618 initial,
    2 x (1% + 2 x 0.005%) x 90,000 = 1,818 maintenance (configs/rules.yaml BTC futures rates)."""
    put = "BTC-27MAR26-80000-P"
    r = rules(book((put, -2), ("BTC", -2)), mkt, cfg)
    s = only_strategy(r)
    b, sz, mb, ms = FUT["BTC"]
    assert (b, sz, mb, ms) == (0.02, 0.00005, 0.01, 0.00005)
    assert s["type"] == "covered_put" and s["quantity"] == 2
    assert {(g["instrument"], g["quantity"]) for g in s["legs"]} == {(put, -2), ("BTC", -2)}
    assert s["initial"] == pytest.approx(2 * (0.02 + 2 * 0.00005) * 90_000, rel=1e-12) == pytest.approx(3618.0)
    assert s["maintenance"] == pytest.approx(2 * (0.01 + 2 * 0.00005) * 90_000, rel=1e-12) == pytest.approx(1818.0)
    assert r["initial"] == pytest.approx(naked("BTC", -2, mkt)[0], rel=1e-12)
    # margined alone, the put would add its own requirement (15% less OTM, floored at 10%, of the index + mark)
    alone = naked(put, -2, mkt)[0]
    assert alone == pytest.approx(2 * (max(0.15 - (F["27MAR26"] - 80_000) / F["27MAR26"], 0.10) * 90_000
                                       + mark(put, mkt)), rel=1e-12)
    assert r["standard"]["initial"] == pytest.approx(alone + 3618.0, rel=1e-12)
    check_totals(r)
    # long spot does not cover a short put
    r = rules(book((put, -1), ("BTC", 1)), mkt, cfg)
    assert r["strategies"] == []


def test_put_calendar_net_debit_by_hand(mkt, cfg):
    """Short the January 85,000 put, long the June one: the requirement is the net debit, the far mark less the
    near mark (both from the kernel), floored at 0; the legs alone would cost the short put's requirement plus
    the long put's premium."""
    near, far = "BTC-30JAN26-85000-P", "BTC-26JUN26-85000-P"
    r = rules(book((near, -1.5), (far, 1.5)), mkt, cfg)
    s = only_strategy(r)
    m_near, m_far = mark(near, mkt), mark(far, mkt)
    debit = m_far - m_near
    assert s["type"] == "calendar" and s["quantity"] == 1.5 and debit > 0
    assert s["initial"] == pytest.approx(1.5 * debit, rel=1e-12)
    assert s["maintenance"] == pytest.approx(1.5 * debit, rel=1e-12)
    U = F["30JAN26"]
    short_alone = max(max(0.15 - (U - 85_000) / U, 0.10) * 90_000 + m_near, max(0.075 * 90_000, 0.075 * m_near) + m_near)
    assert r["standard"]["initial"] == pytest.approx(1.5 * (short_alone + m_far), rel=1e-12)
    assert r["initial"] < r["standard"]["initial"]
    check_totals(r)
    # without the premium charge a debit needs nothing
    r0 = rules(book((near, -1.5), (far, 1.5)), mkt, with_rules(cfg, long_option_charge="none"))
    assert only_strategy(r0)["initial"] == 0.0


def test_calendar_net_debit(mkt, cfg):
    near, far = "BTC-30JAN26-95000-C", "BTC-26JUN26-95000-C"
    r = rules(book((near, -1), (far, 1)), mkt, cfg)
    s = only_strategy(r)
    debit = mark(far, mkt) - mark(near, mkt)
    assert s["type"] == "calendar" and debit > 0
    assert s["initial"] == pytest.approx(debit, rel=1e-12) and s["maintenance"] == pytest.approx(debit, rel=1e-12)


def test_reverse_calendar_is_naked(mkt, cfg):
    r = rules(book(("BTC-30JAN26-95000-C", 1), ("BTC-26JUN26-95000-C", -1)), mkt, cfg)
    assert r["strategies"] == []


@pytest.mark.parametrize("call,put,type_", [("BTC-27MAR26-90000-C", "BTC-27MAR26-90000-P", "straddle"),
                                            ("BTC-27MAR26-100000-C", "BTC-27MAR26-80000-P", "strangle")])
def test_straddle_strangle(mkt, cfg, call, put, type_):
    r = rules(book((call, -2), (put, -2)), mkt, cfg)
    s = only_strategy(r)
    ci, cm = naked(call, -1, mkt)
    pi, pm = naked(put, -1, mkt)
    mc, mp = mark(call, mkt), mark(put, mkt)
    assert s["type"] == type_
    assert s["initial"] == pytest.approx(2 * (ci + mp if ci >= pi else pi + mc), rel=1e-12)
    assert s["maintenance"] == pytest.approx(2 * (cm + mp if cm >= pm else pm + mc), rel=1e-12)
    assert s["initial"] < 2 * (ci + pi)


def test_partial_quantity(mkt, cfg):
    """2 short calls against 1 long call: one vertical of 1 and one naked short call."""
    short, long_ = "BTC-27MAR26-95000-C", "BTC-27MAR26-100000-C"
    r = rules(book((short, -2), (long_, 1)), mkt, cfg)
    (s,) = r["strategies"]
    (n,) = r["naked"]
    assert s["type"] == "vertical_call_credit" and s["quantity"] == 1 and s["initial"] == pytest.approx(5000.0)
    assert n["instrument"] == short and n["quantity"] == -1
    assert n["initial"] == pytest.approx(naked(short, -1, mkt)[0], rel=1e-12)
    assert r["initial"] == pytest.approx(5000.0 + naked(short, -1, mkt)[0], rel=1e-12)
    rows = [p for p in r["by_position"] if p["instrument"] == short]
    assert sorted(p["strategy"] for p in rows) == ["naked", "vertical_call_credit"]
    assert sum(p["quantity"] for p in rows) == -2
    check_totals(r)


def test_spread_maintenance_capped_at_legs(mkt, cfg):
    """A credit spread wider than its legs' standalone maintenance (but saving initial margin) is
    charged that standalone maintenance: a hedge never costs more to keep than its legs alone."""
    short = "BTC-27MAR26-95000-C"
    s_im, s_mm = naked(short, -1, mkt)
    for k in range(100_000, 200_000, 1000):
        long_ = f"BTC-27MAR26-{k}-C"
        width, m_l = k - 95_000.0, mark(long_, mkt)
        if s_mm + m_l < width < s_im + m_l:
            break
    else:
        raise AssertionError("no strike puts the width between the maintenance and initial sums")
    r = rules(book((short, -1), (long_, 1)), mkt, cfg)
    st = only_strategy(r)
    assert st["initial"] == pytest.approx(width, rel=1e-12)
    assert st["maintenance"] == pytest.approx(s_mm + m_l, rel=1e-12) and st["maintenance"] < width


@pytest.mark.parametrize("pairing", ["greedy", "optimal"])
def test_greedy_takes_the_biggest_saving_first(mkt, cfg, pairing):
    """Of two long calls the short call could pair with, the narrower spread (larger saving) wins, whatever the
    order of the positions; of two covers saving alike, spot (needing nothing) beats a margined future (both
    pairings)."""
    cfg = with_rules(cfg, pairing=pairing)
    r = rules(book(("BTC-27MAR26-95000-C", -1), ("BTC-27MAR26-110000-C", 1), ("BTC-27MAR26-100000-C", 1)),
                     mkt, cfg)
    (s,) = r["strategies"]
    assert {g["instrument"] for g in s["legs"]} == {"BTC-27MAR26-95000-C", "BTC-27MAR26-100000-C"}
    assert [n["instrument"] for n in r["naked"]] == ["BTC-27MAR26-110000-C"]
    collateral = with_rules(cfg, long_spot_charge="none")
    r = rules(book(("BTC-27MAR26-95000-C", -1), ("BTC-26JUN26", 1), ("BTC", 1)), mkt, collateral)
    (s,) = r["strategies"]
    assert {g["instrument"] for g in s["legs"]} == {"BTC-27MAR26-95000-C", "BTC"} and s["initial"] == 0.0
    assert r["initial"] == pytest.approx(naked("BTC-26JUN26", 1, mkt)[0], rel=1e-12)


def test_wide_credit_spread_not_formed(mkt, cfg):
    """A spread whose width exceeds the naked requirement saves nothing, so the legs stay naked."""
    pairs = [("BTC-27MAR26-95000-C", -1), ("BTC-27MAR26-300000-C", 1)]
    r = rules(book(*pairs), mkt, cfg)
    assert r["strategies"] == [] and r["initial"] == pytest.approx(sum(naked(n, q, mkt)[0] for n, q in pairs))


def test_standard_mode_recognises_nothing(mkt, cfg):
    pairs = [("BTC-27MAR26-95000-C", -1), ("BTC-27MAR26-100000-C", 1), ("BTC", 1)]
    r = rules(book(*pairs), mkt, with_rules(cfg, mode="deribit_standard"))
    assert r["mode"] == "deribit_standard" and r["strategies"] == []
    assert r["initial"] == pytest.approx(sum(naked(n, q, mkt)[0] for n, q in pairs), rel=1e-12)
    assert r["maintenance"] == pytest.approx(sum(naked(n, q, mkt)[1] for n, q in pairs), rel=1e-12)


def test_priority_order(mkt, cfg):
    """Greedy with verticals first: the same legs form two verticals (13000) instead of one condor (8000);
    optimal pairing forms the condor whatever the order (the priority only names the types recognised)."""
    legs = [("BTC-27MAR26-75000-P", 1), ("BTC-27MAR26-80000-P", -1), ("BTC-27MAR26-100000-C", -1),
            ("BTC-27MAR26-108000-C", 1)]
    r = rules(book(*legs), mkt, with_rules(cfg, strategy_priority=["vertical", "iron_condor"], pairing="greedy"))
    assert sorted(s["type"] for s in r["strategies"]) == ["vertical_call_credit", "vertical_put_credit"]
    assert r["initial"] == pytest.approx(13000.0) and r["pairing"] == "greedy"
    r = rules(book(*legs), mkt, with_rules(cfg, strategy_priority=["vertical", "iron_condor"]))
    assert [s["type"] for s in r["strategies"]] == ["iron_condor"] and r["initial"] == pytest.approx(8000.0)
    assert r["pairing"] == "optimal" and r["pairing_detail"]["saving_vs_greedy"] == pytest.approx(5000.0)
    r = rules(book(*legs), mkt, with_rules(cfg, strategy_priority=["vertical"]))
    assert r["initial"] == pytest.approx(13000.0)  # condors not recognised


def test_random_books_never_cost_more_than_standard(mkt, cfg):
    """Strategy margin <= standard margin, every coin of every position is used exactly once."""
    rng = np.random.default_rng(7)
    names = [f"BTC-{e}-{k}-{r}" for e in ("30JAN26", "27MAR26") for k in (85000, 90000, 95000) for r in "CP"]
    names += ["BTC", "BTC-PERPETUAL", "BTC-27MAR26", "BTC-26JUN26-90000-C"]
    for _ in range(25):
        pick = rng.choice(len(names), size=6, replace=False)
        pairs = [(names[i], float(rng.integers(-3, 4))) for i in pick]
        r = rules(book(*pairs), mkt, cfg)
        assert r["initial"] <= r["standard"]["initial"] * (1 + 1e-12)
        assert r["maintenance"] <= r["standard"]["maintenance"] * (1 + 1e-12)
        check_totals(r)
        for n, q in pairs:
            assert sum(p["quantity"] for p in r["by_position"] if p["instrument"] == n) == pytest.approx(q)


def test_seed_portfolio_on_bundled_market(market, cfg):
    """The seed book: a covered call and an iron condor are recognised; the long ETH puts are paid in full."""
    from pmjax.apps.demo import seed_portfolio

    p = seed_portfolio(market)
    r = rules(p, market, cfg)
    assert sorted(s["type"] for s in r["strategies"]) == ["covered_call", "iron_condor"]
    put = next(x for x in p.positions if x.quantity == 2.0)
    # spot needs nothing (collateral; the BTC covers the short call): the condor's width and the puts' premium
    assert r["initial"] == pytest.approx(90.0 + 2 * mark(put.instrument.name, market), rel=1e-12)  # 3300/3380
    assert r["initial"] < r["standard"]["initial"]


def test_zero_position_and_float32(mkt, cfg):
    import jax.numpy as jnp

    p = make_portfolio([Position(pmjax.parse_instrument("BTC-27MAR26-95000-C"), -1.0),
                        Position(pmjax.parse_instrument("BTC-27MAR26-95000-C"), 1.0),
                        Position(pmjax.parse_instrument("BTC-27MAR26-80000-P"), -1.0)])
    r = rules(p, mkt, cfg)
    assert [row["quantity"] for row in r["by_position"]] == [0.0, -1.0]
    assert r["initial"] == pytest.approx(naked("BTC-27MAR26-80000-P", -1, mkt)[0], rel=1e-12)
    r32 = rules(p, mkt, cfg, dtype=jnp.float32)
    assert r32["initial"] == pytest.approx(r["initial"], rel=1e-5)


# ---------------------------------------------------------------- coins held: position or collateral

CALL_100K = "BTC-30JAN26-100000-C"


def test_covered_call_by_coins_held_written_either_way_by_hand(mkt, cfg):
    """1 BTC + short 1 BTC-30JAN26-100000-C. Margined alone the call needs
    IM = max(0.15 - (100,000 - 90,500) / 90,500, 0.10) x 90,000 + mark = 0.10 x 90,000 + mark = 9,000 + mark and
    MM = 0.075 x 90,000 + mark = 6,750 + mark; covered by the coin held it needs nothing, and the coin needs
    nothing: rules 0. The same coin in ``collateral:`` gives the same figures, in USD and in BTC."""
    mk = mark(CALL_100K, mkt)
    assert naked(CALL_100K, -1, mkt) == pytest.approx((9_000.0 + mk, 6_750.0 + mk), rel=1e-12)
    std = with_rules(cfg, mode="deribit_standard")
    for cur, to_cur in (("USD", 1.0), ("BTC", 1.0 / S_BTC)):
        as_position = book(("BTC", 1.0), (CALL_100K, -1.0), currency=cur)
        as_collateral = book((CALL_100K, -1.0), currency=cur)
        as_collateral.collateral = {"BTC": 1.0}
        r_pos, r_coll = rules(as_position, mkt, cfg), rules(as_collateral, mkt, cfg)
        for r in (r_pos, r_coll):
            (s,) = r["strategies"]
            assert s["type"] == "covered_call" and s["quantity"] == 1.0
            assert r["initial"] == r["maintenance"] == 0.0
        assert r_coll["naked"] == [] and [g.get("collateral", False) for g in r_coll["strategies"][0]["legs"]] == [
            False, True]
        assert [row["instrument"] for row in r_coll["by_position"]] == [CALL_100K]
        # Deribit standard (S:SM) offsets nothing: the call keeps its naked requirement, the coin still needs nothing
        for p in (as_position, as_collateral):
            r = rules(p, mkt, std)
            assert r["initial"] == pytest.approx((9_000.0 + mk) * to_cur, rel=1e-12)
            assert r["maintenance"] == pytest.approx((6_750.0 + mk) * to_cur, rel=1e-12)
        # equity is the same either way: the coin at the index less the call's mark
        assert account_equity(as_position, mkt) == pytest.approx(account_equity(as_collateral, mkt, {"BTC": 1.0}),
                                                                 rel=1e-12)
        assert account_equity(as_position, mkt) == pytest.approx((S_BTC - mk) * to_cur, rel=1e-12)


def test_coin_collateral_covers_only_what_it_holds(mkt, cfg):
    """0.4 BTC of collateral against 1 short call: 0.4 covered (nothing), 0.6 naked at 9,000 + mark per coin;
    10 BTC against 5 short calls in a BTC account: all covered, written either way (the issue's 10 BTC vs
    1.13857 BTC became 0 and 0). Collateral in a coin the account does not trade, or USD, covers nothing."""
    mk = mark(CALL_100K, mkt)
    p = book((CALL_100K, -1.0))
    p.collateral = {"BTC": 0.4, "USD": 1e6, "ETH": 100.0}
    r = rules(p, mkt, cfg)
    (s,) = r["strategies"]
    assert s["quantity"] == pytest.approx(0.4) and s["initial"] == 0.0
    (n,) = r["naked"]
    assert n["instrument"] == CALL_100K and n["quantity"] == pytest.approx(-0.6)
    assert r["initial"] == pytest.approx(0.6 * (9_000.0 + mk), rel=1e-12)
    assert r["maintenance"] == pytest.approx(0.6 * (6_750.0 + mk), rel=1e-12)
    pos = book(("BTC", 10.0), (CALL_100K, -5.0), currency="BTC")
    coll = book((CALL_100K, -5.0), currency="BTC")
    coll.collateral = {"BTC": 10.0}
    assert rules(pos, mkt, cfg)["initial"] == rules(coll, mkt, cfg)["initial"] == 0.0
    usd_only = book((CALL_100K, -1.0))
    usd_only.collateral = {"USD": 1e6}
    assert rules(usd_only, mkt, cfg)["initial"] == pytest.approx(9_000.0 + mk, rel=1e-12)


def test_fully_funded_covered_call_is_never_margin_called_on_an_up_move(market, cfg):
    """The issue's account (1 BTC + short 1 BTC-30JAN26-100000-C + the premium in USD), as a spot position and
    as coin collateral, monitored with primary rules on the spot path 89,025 -> 93,000 -> 98,000 -> 150,000:
    requirement 0 and status ok at every step. Equity is 1 BTC + premium - call <= the spot's value once the
    call gains, so the old 'paid in full' requirement (the spot's value) was a margin call."""
    import datetime as dt

    from pmjax.apps.monitor import Monitor, market_at

    prem = mark(CALL_100K, market)
    as_position = make_portfolio([Position(pmjax.parse_instrument("BTC"), 1.0),
                                  Position(pmjax.parse_instrument(CALL_100K), -1.0)], account="spot",
                                 collateral={"USD": prem})
    as_collateral = make_portfolio([Position(pmjax.parse_instrument(CALL_100K), -1.0)], account="coll",
                                   collateral={"USD": prem, "BTC": 1.0})
    mon = Monitor([as_position, as_collateral], market, cfg, methods=["rules"], primary="rules")
    spots = [market.spot("BTC"), 93_000.0, 98_000.0, 150_000.0]
    for k, s in enumerate(spots):
        m = market if k == 0 else market_at(market, market.as_of + dt.timedelta(hours=k), {"BTC": s})
        recs = mon.update(m)
        call = mark(CALL_100K, m)
        for rec in recs:
            r = rec["margins"]["rules"]
            assert r["requirement"] == r["initial_requirement"] == 0.0
            assert rec["status"] == "ok" and rec["events"] == []
            assert rec["equity"] == pytest.approx(s + prem - call, rel=1e-9) and rec["equity"] > 0
        assert recs[0]["equity"] == pytest.approx(recs[1]["equity"], rel=1e-12)
        if k >= 2:
            assert call > prem and recs[0]["equity"] < s  # below the old requirement: was a margin call


# ---------------------------------------------------------------- PM qualification

def test_equity_and_qualification(mkt, cfg, tmp_path):
    path = tmp_path / "acct.yaml"
    path.write_text("margin_currency: USD\ncollateral: {USD: 50000, BTC: 0.5}\n"
                    "positions:\n  - {instrument: BTC-27MAR26-100000-C, quantity: -1}\n"
                    "  - {instrument: ETH, quantity: 2}\n  - {instrument: BTC-27MAR26, quantity: 3}\n")
    coll = read_collateral(str(path))
    assert coll == {"USD": 50000.0, "BTC": 0.5}
    p = pmjax.load_portfolio(str(path))
    eq = account_equity(p, mkt, coll)
    expected = 50000 + 0.5 * S_BTC - mark("BTC-27MAR26-100000-C", mkt) + 2 * S_ETH
    assert eq == pytest.approx(expected, rel=1e-12)
    ok, why = qualifies_for_pm(eq, cfg, "USD", mkt)
    assert ok == (expected >= 100_000) and "100,000 USD" in why
    assert not qualifies_for_pm(99_999.0, cfg, "USD", mkt)[0]
    assert qualifies_for_pm(100_000.0, cfg, "USD", mkt)[0]
    # in coins: the USD minimum converts at the index; a coin minimum converts the other way
    assert qualifies_for_pm(100_000 / S_BTC * 1.0001, cfg, "BTC", mkt)[0]
    assert not qualifies_for_pm(100_000 / S_BTC * 0.9999, cfg, "BTC", mkt)[0]
    coin_cfg = with_rules(cfg, pm_minimum_equity={"amount": 1, "currency": "BTC"})
    assert qualifies_for_pm(S_BTC, coin_cfg, "USD", mkt)[0] and not qualifies_for_pm(S_BTC - 1, coin_cfg, "USD", mkt)[0]
    pb = book(("BTC-27MAR26-100000-C", -1), ("ETH", 2), currency="BTC")
    assert account_equity(pb, mkt, coll) == pytest.approx(expected / S_BTC, rel=1e-12)
    q = pm_qualification(pb, mkt, cfg, coll)
    assert q["currency"] == "BTC" and q["minimum"] == pytest.approx(100_000 / S_BTC, rel=1e-12)
    assert q["equity"] == pytest.approx(expected / S_BTC, rel=1e-12) and q["qualifies"] == (expected >= 100_000)


def test_collateral_validation(tmp_path):
    assert read_collateral({"positions": []}) == {}
    assert read_collateral({"USDC": 10, "usd": 5}, where="arg") == {"USD": 15.0}
    with pytest.raises(InputError) as e:
        read_collateral({"collateral": {"DOGE": 1}})
    assert e.value.field == "collateral.DOGE"
    bad = tmp_path / "bad.yaml"
    bad.write_text("collateral: {BTC: lots}\npositions: []\n")
    with pytest.raises(InputError) as e:
        read_collateral(str(bad))
    assert e.value.field == "collateral.BTC" and e.value.source == str(bad)
