"""TIMS-style portfolio margin (pmjax.measures.tims, pmjax.scenarios.tims_grid) against hand derivations, float64.

Every expected number is computed here in numpy/scipy from docs/tims.md's formulas (the ten valuation points
written out literally, Black-76 by hand), never by calling the code under test.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from pmjax.core.book import book_from_portfolio
from pmjax.core.errors import InputError
from pmjax.core.instruments import parse_instrument
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.io.config import load_config
from pmjax.io.market import market_from_dict
from pmjax.measures.tims import TimsParams, tims_margin, tims_params, tims_section
from pmjax.scenarios.tims_grid import tims_grid

from conftest import tree_allclose

AS_OF = "2026-01-02T08:00:00Z"  # expiries at 08:00 UTC: whole days to expiry
BTC_S, ETH_S = 100_000.0, 3_000.0
SPOT = {"BTC": BTC_S, "ETH": ETH_S}
FWD = {"BTC": {"2026-01-22": 100_200.0, "2026-02-01": 100_300.0}, "ETH": {"2026-01-22": 3_003.0}}
DAYS = {"2026-01-22": 20, "2026-02-01": 30}
VOL = {"BTC": 0.5, "ETH": 0.6}
MARKET_DOC = {"as_of": AS_OF, "underlyings": {
    "BTC": {"spot": BTC_S, "forwards": FWD["BTC"], "vol": {"atm": VOL["BTC"]}},
    "ETH": {"spot": ETH_S, "forwards": FWD["ETH"], "vol": {"atm": VOL["ETH"]}}}}

RANGE = {"BTC": 0.08, "ETH": 0.10}
MIN = {"BTC": 0.005, "ETH": 0.006}
OFFSET = 0.4
REPO = pathlib.Path(__file__).resolve().parents[1]

CFG = {"horizon_days": 1, "tims": {
    "minimum_scope": "contracts",
    "underlyings": {u: {"price_range": RANGE[u], "vol_shifts": [0.0], "minimum_per_contract": MIN[u]}
                    for u in ("BTC", "ETH")},
    "product_groups": [{"class_groups": ["BTC", "ETH"], "offset": OFFSET}]}}
H = 1.0 / 365.0
# the rule's ten equidistant valuation points, written out: -5/5 .. -1/5, +1/5 .. +5/5 of the range
K = [-1.0, -0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8, 1.0]


def moves(u):
    return np.array([k * RANGE[u] for k in K])


def close(a, b, rtol=1e-10, atol=1e-10):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def mkt():
    return market_from_dict(copy.deepcopy(MARKET_DOC), source="test-market")


def run(mkt, legs, margin="USD", cfg=CFG):
    pf = make_portfolio([Position(parse_instrument(n), q) for n, q in legs], margin_currency=margin)
    book, _ = book_from_portfolio(pf, mkt, size=8)
    params = tims_params(cfg)
    result = jax.jit(tims_margin)(book, params)
    return result, tims_section(result, sorted({parse_instrument(n).underlying for n, _ in legs}), params=params)


def b76(F, K_, T, vol, call):
    if vol * vol * T <= 0:
        return max(F - K_, 0.0) if call else max(K_ - F, 0.0)
    sd = vol * math.sqrt(T)
    d1 = math.log(F / K_) / sd + 0.5 * sd
    d2 = d1 - sd
    return F * norm.cdf(d1) - K_ * norm.cdf(d2) if call else K_ * norm.cdf(-d2) - F * norm.cdf(-d1)


def with_offsets(loss_a, loss_b, f):
    """Hand rule for a product group of two class groups: at each point a gain of one offsets the other's loss
    up to f times that gain."""
    off_a = np.minimum(np.maximum(loss_a, 0), f * np.maximum(-loss_b, 0))
    off_b = np.minimum(np.maximum(loss_b, 0), f * np.maximum(-loss_a, 0))
    return off_a, off_b


# ---------------------------------------------------------------- the grid

def test_grid_is_ten_equidistant_points_times_each_vol_shift():
    g = tims_grid(jnp.asarray([0.08, 0.10]), None, 1.0)
    close(g.price_move, [moves("BTC"), moves("ETH")], atol=1e-15)
    close(g.vol_shift, np.zeros((2, 10)))
    close(g.weight, np.ones((2, 10)))
    close(g.dt, 1 / 365, atol=0)
    g = tims_grid(jnp.asarray([0.08, 0.10]), [-0.1, 0.0, 0.1], 2.0)
    assert g.price_move.shape == (2, 30)
    close(g.price_move[0], np.repeat(moves("BTC"), 3), atol=1e-15)  # price-major: point j under shifts i
    close(g.vol_shift[1], np.tile([-0.1, 0.0, 0.1], 10), atol=0)
    close(g.dt, 2 / 365, atol=0)
    g = tims_grid(jnp.asarray([0.08, 0.10]), jnp.asarray([[0.05, 0.1], [0.2, 0.3]]), 1.0)
    close(g.vol_shift, [np.tile([0.05, 0.1], 10), np.tile([0.2, 0.3], 10)], atol=0)
    with pytest.raises(ValueError):
        tims_grid(jnp.asarray([0.08, 0.10]), jnp.zeros((3, 2)), 1.0)


# ---------------------------------------------------------------- single class groups

def test_single_perpetual_requirement_is_quantity_spot_range_at_the_worst_point(mkt):
    q = 2.0
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", q)])
    b = doc["by_underlying"]["BTC"]
    close(b["price_moves"], moves("BTC"), atol=1e-15)
    close(b["loss"], -q * BTC_S * moves("BTC"))  # linear: P&L q S m
    close(b["offset"], np.zeros(10))
    assert b["worst_point"] == 1 and b["worst_move"] == -RANGE["BTC"]
    close(b["risk"], q * BTC_S * RANGE["BTC"])
    close(b["minimum"], q * BTC_S * MIN["BTC"])  # a perpetual carries the per-contract minimum (not binding)
    close([b["requirement"], doc["total"], doc["nov"]], [q * BTC_S * RANGE["BTC"]] * 2 + [0.0])
    assert list(doc["by_underlying"]) == ["BTC"]


def test_dated_short_future_loses_most_on_the_way_up(mkt):
    q, F = -3.0, FWD["BTC"]["2026-01-22"]
    r, doc = run(mkt, [("BTC_USDC-22JAN26", q)])
    b = doc["by_underlying"]["BTC"]
    close(b["loss"], -q * F * moves("BTC"))  # forwards scale with spot
    assert b["worst_point"] == 10
    close(doc["total"], abs(q) * F * RANGE["BTC"])


def test_short_call_loss_vector_is_black76_revaluation_after_one_day(mkt):
    name, q, strike = "BTC_USDC-1FEB26-105000-C", -1.5, 105_000.0
    F, T = FWD["BTC"]["2026-02-01"], DAYS["2026-02-01"] / 365.0
    r, doc = run(mkt, [(name, q)])
    b = doc["by_underlying"]["BTC"]
    today = q * b76(F, strike, T, VOL["BTC"], True)
    loss = np.array([today - q * b76(F * (1 + m), strike, T - H, VOL["BTC"], True) for m in moves("BTC")])
    close(b["loss"], loss, atol=1e-9)
    j = int(np.argmax(loss))
    assert b["worst_point"] == j + 1 == 10
    close(b["risk"], loss[j], atol=1e-9)
    close(b["minimum"], abs(q) * BTC_S * MIN["BTC"])
    close(b["requirement"], max(loss[j], abs(q) * BTC_S * MIN["BTC"]), atol=1e-9)
    close(doc["nov"], today, atol=1e-9)  # reported, not netted: total is the requirement
    close(doc["total"], b["requirement"], atol=0)


def test_per_contract_minimum_binds_for_a_far_out_of_the_money_short_call(mkt):
    name, q, strike = "BTC_USDC-22JAN26-200000-C", -4.0, 200_000.0
    F, T = FWD["BTC"]["2026-01-22"], DAYS["2026-01-22"] / 365.0
    r, doc = run(mkt, [(name, q)])
    b = doc["by_underlying"]["BTC"]
    today = q * b76(F, strike, T, VOL["BTC"], True)
    loss = np.array([today - q * b76(F * (1 + m), strike, T - H, VOL["BTC"], True) for m in moves("BTC")])
    minimum = abs(q) * BTC_S * MIN["BTC"]  # 4 coins x 0.5% x 100,000 = 2,000 USD
    assert loss.max() < minimum
    close(b["risk"], max(loss.max(), 0.0), atol=1e-9)
    close([b["minimum"], b["requirement"], doc["total"]], [minimum] * 3)


def test_long_option_minimum_is_capped_at_its_value_and_scope_short_options_drops_it(mkt):
    name, q, strike = "BTC_USDC-22JAN26-200000-C", 4.0, 200_000.0
    F, T = FWD["BTC"]["2026-01-22"], DAYS["2026-01-22"] / 365.0
    value = q * b76(F, strike, T, VOL["BTC"], True)
    assert value < q * BTC_S * MIN["BTC"]
    r, doc = run(mkt, [(name, q), ("ETH_USDC-PERPETUAL", 10.0)])
    close(doc["by_underlying"]["BTC"]["minimum"], value, atol=1e-9)
    close(doc["by_underlying"]["ETH"]["minimum"], 10.0 * ETH_S * MIN["ETH"])
    cfg = copy.deepcopy(CFG)
    cfg["tims"]["minimum_scope"] = "short_options"
    r, doc = run(mkt, [(name, q), ("ETH_USDC-PERPETUAL", 10.0), ("BTC_USDC-22JAN26-200000-P", -1.0)], cfg=cfg)
    close(doc["by_underlying"]["BTC"]["minimum"], 1.0 * BTC_S * MIN["BTC"])  # the short put only
    close(doc["by_underlying"]["ETH"]["minimum"], 0.0)


def test_spot_holding_carries_no_minimum(mkt):
    r, doc = run(mkt, [("ETH", 5.0)])
    e = doc["by_underlying"]["ETH"]
    close(e["minimum"], 0.0)
    close(e["requirement"], 5.0 * ETH_S * RANGE["ETH"])


# ---------------------------------------------------------------- product-group offsets

def test_btc_long_and_eth_long_lose_together_so_nothing_offsets(mkt):
    qb, qe = 1.0, 20.0
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", qb), ("ETH_USDC-PERPETUAL", qe)])
    lb, le = -qb * BTC_S * moves("BTC"), -qe * ETH_S * moves("ETH")
    ob, oe = with_offsets(lb, le, OFFSET)
    assert not ob.any() and not oe.any()  # same direction at every point: no gain meets a loss
    for u, loss in (("BTC", lb), ("ETH", le)):
        close(doc["by_underlying"][u]["offset"], np.zeros(10))
        close(doc["by_underlying"][u]["risk"], loss.max())
    close(doc["total"], qb * BTC_S * RANGE["BTC"] + qe * ETH_S * RANGE["ETH"])


@pytest.mark.parametrize("qe", [-20.0, -60.0])
def test_btc_long_and_eth_short_offset_up_to_the_offset_share_of_the_gain(mkt, qe):
    # qe -20: ETH's gain at the down points (20 x 3,000 x 10% = 6,000 at -5/5) covers 40% x 6,000 = 2,400 of
    # BTC's 8,000 loss; qe -60: 40% x 18,000 = 7,200 of it. The up points mirror it for ETH's loss.
    qb = 1.0
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", qb), ("ETH_USDC-PERPETUAL", qe)])
    lb, le = -qb * BTC_S * moves("BTC"), -qe * ETH_S * moves("ETH")
    ob, oe = with_offsets(lb, le, OFFSET)
    for u, loss, off in (("BTC", lb, ob), ("ETH", le, oe)):
        d = doc["by_underlying"][u]
        close(d["loss"], loss)
        close(d["offset"], off)
        close(d["loss_after_offset"], loss - off)
        w = int(np.argmax(loss - off))
        assert d["worst_point"] == w + 1
        close(d["offset_applied"], off[w])
        close(d["risk"], max((loss - off).max(), 0.0))
    close(doc["by_underlying"]["BTC"]["offset_applied"], OFFSET * abs(qe) * ETH_S * RANGE["ETH"])
    close(doc["total"], sum(max(doc["by_underlying"][u]["risk"], doc["by_underlying"][u]["minimum"])
                            for u in ("BTC", "ETH")))


def test_an_offset_never_exceeds_the_loss_it_offsets(mkt):
    # BTC short 0.1 loses 0.1 x 100,000 x 8% = 800 at +5/5, where ETH long 100 gains 100 x 3,000 x 10% = 30,000:
    # the credit 40% x 30,000 = 12,000 covers BTC's loss and no more. At the down points ETH loses and BTC's
    # gain offsets 40% of it (320 at -5/5).
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", -0.1), ("ETH_USDC-PERPETUAL", 100.0)])
    lb, le = 0.1 * BTC_S * moves("BTC"), -100.0 * ETH_S * moves("ETH")
    close(doc["by_underlying"]["BTC"]["offset"], np.maximum(lb, 0.0))  # fully offset, never below zero
    close(doc["by_underlying"]["BTC"]["loss_after_offset"], np.minimum(lb, 0.0))
    close(doc["by_underlying"]["BTC"]["risk"], 0.0)
    close(doc["by_underlying"]["BTC"]["requirement"], 0.1 * BTC_S * MIN["BTC"])
    close(doc["by_underlying"]["ETH"]["offset"], np.minimum(np.maximum(le, 0.0), OFFSET * np.maximum(-lb, 0.0)))
    close(doc["by_underlying"]["ETH"]["risk"], 100.0 * ETH_S * RANGE["ETH"] - OFFSET * 0.1 * BTC_S * RANGE["BTC"])


def test_without_product_groups_nothing_offsets(mkt):
    cfg = copy.deepcopy(CFG)
    cfg["tims"]["product_groups"] = []
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", 1.0), ("ETH_USDC-PERPETUAL", -20.0)], cfg=cfg)
    close(doc["total"], 1.0 * BTC_S * RANGE["BTC"] + 20.0 * ETH_S * RANGE["ETH"])
    assert doc["parameters"]["product_groups"] == []


# ---------------------------------------------------------------- margin currency, batching, config

def test_coin_margin_currency(mkt):
    # BTC margin: a linear BTC perpetual is worth q S m / (S (1 + m)) = q m / (1 + m) coins at point m; an ETH
    # perpetual's USD P&L converts at today's BTC price (BTC does not move in ETH's points)
    qb, qe = 2.0, -30.0
    r, doc = run(mkt, [("BTC_USDC-PERPETUAL", qb), ("ETH_USDC-PERPETUAL", qe)], margin="BTC")
    mb = moves("BTC")
    lb = -qb * mb / (1.0 + mb)
    le = -qe * ETH_S * moves("ETH") / BTC_S
    ob, oe = with_offsets(lb, le, OFFSET)
    close(doc["by_underlying"]["BTC"]["loss"], lb)
    close(doc["by_underlying"]["ETH"]["loss"], le)
    close(doc["by_underlying"]["BTC"]["offset"], ob)
    close(doc["by_underlying"]["BTC"]["risk"], (lb - ob).max())
    close(doc["by_underlying"]["BTC"]["minimum"], qb * MIN["BTC"])  # 0.5% of a coin per coin
    close(doc["by_underlying"]["ETH"]["minimum"], abs(qe) * ETH_S * MIN["ETH"] / BTC_S)
    close(doc["total"], max((lb - ob).max(), qb * MIN["BTC"]) + max((le - oe).max(), abs(qe) * ETH_S * MIN["ETH"] / BTC_S))


def test_jit_vmap_batch_equals_single_calls(mkt):
    books = []
    for legs in ([("BTC_USDC-PERPETUAL", 1.0), ("ETH_USDC-PERPETUAL", -20.0)],
                 [("BTC_USDC-22JAN26-200000-C", -4.0), ("ETH", 3.0), ("BTC-1FEB26-100000-P", 2.0)],
                 [("ETH_USDC-22JAN26", 7.0)]):
        pf = make_portfolio([Position(parse_instrument(n), q) for n, q in legs])
        books.append(book_from_portfolio(pf, mkt, size=8)[0])
    params = tims_params(CFG)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *books)
    batch = jax.jit(jax.vmap(tims_margin, in_axes=(0, None)))(stacked, params)
    for i, book in enumerate(books):
        single = tims_margin(book, params)
        assert tree_allclose(jax.tree_util.tree_map(lambda x: x[i], batch), single, rtol=1e-12, atol=1e-10)


def test_default_config_loads_with_the_daily_rules_calibrated_ranges():
    """TIMS scans the daily rule's 1-day 99% price range at the last close (``daily_price_scan_range`` of the
    committed calibration, docs/tims.md section 4), not SPAN's wider through-the-cycle range."""
    cfg = load_config()
    p = tims_params(cfg)
    close(p.price_range, [0.077048, 0.096030], atol=0)
    with open(REPO / "reports" / "calibration" / "calibrate.json", encoding="utf-8") as fh:
        cal = json.load(fh)["underlyings"]
    close(p.price_range, [cal[u]["daily_price_scan_range"] for u in ("BTC", "ETH")], atol=5e-7)
    close(p.offset, [0.332, 0.332], atol=0)
    assert int(p.product_group[0]) == int(p.product_group[1]) and p.minimum_scope == "contracts"
    assert p.grid.price_move.shape == (2, 10)
    assert cfg["tims"]["underlyings"]["BTC"]["price_range"] < cfg["span"]["underlyings"]["BTC"]["price_scan_range"]


