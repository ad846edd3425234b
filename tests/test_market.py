"""Market data: the bundled Deribit chains reprice to Deribit's marks, and the surface rules of SPEC
section 2 (log-moneyness across strikes, flat wings, total variance across expiries, forwards)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data

from pmjax.core.book import ResolvedPosition, make_book, resolve
from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument, expiry_datetime, parse_instrument
from pmjax.core.kernel import unit_greeks_jit
from pmjax.io.market import BUNDLED_MARKETS, bundled_path, load_market, market_from_chain, read_chain_rows

UTC = dt.timezone.utc
CHAINS = sorted(BUNDLED_MARKETS)


def years_between(start: str, end: str) -> float:
    """Days / 365 from two ISO timestamps, computed here independently of ``Market.years_to``."""
    a = dt.datetime.fromisoformat(start)
    b = dt.datetime.fromisoformat(end)
    return (b - a).total_seconds() / 86400.0 / 365.0


def coin_prices(resolved: list[ResolvedPosition], market) -> np.ndarray:
    """Coin price of one inverse option per row, through the Book and the jitted kernel: value_usd / spot."""
    book = make_book(resolved, market)
    value = np.asarray(unit_greeks_jit(book)["value"])[: len(resolved)]
    return value / np.array([r.spot for r in resolved])


def mark_errors(prices: np.ndarray, marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative errors on rows with a positive mark, and the prices of the rows marked 0."""
    zero = marks <= 0.0
    return np.abs(prices[~zero] - marks[~zero]) / marks[~zero], prices[zero]


@pytest.fixture(scope="module", params=CHAINS)
def chain(request):
    name = request.param
    rows, notices = read_chain_rows(bundled_path(name))
    return name, rows, notices


def test_bundled_chains_read_whole(chain):
    name, rows, notices = chain
    with open(bundled_path(name), encoding="utf-8") as fh:
        n_lines = sum(1 for _ in fh) - 1
    assert len(rows) == n_lines and notices == []  # the bundled chains have no unusable rows


def test_own_iv_reprices_deribit_marks(chain):
    """Each row priced with its own IV and futures price reproduces Deribit's mark_price (coin)."""
    name, rows, _ = chain
    market = load_market(name)
    resolved = [ResolvedPosition(r["_instrument"], 1.0, years_between(r["timestamp"], r["expiry_datetime"]),
                                 float(r["index_price"]), float(r["futures_price"]), float(r["implied_volatility"]))
                for r in rows]
    assert all(r.instrument.settlement == "inverse" and r.instrument.is_option for r in resolved)
    marks = np.array([float(r["mark_price"]) for r in rows])
    rel, zero_marked = mark_errors(coin_prices(resolved, market), marks)
    assert len(rel) > 0.95 * len(rows)
    assert np.median(rel) <= 1e-3, np.median(rel)
    assert np.percentile(rel, 90) <= 1e-2
    # rows Deribit marks at 0 are worth (almost) nothing here too
    assert np.all(zero_marked < 1e-6)


def test_fitted_surface_reprices_deribit_marks(chain):
    """The fitted surface (market.vol, market.forward) at listed strikes reproduces the marks as well."""
    name, rows, _ = chain
    market = load_market(name)
    instruments = [r["_instrument"] for r in rows]
    resolved = resolve(instruments, [1.0] * len(rows), market)
    # the surface passes through the listed points (a call and a put at one strike share their IV)
    ivs = np.array([float(r["implied_volatility"]) for r in rows])
    assert np.max(np.abs(np.array([r.vol for r in resolved]) - ivs)) < 1e-3
    fwd = np.array([float(r["futures_price"]) for r in rows])
    assert np.max(np.abs(np.array([r.forward for r in resolved]) / fwd - 1.0)) < 1e-3
    marks = np.array([float(r["mark_price"]) for r in rows])
    rel, zero_marked = mark_errors(coin_prices(resolved, market), marks)
    assert np.median(rel) <= 1e-3, np.median(rel)
    assert np.percentile(rel, 90) <= 1e-2
    assert np.all(zero_marked < 1e-6)


