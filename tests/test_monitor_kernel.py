"""The monitor's contract table (pmjax.apps.monitor_kernel): each contract valued once, every account from its
quantities. The figures equal pmjax margin of each account's book (USD and coin margin currencies, before and after
a market move, after trades that add contracts and grow the table and the books); the vectorised smile lookup gives
the scalar lookup's bits; the table keeps a padding row last."""

import datetime as dt

import jax.numpy as jnp
import numpy as np
import pytest

import pmjax
from pmjax.apps.monitor import Monitor, market_at
from pmjax.apps.monitor_kernel import ContractTable
from pmjax.core.book import resolve
from pmjax.core.instruments import parse_instrument


@pytest.fixture(scope="module")
def market():
    return pmjax.load_market("deribit-20260102")


def _check_against_margin(mon, records, market, config):
    for p, r in zip(mon.portfolios, records):
        p = mon._live_portfolio(mon.portfolios.index(p))
        want = pmjax.compute_margins(p, market, config, ["span", "deribit"], dtype=jnp.float64)
        got = r["margins"]
        assert got["span"]["initial"] == pytest.approx(want["span"]["total"], rel=1e-12, abs=1e-12), p.account
        assert got["span"]["nov"] == pytest.approx(want["span"]["nov"], rel=1e-12, abs=1e-12), p.account
        for k in ("initial", "maintenance"):
            assert got["deribit"][k] == pytest.approx(want["deribit"][k], rel=1e-12), (p.account, k)


def test_figures_equal_pmjax_margin_in_every_margin_currency(market):
    accounts = pmjax.load_accounts("examples/accounts") + pmjax.load_accounts("examples/accounts.yaml")
    assert {a.margin_currency for a in accounts} >= {"USD", "BTC", "ETH"}
    config = pmjax.load_config()
    mon = Monitor(accounts, market, config, methods=("span", "deribit"))
    held = {p.instrument for a in accounts for p in a.positions}
    assert len(mon.table.instruments) == len(held) < sum(len(a.positions) for a in accounts)  # shared contracts
    moved = market_at(market, market.as_of + dt.timedelta(hours=7), {"BTC": 0.93 * market.spot("BTC"),
                                                                       "ETH": 1.04 * market.spot("ETH")})
    for m in (market, moved):
        _check_against_margin(mon, mon.update(m), m, config)


def test_trades_that_add_contracts_grow_the_table_and_the_books(market):
    """Enough new contracts in one account to fill its spare rows and the table's: both grow (the next update
    compiles once), and every account's figures still equal pmjax margin."""
    accounts = pmjax.load_accounts("examples/accounts.yaml")
    config = pmjax.load_config()
    mon = Monitor(accounts, market, config, methods=("span", "deribit"))
    mon.update(market)
    size, table = mon.quantity.shape[1], mon.table.size
    strikes = [k for e, k in market.listed_strikes("BTC", 0.3) if e == sorted(market.underlyings["BTC"].smiles)[3]]
    expiry = sorted(market.underlyings["BTC"].smiles)[3]
    names = [f"BTC-{expiry:%d%b%y}-{int(k)}-{rt}".upper() for k in strikes for rt in "CP"][: max(size, table) + 1]
    for i, name in enumerate(names):
        mon.apply_trade(accounts[0].account, parse_instrument(name), (-1) ** i * 0.1 * (i + 1), market)
    assert mon.quantity.shape[1] > size and mon.table.size > table
    assert mon.table.pad_row == mon.table.size - 1 and len(mon.table.instruments) < mon.table.size
    assert np.all(mon.rows[mon.quantity == 0] >= 0)
    empty = mon.rows[0, len(mon.resolved[0]):]
    assert np.all(empty == mon.table.pad_row)
    _check_against_margin(mon, mon.update(market), market, config)


