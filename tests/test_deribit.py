"""The Deribit-style grid (pmjax.measures.deribit): Deribit's documented private/pme/simulate example reproduced number
for number, and the option parts checked against Black-76 computed here by hand."""

import datetime as dt
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmjax.batch.accounts import AccountBatch
from conftest import SHARED_DATA, needs_shared_data
from scipy.stats import norm

from pmjax.core.book import book_from_portfolio
from pmjax.io.config import deep_merge, load_config
from pmjax.apps.margin import deribit_report
from pmjax.apps.pme_simulate import compare_with_pme_simulate, main, pme_simulate_inputs
from pmjax.apps.stress import deribit_margin_sharded, deribit_sections
from pmjax.batch.sharding import vmapped
from pmjax.measures.deribit import EXTENDED_MOVES, DeribitParams, DeribitResult, deribit_margin, deribit_params
from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument
from pmjax.io.market import market_from_dict
from pmjax.core.portfolio import Position, make_portfolio

DATA = pathlib.Path(__file__).resolve().parent / "data"
DOCS_EXAMPLE = "pme_simulate_docs_example_20240617.json"
ETH_CAPTURE = "pme_simulate_eth_capture_20260215.json"
UTC = dt.timezone.utc


def simulate_result(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["response"]["result"]


def check_docs_example(result):
    """Every vector and figure of the BTC docs example from pmjax's grid, within 1e-9 BTC."""
    portfolio, market, config = pme_simulate_inputs(result)
    assert [(p.instrument.name, p.quantity) for p in portfolio.positions] == [
        ("BTC-PERPETUAL", 0.314538364), ("BTC-28JUN24", -0.001187534)]
    assert market.as_of == dt.datetime(2024, 6, 17, 10, 22, 20, 501000, tzinfo=UTC)
    assert market.spot("BTC") == 65666.19
    details = result["margins"]["btc"]["initial_margin_details"]
    # mmp and open-orders margins depend on state the request does not carry: taken as given inputs
    addons = {"BTC": details["mmp_margin"] + details["open_orders_margin"] + details["spot_margin"]}
    ours = deribit_report(portfolio, market, config, jnp.float64, initial_addons=addons)
    n = 0
    for name, vecs in result["initial_risk_vectors"].items():
        for table, size in (("standard", 27), ("extended", 8)):
            got = np.array(ours["by_instrument"][name][table])
            assert got.shape == (size,) and len(vecs[table]) == size
            np.testing.assert_allclose(got, vecs[table], rtol=0, atol=1e-9, err_msg=f"{name} {table}")
            n += size
    btc = ours["by_underlying"]["BTC"]
    for table in ("standard", "extended"):
        np.testing.assert_allclose(btc[table], result["aggregated_risk_vectors"]["btc_btc"][table], rtol=0, atol=1e-9)
        n += len(btc[table])
    rmd = details["risk_matrix_margin_details"]
    for key in ("worst_case", "roll_shock", "delta_shock"):
        assert abs(btc[key] - rmd[key]) <= 1e-9, key
    # risk-matrix margin adds the worst case rounded to 9 decimals: unrounded it would miss by 3.8e-10
    assert abs(btc["risk_matrix_margin"] - details["risk_matrix_margin"]) <= 1e-15
    assert abs(btc["maintenance"] - result["margins"]["btc"]["maintenance_margin"]) <= 1e-9
    assert abs(btc["initial"] - result["margins"]["btc"]["initial_margin"]) <= 1e-9
    assert {k: btc["worst_case_bucket"][k] for k in rmd["worst_case_bucket"]} == rmd["worst_case_bucket"]
    # the account is BTC-margined, so the SPEC figures are the coin figures
    assert ours["currency"] == "BTC"
    assert ours["initial"] == btc["initial"] and ours["maintenance"] == btc["maintenance"]
    assert n == 2 * 35 + 35


@needs_shared_data
def test_docs_example_from_shared_data():
    path = SHARED_DATA / "deribit" / DOCS_EXAMPLE
    check_docs_example(simulate_result(path))
    with open(path, encoding="utf-8") as a, open(DATA / DOCS_EXAMPLE, encoding="utf-8") as b:
        assert json.load(a) == json.load(b), "tests/data copy differs from the shared data"


def test_docs_example_from_bundled_copy():
    check_docs_example(simulate_result(DATA / DOCS_EXAMPLE))


def test_eth_capture_pins_pnl_offset_and_currency_block():
    """A live ETH response with pnl_offset 0.6: gains count at 60%; roll uses the eth block's 0.005."""
    result = simulate_result(DATA / ETH_CAPTURE)
    rows = compare_with_pme_simulate(result)
    assert len(rows) == 35 + 35 + 35 + 6
    worst = max(rows, key=lambda r: abs(r[1] - r[2]))
    assert abs(worst[1] - worst[2]) <= 1e-9, worst
    agg = dict((r[0], r[1]) for r in rows)
    assert agg["aggregated_risk_vectors.eth_eth.standard[0]"] == pytest.approx(0.6 * 0.21939959699999997, abs=1e-15)


def test_command_line_example(capsys):
    assert main([str(DATA / DOCS_EXAMPLE)]) == 0
    assert "max |pmjax - Deribit|" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ options by hand

AS_OF = dt.datetime(2026, 1, 2, 8, tzinfo=UTC)
SPOT = 60_000.0


def market_with(expiry: dt.datetime, forward: float, vol: float, as_of=AS_OF, eth=None):
    unds = {"BTC": {"spot": SPOT, "forwards": {expiry.isoformat(): forward}, "vol": {"atm": vol}}}
    if eth:
        unds["ETH"] = eth
    return market_from_dict({"as_of": as_of.isoformat(), "underlyings": unds}, source="test")


def config_with(**btc):
    return deep_merge(load_config(), {"deribit": {"BTC": btc}})


def b76(F, K, T, vol, call=True):
    sd = vol * np.sqrt(T)
    d1 = np.log(F / K) / sd + 0.5 * sd
    d2 = d1 - sd
    return F * norm.cdf(d1) - K * norm.cdf(d2) if call else K * norm.cdf(-d2) - F * norm.cdf(-d1)


def hand_vols(vol, days, p):
    """Up, same, down vols: relative shocks scaled by (30 / max(days, 1))^power."""
    power = p["short_term_vega_power"] if days < 30 else p["long_term_vega_power"]
    f = (30.0 / max(days, 1.0)) ** power
    up = max(vol * (1 + p["volatility_range_up"] * f), p["min_volatility_for_shock_up"])
    return [up, vol, max(vol * (1 - p["volatility_range_down"] * f), 0.0)]


def option(expiry, strike, right="call", settlement="inverse"):
    return Instrument("BTC", "option", settlement, expiry, strike, right)


@pytest.mark.parametrize("days,vol", [(10.0, 0.6), (90.0, 0.6), (90.0, 0.2), (0.25, 0.6)],
                         ids=["short-dated", "long-dated", "min-vol-floor", "under-one-day"])
def test_long_call_standard_vector_is_black76(days, vol):
    """Inverse and linear long calls: coin P&L under each price point and vol state, against Black-76."""
    expiry = dt.datetime(2026, 4, 2, 8, tzinfo=UTC)
    as_of = expiry - dt.timedelta(days=days)
    F, K, q = 61_000.0, 64_000.0, 2.0
    market = market_with(expiry, F, vol, as_of)
    config = load_config()
    p = config["deribit"]["BTC"]
    inv, lin = option(expiry, K), option(expiry, K, settlement="linear")
    portfolio = make_portfolio([Position(inv, q), Position(lin, q)], margin_currency="BTC")
    report = deribit_report(portfolio, market, config)
    T = days / 365.0
    vols = hand_vols(vol, days, p)
    moves = [(i - 4) * 0.16 / 4 for i in range(9)]
    inverse_expected, linear_expected = [], []
    for m in moves:
        for v in vols:
            Fm, Sm = F * (1 + m), SPOT * (1 + m)
            inverse_expected.append(q * (b76(Fm, K, T, v) / Fm - b76(F, K, T, vol) / F))
            linear_expected.append(q * (b76(Fm, K, T, v) / Sm - b76(F, K, T, vol) / SPOT))
    np.testing.assert_allclose(report["by_instrument"][inv.name]["standard"], inverse_expected, rtol=1e-11,
                               atol=1e-13)
    np.testing.assert_allclose(report["by_instrument"][lin.name]["standard"], linear_expected, rtol=1e-11,
                               atol=1e-13)
    # a long call never loses from vol up nor gains from vol down, and strictly so at the money
    std = np.array(inverse_expected).reshape(9, 3)
    assert np.all(std[:, 0] >= std[:, 1]) and np.all(std[:, 1] >= std[:, 2])
    assert std[4, 0] > std[4, 1] > std[4, 2]


def test_vega_power_short_vs_long_dated():
    """(30/DTE)^0.3 below 30 days, (30/DTE)^0.13 from 30 days, DTE floored at 1 day, up vol floored at 0.5."""
    expiries = [AS_OF + dt.timedelta(days=d) for d in (10, 90, 0.25)]
    positions = [Position(option(e, 60_000.0), 1.0) for e in expiries]
    market = market_from_dict({"as_of": AS_OF.isoformat(), "underlyings": {"BTC": {"spot": SPOT, "vol": {
        "atm": 0.6}}}}, source="test")
    book, _ = book_from_portfolio(make_portfolio(positions, margin_currency="BTC"), market)
    up, down = (np.asarray(x)[:3] for x in deribit_params(load_config()).vol_rule.shocked_vols(book))
    np.testing.assert_allclose(up, 0.6 * (1 + 0.5 * np.array([3.0 ** 0.3, (1 / 3) ** 0.13, 30.0 ** 0.3])), rtol=1e-13)
    np.testing.assert_allclose(down, 0.6 * (1 - 0.25 * np.array([3.0 ** 0.3, (1 / 3) ** 0.13, 30.0 ** 0.3])),
                               rtol=1e-13)
    # a low vol: the shocked-up vol is floored at min_volatility_for_shock_up = 0.5 (0.2 x 1.43 = 0.29)
    low = market_from_dict({"as_of": AS_OF.isoformat(), "underlyings": {"BTC": {"spot": SPOT, "vol": {
        "atm": 0.2}}}}, source="test")
    book, _ = book_from_portfolio(make_portfolio(positions, margin_currency="BTC"), low)
    up, _ = deribit_params(load_config()).vol_rule.shocked_vols(book)
    assert np.asarray(up)[1] == 0.5


def test_the_grid_is_data_a_preset_of_scenarios():
    """``DeribitParams.grid`` is the scenarios.deribit_grid preset: 9 price points x (up, same, down) then the
    8 extended moves under vol up, with the extended weights; its Shock batch through the kernel gives the
    per-instrument vectors."""
    import equinox as eqx

    from pmjax.core.kernel import no_shock, position_values
    from pmjax.scenarios.grids import VOL_DOWN, VOL_SAME, VOL_UP, DeribitGrid

    config = load_config()
    params = deribit_params(config)
    grid = params.grid
    assert isinstance(grid, DeribitGrid) and grid.n_scenarios == 35 and grid.n_standard == 27
    p = config["deribit"]["BTC"]
    pr, f_ext = p["price_range"], p["extended_table_factor"]
    moves = [(i - 4) * pr / 4 for i in range(9)]
    np.testing.assert_allclose(np.asarray(grid.price_move[0]), np.repeat(moves, 3).tolist() + list(EXTENDED_MOVES),
                               rtol=1e-15, atol=1e-17)
    assert np.asarray(grid.vol_state).tolist() == [VOL_UP, VOL_SAME, VOL_DOWN] * 9 + [VOL_UP] * 8
    assert np.asarray(grid.is_extended).tolist() == [False] * 27 + [True] * 8
    ext_w = [(1 + m) * f_ext * pr / abs(m) / (1 + np.sign(m) * pr) for m in EXTENDED_MOVES]
    np.testing.assert_allclose(np.asarray(grid.weight[0]), [1.0] * 27 + ext_w, rtol=1e-15)
    # a configured extended table goes through the same preset
    other = deribit_params(deep_merge(config, {"deribit": {"extended_moves": [-0.5, 0.75]}})).grid
    assert other.n_scenarios == 29 and np.asarray(other.price_move[0, 27:]).tolist() == [-0.5, 0.75]

    # the grid's shocks, valued by the kernel, are the per-instrument vectors (no time passes)
    expiry = AS_OF + dt.timedelta(days=10)
    market = market_with(expiry, 60_500.0, 0.55)
    positions = [Position(option(expiry, 64_000.0), -2.0), Position(Instrument("BTC", "future", "inverse", expiry),
                                                                     1.0)]
    book, _ = book_from_portfolio(make_portfolio(positions, margin_currency="BTC"), market)
    shocks = grid.shocks(book)
    usd_book = eqx.tree_at(lambda b: b.margin_coin, book, jnp.full_like(book.margin_coin, -1))
    value = np.asarray(jax.vmap(position_values, in_axes=(None, 0))(usd_book, shocks))  # (35, n) USD
    today = np.asarray(position_values(usd_book, no_shock(usd_book)))
    coin_price = SPOT * np.asarray(shocks.spot_scale)[:, :1]  # BTC's scale in each scenario
    coin = (value / coin_price - today / SPOT) * np.asarray(grid.weight[0])[:, None]
    result = jax.jit(deribit_margin)(book, params)
    np.testing.assert_allclose(np.asarray(result.instrument_standard)[:2], coin[:27, :2].T, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(result.instrument_extended)[:2], coin[27:, :2].T, rtol=1e-12, atol=1e-15)


def test_extended_table_for_a_short_call():
    """Short OTM call: entry = coin P&L at the move under vol up x (1+m) x pr/|m| / (1 +- pr); the aggregate
    shrinks towards 0 by the dampener; without a dampener the worst case comes from the extended table."""
    expiry = AS_OF + dt.timedelta(days=10)
    F, K, vol, q = 60_500.0, 78_000.0, 0.55, -3.0
    market = market_with(expiry, F, vol)
    inst = option(expiry, K)
    portfolio = make_portfolio([Position(inst, q)], margin_currency="BTC")
    config = config_with(extended_dampener=1_000.0, pnl_offset=0.0)
    p = config["deribit"]["BTC"]
    T, pr = 10 / 365.0, 0.16
    up = hand_vols(vol, 10.0, p)[0]
    report = deribit_report(portfolio, market, config)
    expected, damped = [], []
    for m in EXTENDED_MOVES:
        coin_pnl = q * (b76(F * (1 + m), K, T, up) / (F * (1 + m)) - b76(F, K, T, vol) / F)
        edge = 1 + np.sign(m) * pr
        x = coin_pnl * (1 + m) * pr / abs(m) / edge
        expected.append(x)
        d = (max(abs(m) / pr, 1.0) - 1.0) * 1_000.0 / (SPOT * edge)
        damped.append(np.sign(x) * max(abs(x) - d, 0.0))
    np.testing.assert_allclose(report["by_instrument"][inst.name]["extended"], expected, rtol=1e-11, atol=1e-14)
    btc = report["by_underlying"]["BTC"]
    np.testing.assert_allclose(btc["pre_aggregated"]["extended"], expected, rtol=1e-11, atol=1e-14)
    # gains are zeroed by pnl_offset 0; the up moves are losses for a short call
    offset = [min(x, 0.0) for x in damped]
    np.testing.assert_allclose(btc["extended"], offset, rtol=1e-11, atol=1e-14)
    assert min(offset) < 0.0 and any(d != x for d, x in zip(damped, expected))

    no_damp = deribit_report(portfolio, market, config_with(extended_dampener=0.0))["by_underlying"]["BTC"]
    assert min(no_damp["extended"]) < min(no_damp["standard"])
    assert no_damp["worst_case"] == pytest.approx(-min(expected), rel=1e-12)
    k = int(np.argmin(expected))
    assert no_damp["worst_case_bucket"] == {"bucket": k + 1, "side": "right", "source": "extended", "index": k,
                                            "vol_state": "up"}


# ------------------------------------------------------------------------------------------ offsets and shocks

def perpetual_book_report(q, margin_currency="BTC", **btc):
    market = market_with(AS_OF + dt.timedelta(days=30), SPOT, 0.5)
    portfolio = make_portfolio([Position(Instrument("BTC", "perpetual", "inverse"), q)],
                               margin_currency=margin_currency)
    return deribit_report(portfolio, market, config_with(**btc))


@pytest.mark.parametrize("offset,cap_usd", [(0.4, 1e9), (0.4, 1_800.0), (0.0, 1e9)],
                         ids=["uncapped", "capped", "no-offset"])
def test_pnl_offset(offset, cap_usd):
    """A gain counts only as min(gain x pnl_offset, max_offsetable_pnl / S); a loss counts in full."""
    q = 0.8
    btc = perpetual_book_report(q, pnl_offset=offset, max_offsetable_pnl=cap_usd)["by_underlying"]["BTC"]
    raw = np.repeat([q * m / (1 + m) for m in [(i - 4) * 0.04 for i in range(9)]], 3)
    np.testing.assert_allclose(btc["pre_aggregated"]["standard"], raw, rtol=1e-13, atol=1e-16)
    expected = np.where(raw > 0, np.minimum(raw * offset, cap_usd / SPOT), raw)
    np.testing.assert_allclose(btc["standard"], expected, rtol=1e-13, atol=1e-16)
    if cap_usd < 1e6:
        assert np.sum(expected == cap_usd / SPOT) == 2 * 3  # 0.03 BTC: binds at +12% and +16% only
    assert btc["worst_case"] == pytest.approx(-raw.min(), rel=1e-13)


def test_roll_shock_nets_each_expiry():
    """|future + option coin delta| x max(min move, 0.075 T) for the 200-day expiry, + |perp| x 0.01."""
    expiry = AS_OF + dt.timedelta(days=200)
    F, K, vol, T = 62_000.0, 65_000.0, 0.5, 200 / 365.0
    market = market_with(expiry, F, vol)
    positions = [Position(Instrument("BTC", "future", "inverse", expiry), 1.5), Position(option(expiry, K), -2.0),
                 Position(Instrument("BTC", "perpetual", "inverse"), -0.7)]
    report = deribit_report(make_portfolio(positions, margin_currency="BTC"), market, load_config())
    btc = report["by_underlying"]["BTC"]
    sd = vol * np.sqrt(T)
    d1 = np.log(F / K) / sd + 0.5 * sd
    option_coin_delta = norm.cdf(d1) - b76(F, K, T, vol) / F  # d(B76/F)/d ln F
    expiry_delta = 1.5 - 2.0 * option_coin_delta
    assert 0.075 * T > 0.01  # the linear term binds for this expiry
    assert btc["roll_shock"] == pytest.approx(abs(expiry_delta) * 0.075 * T + 0.7 * 0.01, rel=1e-10)
    assert btc["net_delta"] == pytest.approx(expiry_delta - 0.7, rel=1e-10)
    assert btc["delta_shock"] == 0.0


def test_delta_shock_beyond_threshold():
    """|D| min(max_delta_shock, m_inc (|D| S - threshold) / S) once |D| S exceeds the threshold."""
    q = 500.0  # 30M USD of delta against a 20M threshold
    btc = perpetual_book_report(q)["by_underlying"]["BTC"]
    expected = q * min(0.1, 5e-5 * (q * SPOT - 2e7) / SPOT)
    assert btc["delta_shock"] == pytest.approx(expected, rel=1e-12)
    capped = perpetual_book_report(q, m_inc=1e-2)["by_underlying"]["BTC"]
    assert capped["delta_shock"] == pytest.approx(q * 0.1, rel=1e-12)
    assert capped["risk_matrix_margin"] == pytest.approx(
        np.floor(capped["worst_case"] * 1e9 + 0.5) / 1e9 + capped["roll_shock"] + q * 0.1, rel=1e-14)


# ------------------------------------------------------------------------------------------ currencies, batch

ETH_MARKET = {"spot": 3_000.0, "vol": {"atm": 0.7}}


def test_usd_account_converts_each_coin_at_its_index():
    expiry = AS_OF + dt.timedelta(days=40)
    market = market_with(expiry, 60_400.0, 0.5, eth=ETH_MARKET)
    positions = [Position(option(expiry, 70_000.0), -1.0),
                 Position(Instrument("ETH", "option", "inverse", expiry, 3_400.0, "call"), -10.0),
                 Position(Instrument("ETH", "perpetual", "inverse"), 4.0)]
    usd = deribit_report(make_portfolio(positions, margin_currency="USD"), market, load_config())
    eth = deribit_report(make_portfolio(positions, margin_currency="ETH"), market, load_config())
    by = usd["by_underlying"]
    assert set(by) == {"BTC", "ETH"} and by["ETH"]["currency"] == "ETH"
    assert usd["initial"] == pytest.approx(by["BTC"]["initial"] * SPOT + by["ETH"]["initial"] * 3_000.0, rel=1e-14)
    assert usd["maintenance"] == pytest.approx(0.8 * (by["BTC"]["risk_matrix_margin"] * SPOT
                                                      + by["ETH"]["risk_matrix_margin"] * 3_000.0), rel=1e-14)
    assert eth["initial"] == pytest.approx(usd["initial"] / 3_000.0, rel=1e-14)
    assert eth["by_underlying"] == by  # vectors are in each underlying's coin whatever the margin currency
    # plain account: initial = risk-matrix margin (rounded to 9 decimals), no add-ons
    assert by["ETH"]["initial"] == pytest.approx(by["ETH"]["risk_matrix_margin"], abs=5e-10)
    assert by["ETH"]["risk_matrix_margin"] > 0


# ------------------------------------------------------------------------------------------ pools (issue 14, item 4)

SEGREGATED = {"deribit": {"pooling": "segregated"}}


def test_default_pooling_is_cross_linear_and_inverse_net():
    """cross (default, Deribit X:PM): a USDC-settled perpetual and an inverse one on the same index are one pool,
    valued in coin of the index, so long 2 linear against short 2 inverse has no price risk at all."""
    market = market_with(AS_OF + dt.timedelta(days=30), SPOT, 0.5)
    pair = [Position(Instrument("BTC", "perpetual", "linear"), 2.0), Position(Instrument("BTC", "perpetual", "inverse"), -2.0)]
    report = deribit_report(make_portfolio(pair, margin_currency="USD"), market, load_config())
    assert report["pooling"] == "cross"
    assert list(report["by_underlying"]) == ["BTC"]
    btc = report["by_underlying"]["BTC"]
    assert btc["currency"] == "BTC" and btc["settlements"] == ["BTC", "USDC"]
    assert report["by_instrument"]["BTC_USDC-PERPETUAL"]["pool"] == "BTC"
    assert btc["worst_case"] < 1e-15 and btc["roll_shock"] < 1e-15 and report["initial"] < 1e-10  # rounding only


def test_segregated_usdc_pool_hand_derived():
    """segregated (Deribit S:PM): a USDC-settled perpetual alone in the BTC_USDC pool, valued in USDC with the
    USDC block (roll 0.01 per perpetual, dampener 25,000 USD per range): every entry by hand."""
    q, pr = 2.0, 0.16
    market = market_with(AS_OF + dt.timedelta(days=30), SPOT, 0.5)
    book = make_portfolio([Position(Instrument("BTC", "perpetual", "linear"), q)], margin_currency="USD")
    report = deribit_report(book, market, deep_merge(load_config(), SEGREGATED))
    assert report["pooling"] == "segregated" and list(report["by_underlying"]) == ["BTC_USDC"]
    pool = report["by_underlying"]["BTC_USDC"]
    assert pool["currency"] == "USDC" and pool["settlements"] == ["USDC"]
    moves = np.array([(i - 4) * pr / 4 for i in range(9)])
    raw_std = np.repeat(q * SPOT * moves, 3)  # USD P&L of q (F' - F)
    np.testing.assert_allclose(pool["pre_aggregated"]["standard"], raw_std, rtol=1e-13, atol=1e-9)
    np.testing.assert_allclose(pool["standard"], np.minimum(raw_std, 0.0), rtol=1e-13, atol=1e-9)  # pnl_offset 0
    ext = np.asarray(EXTENDED_MOVES)
    raw = q * SPOT * ext * pr / np.abs(ext)  # USD P&L x f_ext pr / |m|: no conversion to coin
    damp = (np.abs(ext) / pr - 1.0) * 25_000.0
    expected = np.where(np.abs(raw) > damp, raw - np.sign(raw) * damp, 0.0)
    expected = np.where(expected > 0, 0.0, expected)  # pnl_offset 0: gains do not count
    np.testing.assert_allclose(pool["extended"], expected, rtol=1e-13, atol=1e-9)
    assert pool["worst_case"] == pytest.approx(q * SPOT * pr, rel=1e-13)  # 19,200 USDC
    assert pool["net_delta"] == pytest.approx(q * SPOT, rel=1e-13)  # USD per unit of relative move
    assert pool["roll_shock"] == pytest.approx(q * SPOT * 0.01, rel=1e-13)
    assert pool["delta_shock"] == 0.0
    assert report["initial"] == pytest.approx(q * SPOT * (pr + 0.01), rel=1e-13)  # USDC = USD
    assert report["maintenance"] == pytest.approx(0.8 * q * SPOT * (pr + 0.01), rel=1e-13)
    in_btc = deribit_report(make_portfolio(book.positions, margin_currency="BTC"), market,
                            deep_merge(load_config(), SEGREGATED))
    assert in_btc["initial"] == pytest.approx(report["initial"] / SPOT, rel=1e-13)  # USDC -> BTC at today's index


def test_segregated_pools_do_not_net_and_spot_stays_in_the_coin_pool():
    """segregated: linear against inverse no longer nets (each pool alone); spot (the coin balance) stays in the
    coin pool; the USD figure is the sum of the pools alone."""
    market = market_with(AS_OF + dt.timedelta(days=30), SPOT, 0.5)
    config = deep_merge(load_config(), SEGREGATED)
    linear, inverse = Position(Instrument("BTC", "perpetual", "linear"), 2.0), Position(
        Instrument("BTC", "perpetual", "inverse"), -2.0)
    both = deribit_report(make_portfolio([linear, inverse], margin_currency="USD"), market, config)
    alone = [deribit_report(make_portfolio([p], margin_currency="USD"), market, config) for p in (linear, inverse)]
    assert set(both["by_underlying"]) == {"BTC", "BTC_USDC"}
    assert both["initial"] == pytest.approx(alone[0]["initial"] + alone[1]["initial"], rel=1e-13)
    assert both["initial"] > 0.0
    spot = deribit_report(make_portfolio([Position(Instrument("BTC", "spot", "linear"), 1.0), inverse],
                                         margin_currency="USD"), market, config)
    assert list(spot["by_underlying"]) == ["BTC"] and spot["by_instrument"]["BTC"]["pool"] == "BTC"
    assert spot["by_underlying"]["BTC"]["settlements"] == ["BTC"]
    # an inverse-only book is the same under either pooling
    only_inverse = make_portfolio([inverse, Position(option(AS_OF + dt.timedelta(days=30), 65_000.0), -1.0)])
    assert (deribit_report(only_inverse, market, config)["initial"]
            == deribit_report(only_inverse, market, load_config())["initial"])


def test_segregated_pooling_batches_like_single_accounts():
    """The pools are static layout: vmapped books under segregated pooling equal one account at a time."""
    expiry = AS_OF + dt.timedelta(days=20)
    market = market_with(expiry, 60_200.0, 0.55, eth=ETH_MARKET)
    config = deep_merge(load_config(), SEGREGATED)
    params = deribit_params(config)
    assert params.pool_names == ("BTC", "ETH", "BTC_USDC", "ETH_USDC")
    accounts = [[Position(option(expiry, 66_000.0, "put", "linear"), -2.0), Position(option(expiry, 50_000.0), 1.0)],
                [Position(Instrument("ETH", "perpetual", "linear"), 5.0), Position(Instrument("ETH", "spot", "linear"), 1.0)]]
    books = [book_from_portfolio(make_portfolio(a), market, size=8)[0] for a in accounts]
    batch = vmapped(deribit_margin)(jax.tree_util.tree_map(lambda *x: jnp.stack(x), *books), params)
    assert batch.standard.shape == (2, 4, 27)
    for a, book in enumerate(books):
        one = jax.jit(deribit_margin)(book, params)
        assert float(batch.initial[a]) == pytest.approx(float(one.initial), rel=1e-13)
    report = deribit_report(make_portfolio(accounts[0]), market, config)
    assert set(report["by_underlying"]) == {"BTC", "BTC_USDC"}
    assert report["by_underlying"]["BTC_USDC"]["worst_case"] > 0.0


def test_batch_matches_single_accounts_and_padding():
    """deribit_margin vmapped over padded, stacked books equals one account at a time."""
    expiry = AS_OF + dt.timedelta(days=20)
    market = market_with(expiry, 60_200.0, 0.55, eth=ETH_MARKET)
    params = deribit_params(load_config())
    accounts = [
        [Position(option(expiry, 66_000.0), -2.0), Position(Instrument("BTC", "future", "inverse", expiry), 1.0)],
        [Position(Instrument("ETH", "option", "inverse", expiry, 2_700.0, "put"), 5.0)],
        [Position(Instrument("BTC", "perpetual", "linear"), 0.3), Position(option(expiry, 55_000.0, "put"), -1.0),
         Position(Instrument("ETH", "perpetual", "inverse"), -2.0)],
    ]
    currencies = ["BTC", "USD", "ETH"]
    books, singles, portfolios, resolved = [], [], [], []
    for positions, mc in zip(accounts, currencies):
        portfolios.append(make_portfolio(positions, margin_currency=mc))
        book, res = book_from_portfolio(portfolios[-1], market, size=16)
        books.append(book)
        resolved.append(res)
        small, _ = book_from_portfolio(make_portfolio(positions, margin_currency=mc), market)  # size 8
        singles.append(jax.jit(deribit_margin)(small, params))
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *books)
    batch = vmapped(deribit_margin)(stacked, params)
    assert isinstance(batch, DeribitResult)
    sharded = deribit_margin_sharded(stacked, params, chunk=2, devices=jax.local_devices()[:1])
    for f in DeribitResult.__dataclass_fields__:  # chunks of 2 (the last padded) through map_accounts
        np.testing.assert_array_equal(getattr(sharded, f), np.asarray(getattr(batch, f)), err_msg=f)
    assert batch.initial.shape == (3,)
    for a, single in enumerate(singles):
        assert float(batch.initial[a]) == pytest.approx(float(single.initial), rel=1e-13)
        assert float(batch.maintenance[a]) == pytest.approx(float(single.maintenance), rel=1e-13)
        np.testing.assert_allclose(batch.standard[a], single.standard, rtol=1e-13, atol=1e-17)
        np.testing.assert_allclose(batch.instrument_extended[a, :8], single.instrument_extended, rtol=1e-13,
                                   atol=1e-17)
        assert np.all(np.asarray(batch.instrument_standard[a, 8:]) == 0.0)  # padding rows add nothing
        assert float(single.initial) > 0.0
    # the per-account SPEC sections of the batch (what `pmjax stress --method deribit` reports)
    sections = deribit_sections(AccountBatch(portfolios, resolved, stacked, 16), batch, params)
    for section, portfolio in zip(sections, portfolios):
        one = deribit_report(portfolio, market, load_config())
        assert section["by_underlying"].keys() == one["by_underlying"].keys()
        assert section["initial"] == pytest.approx(one["initial"], rel=1e-13)
        for u, by in one["by_underlying"].items():
            np.testing.assert_allclose(section["by_underlying"][u]["standard"], by["standard"], rtol=1e-13,
                                       atol=1e-17)