HEADER = ("timestamp,instrument_name,option_type,strike,expiry_datetime,futures_price,implied_volatility,mark_price,"
          "index_price,currency")
GOOD = ("2026-01-02T09:18:09+00:00,BTC-30JAN26-90000-C,call,90000.0,2026-01-30T08:00:00+00:00,89350.0,0.42,"
        "0.041,89009.1,BTC")


def test_chain_rows_with_missing_data_are_skipped_and_counted(tmp_path):
    empty_iv = GOOD.replace("BTC-30JAN26-90000-C", "BTC-30JAN26-95000-C").replace(",0.42,", ",,")
    empty_fwd = GOOD.replace("BTC-30JAN26-90000-C", "BTC-30JAN26-99000-C").replace("89350.0", "")
    bad_name = GOOD.replace("BTC-30JAN26-90000-C", "BTC-30XYZ26-90000-C")
    path = tmp_path / "chain.csv"
    path.write_text("\n".join([HEADER, GOOD, empty_iv, empty_iv, empty_fwd, bad_name]) + "\n")
    rows, notices = read_chain_rows(str(path))
    assert [r["instrument_name"] for r in rows] == ["BTC-30JAN26-90000-C"]
    assert any("skipped 2 row(s)" in n and "implied_volatility" in n for n in notices), notices
    assert any("skipped 1 row(s)" in n and "futures_price" in n for n in notices), notices
    assert any("skipped 1 row(s)" in n and "instrument_name" in n for n in notices), notices
    # a market loaded from the file carries the notices, and still prices the good row
    market = load_market(str(path))
    assert market.notices == notices
    exp = dt.datetime(2026, 1, 30, 8, tzinfo=UTC)
    assert market.vol("BTC", exp, 90000.0) == pytest.approx(0.42, rel=1e-15)
    assert market.forward("BTC", exp) == 89350.0


def test_chain_without_usable_rows_or_columns_is_an_input_error(tmp_path):
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text(HEADER + "\n" + GOOD.replace(",0.42,", ",,") + "\n")
    with pytest.raises(InputError, match="no usable rows"):
        read_chain_rows(str(only_bad))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("instrument_name,quantity\nBTC-30JAN26-90000-C,1\n")
    with pytest.raises(InputError, match="missing column"):
        market_from_chain(str(wrong))


# ----------------------------------------------------------------------------- surface rules by hand

SPOT = 100_000.0
F1, F2, F3 = 101_000.0, 103_000.0, 104_000.0
MARKET_YAML = f"""
as_of: 2026-01-02T08:00:00Z
underlyings:
  BTC:
    spot: {SPOT}
    forwards: {{2026-02-01: {F1}, 2026-04-02: {F2}, 2026-06-26: {F3}}}
    vol:
      smiles:
        2026-02-01: {{strikes: [110000, 90000, 100000], vols: [0.55, 0.60, 0.50]}}
        2026-04-02: {{strikes: [80000, 100000, 120000], vols: [0.70, 0.60, 0.62]}}
  ETH:
    spot: 3000
    rate: 0.05
    vol: {{atm: 0.7}}
"""
E0 = dt.datetime(2026, 1, 12, 8, tzinfo=UTC)  # 10 days, before the first listed expiry
E1 = dt.datetime(2026, 2, 1, 8, tzinfo=UTC)  # 30 days
EMID = dt.datetime(2026, 3, 3, 8, tzinfo=UTC)  # 60 days: half-way from E1 to E2
E2 = dt.datetime(2026, 4, 2, 8, tzinfo=UTC)  # 90 days
E3 = dt.datetime(2026, 6, 26, 8, tzinfo=UTC)  # 175 days: listed forward, no smile
E4 = dt.datetime(2026, 9, 25, 8, tzinfo=UTC)  # beyond every listed forward
T1, T2 = 30 / 365, 90 / 365


@pytest.fixture
def hand_market(tmp_path):
    path = tmp_path / "market.yaml"
    path.write_text(MARKET_YAML)
    return load_market(str(path))