@pytest.mark.parametrize("name", ["deribit-20260102", "deribit-20260206"])
def test_vectorised_smile_lookup_gives_the_scalar_bits(name):
    base = pmjax.load_market(name)
    moved = market_at(base, base.as_of + dt.timedelta(days=2, hours=5), {"BTC": 0.9 * base.spot("BTC"),
                                                                          "ETH": 1.05 * base.spot("ETH")})
    for m in (base, moved):
        for u, um in m.underlyings.items():
            expiries = [e for e in sorted(um.smiles) if e > m.as_of]
            # on each smile's expiry, between two expiries (total-variance interpolation) and before the first
            for e in expiries + [e - dt.timedelta(hours=13) for e in expiries[1:]] + [m.as_of + dt.timedelta(hours=3)]:
                ks = np.concatenate([um.smiles[expiries[0]].strikes * 1.0137, [1.0, 1e7], [m.spot(u)]])
                want = np.array([m.vol(u, e, k) for k in ks])
                assert np.array_equal(m.vols(u, e, ks), want), (u, e)


def test_table_refresh_writes_each_contracts_market(market):
    names = ["BTC-27MAR26-100000-C", "BTC-27MAR26-80000-P", "BTC-PERPETUAL", "ETH-27MAR26"]
    insts = [parse_instrument(n) for n in names]
    table = ContractTable(resolve(insts, [1.0] * len(insts), market), market, jnp.float64)
    assert table.size == 8 and table.pad_row == 7
    moved = market_at(market, market.as_of + dt.timedelta(days=1), {"BTC": 80_000.0})
    expired = table.refresh(moved)
    assert not expired.any()
    want = resolve(insts, [1.0] * len(insts), moved)
    for i, r in enumerate(want):
        for f, v in (("spot", r.spot), ("forward", r.forward), ("vol", r.vol), ("expiry_years", r.expiry_years)):
            assert table.fields[f][i] == v, (names[i], f)
    late = market_at(market, dt.datetime(2026, 3, 28, tzinfo=dt.timezone.utc), {})
    assert table.refresh(late).tolist() == [True, True, False, True]
    assert table.fields["expiry_years"][0] == 0.0 and table.fields["forward"][0] == late.spot("BTC")


def test_a_trade_in_a_new_contract_that_fits_compiles_nothing(market, compile_log):
    """A contract no account holds takes a spare table row and a spare row of the account's book: the update after
    the trade runs the compiled calls it ran before."""
    accounts = pmjax.load_accounts("examples/accounts.yaml")
    mon = Monitor(accounts, market, pmjax.load_config(), methods=("span", "deribit"))
    mon.update(market)
    held = set(mon.table.instruments)
    fresh = [n for n in ("BTC-27MAR26-110000-C", "BTC-27MAR26-70000-P", "BTC-27MAR26-120000-C")
             if parse_instrument(n) not in held]
    assert len(fresh) >= 2
    mon.apply_trade(accounts[1].account, parse_instrument(fresh[0]), 0.5, market)  # warms the trade's own steps
    mon.update(market)
    size, table = mon.quantity.shape[1], mon.table.size
    assert len(mon.resolved[1]) < size and len(mon.table.instruments) < table - 1
    with compile_log() as log:
        mon.apply_trade(accounts[1].account, parse_instrument(fresh[1]), -0.25, market)
        records = mon.update(market)
    assert log.compiles() == 0, log.messages
    assert (mon.quantity.shape[1], mon.table.size) == (size, table)
    _check_against_margin(mon, records, market, pmjax.load_config())


def test_one_call_and_chunked_updates_agree(market):
    """All accounts in one compiled call (terms and figures together) or in chunks of two accounts (terms once,
    then each chunk): the same records, bit for bit."""
    accounts = pmjax.load_accounts("examples/accounts") + pmjax.load_accounts("examples/accounts.yaml")
    config = pmjax.load_config()
    moved = market_at(market, market.as_of + dt.timedelta(hours=3), {"BTC": market.spot("BTC") * 0.9})
    whole = Monitor(accounts, market, config, methods=("span", "deribit"))
    chunked = Monitor(accounts, market, config, methods=("span", "deribit"))
    assert len(accounts) > 2 and whole._chunk >= len(accounts)
    chunked._chunk = 2
    for m in (market, moved):
        parts = list(chunked.update_chunks(m))
        assert len(parts) == -(-len(accounts) // 2)
        assert [r for part in parts for r in part] == whole.update(m)