def test_float32_close_to_float64():
    expiry = AS_OF + dt.timedelta(days=20)
    market = market_with(expiry, 60_200.0, 0.55)
    portfolio = make_portfolio([Position(option(expiry, 66_000.0), -2.0),
                                Position(Instrument("BTC", "perpetual", "inverse"), 0.5)], margin_currency="USD")
    r64 = deribit_report(portfolio, market, load_config(), jnp.float64)
    r32 = deribit_report(portfolio, market, load_config(), jnp.float32)
    assert r32["initial"] == pytest.approx(r64["initial"], rel=2e-4)
    np.testing.assert_allclose(r32["by_underlying"]["BTC"]["standard"], r64["by_underlying"]["BTC"]["standard"],
                               rtol=2e-3, atol=2e-5)


def test_report_layout():
    report = perpetual_book_report(-1.0)
    btc = report["by_underlying"]["BTC"]
    assert set(btc) >= {"standard", "extended", "worst_case", "roll_shock", "delta_shock", "risk_matrix_margin"}
    assert len(btc["standard"]) == 27 and len(btc["extended"]) == 8
    assert set(report) >= {"by_underlying", "initial", "maintenance", "by_instrument"}
    assert report["currency"] == "BTC"
    assert report["initial"] == pytest.approx(btc["risk_matrix_margin"], abs=5e-10)
    assert report["maintenance"] == pytest.approx(0.8 * btc["risk_matrix_margin"], rel=1e-14)
    # short perpetual: the worst point is +16% (bucket 9, the vol-"same" entry of the tie)
    assert btc["worst_case_bucket"] == {"bucket": 9, "side": "right", "source": "standard", "index": 25,
                                        "vol_state": "same"}