def lerp(x, x0, x1, y0, y1):
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def test_smile_linear_in_log_moneyness(hand_market):
    m = hand_market
    for k, v in ((90_000.0, 0.60), (100_000.0, 0.50), (110_000.0, 0.55)):
        assert m.vol("BTC", E1, k) == pytest.approx(v, rel=1e-14)  # listed strikes (given unsorted)
    # 95,000: between the 90k and 100k quotes, linear in log(K / F1) (not in K)
    expected = lerp(math.log(95_000 / F1), math.log(90_000 / F1), math.log(100_000 / F1), 0.60, 0.50)
    assert m.vol("BTC", E1, 95_000.0) == pytest.approx(expected, rel=1e-13)
    linear_in_strike = 0.55
    assert abs(expected - linear_in_strike) > 1e-4  # the two rules differ here, so the check can tell
    expected = lerp(math.log(117_000 / F2), math.log(100_000 / F2), math.log(120_000 / F2), 0.60, 0.62)
    assert m.vol("BTC", E2, 117_000.0) == pytest.approx(expected, rel=1e-13)


def test_smile_flat_beyond_the_wings(hand_market):
    m = hand_market
    assert m.vol("BTC", E1, 20_000.0) == 0.60 and m.vol("BTC", E1, 89_999.0) == 0.60
    assert m.vol("BTC", E1, 110_001.0) == 0.55 and m.vol("BTC", E1, 1e7) == 0.55
    assert m.vol("BTC", E2, 50_000.0) == 0.70 and m.vol("BTC", E2, 500_000.0) == 0.62


def test_forward_interpolation(hand_market):
    m = hand_market
    assert m.forward("BTC", E1) == F1 and m.forward("BTC", E2) == F2
    assert m.forward("BTC", None) == SPOT  # perpetuals and spot
    # carry log(F/S) linear in time: half-way from E1 to E2 the mean of the two carries
    assert m.forward("BTC", EMID) == pytest.approx(SPOT * math.sqrt(F1 / SPOT * F2 / SPOT), rel=1e-14)
    # before the first listed expiry, from carry 0 today
    assert m.forward("BTC", E0) == pytest.approx(SPOT * (F1 / SPOT) ** (10 / 30), rel=1e-14)
    # no forwards listed: F = S exp(rate T)
    assert m.forward("ETH", E2) == pytest.approx(3000.0 * math.exp(0.05 * T2), rel=1e-14)


def test_total_variance_linear_between_expiries(hand_market):
    m = hand_market
    f_mid = SPOT * math.sqrt(F1 / SPOT * F2 / SPOT)
    for strike in (f_mid, 85_000.0, 125_000.0):
        k = math.log(strike / f_mid)  # the same log-moneyness on both smiles
        v1 = float(np.interp(k, np.log(np.array([90_000, 100_000, 110_000]) / F1), [0.60, 0.50, 0.55]))
        v2 = float(np.interp(k, np.log(np.array([80_000, 100_000, 120_000]) / F2), [0.70, 0.60, 0.62]))
        # 60 days is half-way between 30 and 90 in time: total variance is the mean of the two
        w = 0.5 * (v1 * v1 * T1 + v2 * v2 * T2)
        assert m.vol("BTC", EMID, strike) == pytest.approx(math.sqrt(w / (60 / 365)), rel=1e-13)
    # and at the money by hand, no np.interp: both smiles interpolate between their 100k and next quote
    v1 = lerp(0.0, math.log(100_000 / F1), math.log(110_000 / F1), 0.50, 0.55)
    v2 = lerp(0.0, math.log(100_000 / F2), math.log(120_000 / F2), 0.60, 0.62)
    expected = math.sqrt((v1**2 * T1 + v2**2 * T2) / 2 / (60 / 365))
    assert m.vol("BTC", EMID, f_mid) == pytest.approx(expected, rel=1e-13)
    assert abs(expected - 0.5 * (v1 + v2)) > 1e-4  # total variance, not vol, is what interpolates