def _bad(path, value):
    cfg = copy.deepcopy(CFG)
    d = cfg
    for k in path[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return cfg


_DELETE = object()


@pytest.mark.parametrize("path, value, field", [
    (("tims", "underlyings", "BTC", "price_range"), 0.0, "tims.underlyings.BTC.price_range"),
    (("tims", "underlyings", "BTC", "price_range"), 1.0, "tims.underlyings.BTC.price_range"),
    (("tims", "underlyings", "ETH", "price_range"), "0.1", "tims.underlyings.ETH.price_range"),
    (("tims", "underlyings", "ETH", "price_range"), _DELETE, "tims.underlyings.ETH.price_range"),
    (("tims", "underlyings", "ETH", "minimum_per_contract"), -0.01, "tims.underlyings.ETH.minimum_per_contract"),
    (("tims", "underlyings", "ETH", "vol_shifts"), [0.0, 0.1], "tims.underlyings.ETH.vol_shifts"),
    (("tims", "underlyings", "BTC", "vol_shifts"), [], "tims.underlyings.BTC.vol_shifts"),
    (("tims", "underlyings", "BTC", "vol_shifts"), [float("nan")], "tims.underlyings.BTC.vol_shifts"),
    (("tims", "underlyings", "ETH"), _DELETE, "tims.underlyings.ETH"),
    (("tims", "underlyings", "SOL"), {"price_range": 0.1}, "tims.underlyings.SOL"),
    (("tims", "product_groups"), [{"class_groups": ["BTC", "ETH"], "offset": 1.5}], "tims.product_groups[0].offset"),
    (("tims", "product_groups"), [{"class_groups": ["BTC", "DOGE"], "offset": 0.5}],
     "tims.product_groups[0].class_groups"),
    (("tims", "product_groups"), [{"class_groups": ["BTC"], "offset": 0.5}, {"class_groups": ["btc"], "offset": 0.5}],
     "tims.product_groups[1].class_groups"),
    (("tims", "product_groups"), [{"offset": 0.5}], "tims.product_groups[0]"),
    (("tims", "minimum_scope"), "everything", "tims.minimum_scope"),
    (("horizon_days",), -1, "horizon_days"),
    (("tims",), _DELETE, "tims"),
])
def test_bad_config_fields_raise_input_error_naming_the_field(path, value, field):
    with pytest.raises(InputError) as e:
        tims_params(_bad(path, value))
    assert e.value.field == field, str(e.value)
    assert f"field {field}" in str(e.value)


def test_params_check_their_invariants():
    p = tims_params(CFG)
    with pytest.raises(InputError, match="price_range"):
        TimsParams(price_range=jnp.asarray([0.1, 1.2]), vol_shifts=p.vol_shifts, minimum_per_contract=p.minimum_per_contract,
                   product_group=p.product_group, offset=p.offset, horizon_days=p.horizon_days)
    with pytest.raises(InputError, match="offset"):
        TimsParams(price_range=p.price_range, vol_shifts=p.vol_shifts, minimum_per_contract=p.minimum_per_contract,
                   product_group=p.product_group, offset=jnp.asarray([0.4, 0.5]), horizon_days=p.horizon_days)
    with pytest.raises(InputError, match="minimum_scope"):
        TimsParams(price_range=p.price_range, vol_shifts=p.vol_shifts, minimum_per_contract=p.minimum_per_contract,
                   product_group=p.product_group, offset=p.offset, horizon_days=p.horizon_days, minimum_scope="all")


def test_vol_shifts_revalue_options_at_every_point(mkt):
    name, q, strike = "BTC_USDC-1FEB26-100000-P", -1.0, 100_000.0
    F, T = FWD["BTC"]["2026-02-01"], DAYS["2026-02-01"] / 365.0
    cfg = copy.deepcopy(CFG)
    for u in ("BTC", "ETH"):
        cfg["tims"]["underlyings"][u]["vol_shifts"] = [-0.1, 0.0, 0.1]
    r, doc = run(mkt, [(name, q)], cfg=cfg)
    today = q * b76(F, strike, T, VOL["BTC"], False)
    loss = [today - q * b76(F * (1 + m), strike, T - H, VOL["BTC"] + dv, False)
            for m in moves("BTC") for dv in (-0.1, 0.0, 0.1)]
    b = doc["by_underlying"]["BTC"]
    close(b["loss"], loss, atol=1e-9)
    close(b["vol_shifts"], np.tile([-0.1, 0.0, 0.1], 10), atol=0)
    # the short put loses most at -5/5 under vol +0.1: scenario j v + i = 0 x 3 + 2, 1-based 3
    assert int(np.argmax(loss)) == 2 and b["worst_point"] == 3


def test_cli_method_tims_in_margin_stress_and_report(tmp_path, capsys):
    """--method tims in pmjax margin, stress and report: the same total, the section in the JSON and the HTML."""
    import json

    from pmjax.cli.app import main

    assert main(["margin", "examples/book.yaml", "--method", "tims", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)["tims"]
    assert one["total"] > 0 and set(one["by_underlying"]) == {"BTC", "ETH"}
    assert main(["stress", "examples/accounts.yaml", "--method", "span,tims", "--json"]) == 0
    accounts = json.loads(capsys.readouterr().out)["accounts"]
    assert all("tims" in a and a["tims"]["total"] >= 0 for a in accounts)
    out = tmp_path / "rep"
    assert main(["report", "examples/book.yaml", "--out", str(out), "--paths", "2000", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["tims"]["total"] == pytest.approx(one["total"], rel=1e-12)
    assert "TIMS-style valuation points" in (out / "report.html").read_text()
    assert any(r["method"] == "tims" for r in rep["comparison"])