@pytest.mark.parametrize("change,field", [
    ({"BTC": {"price_range": 1.5}}, "deribit.BTC.price_range"),
    ({"ETH": {"mm_factor": "high"}}, "deribit.ETH.mm_factor"),
    ({"ETH": {"buckets_count": 5}}, "deribit.buckets_count"),
    ({"BTC": {"buckets_count": 2.5}}, "deribit.BTC.buckets_count"),
    ({"extended_moves": [-1.0, 0.5]}, "deribit.extended_moves"),
    ({"BTC": {"pnl_offset": -0.1}}, "deribit.BTC.pnl_offset"),
    ({"pooling": "by_currency"}, "deribit.pooling"),
    ({"USDC": {"extended_dampener": -1}}, "deribit.USDC.extended_dampener"),
])
def test_config_validation(change, field):
    with pytest.raises(InputError) as e:
        deribit_params(deep_merge(load_config(), {"deribit": change}))
    assert e.value.field == field


def test_params_invariants_checked_however_built():
    """``DeribitParams.__check_init__``: params built without ``deribit_params`` are validated too."""
    import equinox as eqx

    params = deribit_params(load_config())
    fields = {k: getattr(params, k) for k in DeribitParams.__dataclass_fields__}
    assert DeribitParams(**fields).buckets_count == params.buckets_count  # a valid copy
    bad = [({"price_range": jnp.asarray([0.16, 1.2])}, "price_range[ETH]"),
           ({"mm_factor": jnp.asarray([0.0, 0.8])}, "mm_factor[BTC]"),
           ({"pnl_offset": jnp.asarray([0.5])}, "pnl_offset"),
           ({"extended_moves": jnp.asarray([-0.5, 0.0])}, "extended_moves"),
           ({"buckets_count": 0}, "buckets_count")]
    for change, field in bad:
        with pytest.raises((InputError, TypeError)) as e:
            DeribitParams(**{**fields, **change})
        if isinstance(e.value, InputError):
            assert e.value.field == field and e.value.source == "DeribitParams"
        else:  # a wrong shape, caught by the run-time jaxtyping check of the annotations first
            assert field == "pnl_offset" and "pnl_offset" in str(e.value)
    # inside a trace (jit, vmap) nothing is checked and nothing breaks
    doubled = jax.jit(lambda p: eqx.tree_at(lambda q: q.mm_factor, p, p.mm_factor * 2))(params)
    assert np.asarray(doubled.mm_factor).tolist() == [2 * x for x in np.asarray(params.mm_factor).tolist()]