def test_flat_in_vol_outside_the_listed_expiries(hand_market):
    m = hand_market
    f0 = m.forward("BTC", E0)
    # before the first smile: the first smile at the same log-moneyness
    expected = lerp(math.log(100_000 / f0), math.log(100_000 / F1), math.log(110_000 / F1), 0.50, 0.55)
    assert m.vol("BTC", E0, 100_000.0) == pytest.approx(expected, rel=1e-13)
    # after the last smile (E3 has a forward but no smile): the last smile at the same log-moneyness
    expected = lerp(math.log(110_000 / F3), math.log(100_000 / F2), math.log(120_000 / F2), 0.60, 0.62)
    assert m.vol("BTC", E3, 110_000.0) == pytest.approx(expected, rel=1e-13)
    assert m.vol("ETH", E4, 1234.0) == 0.7  # a flat atm level


def test_missing_forward_beyond_the_last_listed_expiry(hand_market):
    with pytest.raises(InputError, match="2026-09-25") as err:
        hand_market.forward("BTC", E4)
    assert err.value.field == "underlyings.BTC.forwards"
    option = Instrument("BTC", "option", "inverse", E4, 100_000.0, "call")
    with pytest.raises(InputError, match="2026-09-25"):
        resolve([option], [1.0], hand_market)


def test_expiry_before_as_of_is_an_input_error(hand_market, tmp_path):
    expired = Instrument("BTC", "option", "inverse", dt.datetime(2025, 12, 26, 8, tzinfo=UTC), 100_000.0, "put")
    with pytest.raises(InputError, match="expired on 2025-12-26") as err:
        resolve([expired], [1.0], hand_market)
    assert err.value.field == "as_of"
    future = Instrument("BTC", "future", "inverse", dt.datetime(2026, 1, 2, 7, 59, tzinfo=UTC))
    with pytest.raises(InputError, match="expired"):
        resolve([future], [1.0], hand_market)
    # expiring at as_of exactly is allowed (T = 0)
    at_as_of = Instrument("BTC", "option", "linear", expiry_datetime("2026-01-02T08:00:00Z"), 90_000.0, "call")
    (r,) = resolve([at_as_of], [1.0], hand_market)
    assert r.expiry_years == 0.0
    # a market listing a forward before its own as_of is rejected when loaded
    path = tmp_path / "stale.yaml"
    path.write_text(MARKET_YAML.replace("2026-02-01: 101000.0,", "2025-12-01: 101000.0,"))
    with pytest.raises(InputError, match="before as_of"):
        load_market(str(path))


def test_chain_rows_expired_or_not_options_are_dropped_with_a_notice(tmp_path):
    """A chain row expiring before the chain's timestamp (as_of) and a futures row are skipped, counted."""
    expired = GOOD.replace("BTC-30JAN26-90000-C", "BTC-1JAN26-90000-C").replace("2026-01-30T", "2026-01-01T")
    future = GOOD.replace("BTC-30JAN26-90000-C", "BTC-30JAN26")
    path = tmp_path / "chain.csv"
    path.write_text("\n".join([HEADER, GOOD, expired, expired, future]) + "\n")
    market = load_market(str(path))
    assert list(market.underlying("BTC").smiles) == [dt.datetime(2026, 1, 30, 8, tzinfo=UTC)]
    assert any("skipped 2 row(s): expired before the chain's timestamp" in n for n in market.notices), market.notices
    assert any("skipped 1 row(s): instrument_name is not an option" in n for n in market.notices), market.notices
    only_expired = tmp_path / "old.csv"
    only_expired.write_text("\n".join([HEADER, expired]) + "\n")
    with pytest.raises(InputError, match="expired before its timestamp"):
        load_market(str(only_expired))