def test_params_dtype_is_keyword_only():
    with pytest.raises(TypeError):
        deribit_params(load_config(), jnp.float32)
    assert deribit_params(load_config(), dtype=jnp.float32).price_range.dtype == jnp.float32


def test_roll_groups_small_and_large_books_agree():
    """Books up to PAIRWISE_GROUPS rows find roll-shock groups pairwise, larger ones by a sort: padding a book
    past that size changes no figure (expiries on a few dates, so groups have many members)."""
    import equinox as eqx

    from pmjax.bench.books import random_account_books
    from pmjax.measures.deribit import PAIRWISE_GROUPS

    params = deribit_params(load_config(), dtype=jnp.float64)
    figures = []
    for size in (32, 2 * PAIRWISE_GROUPS):
        books = random_account_books(16, 24, seed=5, size=size)
        T = np.asarray(books.expiry_years)
        books = eqx.tree_at(lambda b: b.expiry_years, books, np.where(T > 0, np.ceil(T * 4) / 4, 0.0))
        r = jax.jit(jax.vmap(deribit_margin, in_axes=(0, None)))(books, params)
        figures.append((np.asarray(r.roll_shock), np.asarray(r.initial), np.asarray(r.maintenance)))
    assert figures[0][0].max() > 0
    for small, large in zip(*figures):
        np.testing.assert_allclose(small, large, rtol=1e-13, atol=0)