def test_chain_not_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "chain.csv"
    path.write_bytes((HEADER + "\n" + GOOD + ",caf\xe9\n").encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8") as err:
        read_chain_rows(str(path))
    assert err.value.source == str(path)


def test_expired_instrument_is_reported_where_it_was_given(hand_market, tmp_path):
    from pmjax.core.book import resolve_portfolio
    from pmjax.io.portfolio import load_portfolio

    expired = Instrument("BTC", "option", "inverse", dt.datetime(2025, 12, 26, 8, tzinfo=UTC), 100_000.0, "put")
    with pytest.raises(InputError, match="expired on 2025-12-26") as err:
        resolve([expired], [1.0], hand_market, origins=[("p.yaml", "positions[4].instrument")])
    assert (err.value.source, err.value.field) == ("p.yaml", "positions[4].instrument")
    path = tmp_path / "p.yaml"
    path.write_text("positions:\n  - {instrument: BTC, quantity: 1}\n  - {instrument: BTC, quantity: 1}\n"
                    "  - {instrument: BTC-26DEC25-100000-P, quantity: 1}\n")
    portfolio = load_portfolio(str(path))  # the BTC lines merge: the expired one is merged row 1, file row 2
    assert portfolio.positions[1].instrument.expiry.year == 2025
    with pytest.raises(InputError, match="expired") as err:
        resolve_portfolio(portfolio, hand_market)
    assert (err.value.source, err.value.field) == (str(path), "positions[2].instrument")


def test_data_readme_states_the_spot_the_market_uses():
    """pmjax/data/README.md: option counts, expiries and spot (median index_price) of each bundled chain."""
    import re

    readme = (bundled_path(CHAINS[0]).rsplit("/", 1)[0]) + "/README.md"
    text = open(readme, encoding="utf-8").read()
    for name, file in BUNDLED_MARKETS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {file} |"))
        market = load_market(name)
        rows, _ = read_chain_rows(bundled_path(name))
        for u in ("BTC", "ETH"):
            stated = float(re.search(rf"{u} ([\d,]+\.\d+)", row.split("spot", 1)[1]).group(1).replace(",", ""))
            assert stated == market.spot(u) == np.median([float(r["index_price"]) for r in rows
                                                           if r["_instrument"].underlying == u])
            n = sum(r["_instrument"].underlying == u for r in rows)
            assert f"{n:,} {u}" in row
        assert f"{len(rows):,} options" in row
        assert f"{len(market.underlying('BTC').smiles)} expiries each" in row
        assert len(market.underlying("ETH").smiles) == len(market.underlying("BTC").smiles)


# ----------------------------------------------------------------------------- listed contracts (issue 14)

def test_chain_market_records_its_listed_options_and_names_the_nearest():
    market = load_market("deribit-20260102")
    mar = dt.datetime(2026, 3, 27, 8, tzinfo=UTC)
    ks = market.listed["BTC"][mar]
    assert 100000.0 in ks and 102000.0 in ks and 101000.0 not in ks  # the chain's 27MAR26 strikes step by 2,000
    named = Instrument("BTC", "option", "inverse", mar, 100000.0, "call")
    assert market.unlisted(named) is None
    why = market.unlisted(Instrument("BTC", "option", "inverse", mar, 101234.0, "call"))
    assert "no strike 101234 on 27MAR26 (nearest listed strikes: 100000, 102000)" in why
    why = market.unlisted(Instrument("BTC", "option", "inverse", mar + dt.timedelta(days=1), 100000.0, "call"))
    assert "no BTC options expire on 28MAR26 (nearest listed expiries: 27MAR26, 26JUN26)" in why
    why = market.unlisted(Instrument("BTC", "option", "inverse", mar, 7_000_000.0, "call"))
    assert f"nearest listed strikes: {max(ks):.0f})" in why
    # the chain lists coin-settled options only: futures, perpetuals and USDC options are not checked
    assert market.unlisted(Instrument("BTC", "future", "inverse", mar + dt.timedelta(days=1))) is None
    assert market.unlisted(Instrument("BTC", "option", "linear", mar, 101234.0, "call")) is None


def test_yaml_market_lists_nothing_and_values_any_contract(hand_market):
    assert hand_market.listed is None
    inst = Instrument("BTC", "option", "inverse", dt.datetime(2026, 3, 28, 8, tzinfo=UTC), 101234.0, "call")
    assert hand_market.unlisted(inst) is None


def test_unlisted_deribit_name_on_a_chain_is_an_error_explicit_form_a_notice(tmp_path):
    from pmjax.core.book import resolve_portfolio
    from pmjax.io.portfolio import load_portfolio

    market = load_market("deribit-20260102")
    named = tmp_path / "named.yaml"
    named.write_text("positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n"
                     "  - {instrument: BTC-27MAR26-101234-C, quantity: -1}\n")
    with pytest.raises(InputError, match=r"field positions\[1\]\.instrument: BTC-27MAR26-101234-C is not listed in "
                                         r"the chain deribit-20260102: no strike 101234 on 27MAR26"):
        resolve_portfolio(load_portfolio(str(named)), market)
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("positions:\n  - {underlying: BTC, type: option, expiry: 2026-03-27, strike: 101234, "
                        "right: call, quantity: -1}\n")
    p = load_portfolio(str(explicit))
    (r,) = resolve_portfolio(p, market)
    resolve_portfolio(p, market)  # resolving again adds no second notice
    assert p.notices == [f"{explicit}: positions[0]: BTC-27MAR26-101234-C is not listed in the chain "
                         "deribit-20260102; valued from the market's smile and forward curve (explicit form)"]
    # valued from the smile: between the listed 100,000 and 102,000 vols, linear in log-moneyness
    mar = dt.datetime(2026, 3, 27, 8, tzinfo=UTC)
    smile = market.underlyings["BTC"].smiles[mar]
    i = int(np.searchsorted(smile.strikes, 101234.0))
    k0, k1, v0, v1 = smile.strikes[i - 1], smile.strikes[i], smile.vols[i - 1], smile.vols[i]
    w = math.log(101234.0 / k0) / math.log(k1 / k0)
    assert (k0, k1) == (100000.0, 102000.0) and r.vol == pytest.approx(v0 + w * (v1 - v0), rel=1e-12)


# ----------------------------------------------------------------------------- the 2020 chain (API layout)

CHAIN_2020 = SHARED_DATA / "deribit" / "deribit_btc_chain_20200521.csv"


@needs_shared_data
def test_2020_chain_in_the_api_layout_loads_as_a_market():
    import csv
    import statistics

    with open(CHAIN_2020, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    market = load_market(str(CHAIN_2020))
    assert market.notices == [] and market.source == str(CHAIN_2020)
    # as_of: the first row's timestamp, 1590103193775 ms
    assert market.as_of == dt.datetime(2020, 5, 21, 23, 19, 53, 775000, tzinfo=UTC)
    assert market.spot("BTC") == statistics.median(float(r["index_price"]) for r in rows)
    jun = dt.datetime(2020, 6, 26, 8, tzinfo=UTC)
    assert market.forward("BTC", jun) == statistics.median(
        float(r["underlying_price"]) for r in rows if r["instrument_name"].startswith("BTC-26JUN20-"))
    assert market.vol("BTC", jun, 10500.0) == pytest.approx(0.8174, rel=1e-14)  # mark_iv 81.74 (%) on C and P
    assert len(market.listed["BTC"]) == 7 and sum(map(len, market.listed["BTC"].values())) <= len(rows)
    # Black-76 on the loaded market reproduces Deribit's mark prices (coin) of its own rows
    insts = [parse_instrument(r["instrument_name"]) for r in rows]
    prices = coin_prices(resolve(insts, [1.0] * len(insts), market), market)
    errors, zero_marked = mark_errors(prices, np.array([float(r["mark_price"]) for r in rows]))
    assert np.median(errors) < 2e-3 and len(zero_marked) == 16
    # and its listing is enforced: 5JUN20 has no 9,100 strike
    with pytest.raises(InputError, match="no strike 9100 on 5JUN20"):
        resolve([parse_instrument("BTC-5JUN20-9100-C")], [1.0], market)


def test_chain_in_neither_layout_names_both(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("instrument_name,strike,mark_iv\nBTC-30JAN26-90000-C,90000,40\n")
    with pytest.raises(InputError, match="expected the columns instrument_name,strike,expiry_datetime.*or Deribit's "
                                         "API ticker layout instrument_name,strike,expiration_timestamp"):
        market_from_chain(str(wrong))
