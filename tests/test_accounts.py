"""Many accounts in one vmapped call: loading, batching, agreement with one-by-one SPAN, no recompiles,
named stress scenarios and the ``pmjax stress`` command."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmjax import cli
from pmjax.cli import app as cli_main
from pmjax.batch.accounts import build_batch
from pmjax.io.accounts import load_accounts
from pmjax.scenarios.named import load_scenarios
from pmjax.apps.stress import span_batch, span_sections, stress_pnl
from pmjax.core.book import make_book
from pmjax.io.config import load_config
from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument, parse_instrument
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.apps.margin import span_report
from pmjax.apps.risk_file import listed_contracts
from pmjax.batch.sharding import vmapped
from pmjax.measures.span import span_margin, span_params

MULTI = """\
accounts:
  - account: desk-1
    positions:
      - {instrument: BTC-27MAR26-100000-C, quantity: -2}
      - {instrument: BTC-PERPETUAL, quantity: 1}
  - margin_currency: BTC
    positions:
      - {instrument: BTC, quantity: 2}
      - {instrument: ETH_USDC-PERPETUAL, quantity: -30}
"""


def random_accounts(market, n, positions, seed):
    """n accounts of ``positions`` distinct instruments drawn from the market's listed contracts, spot and
    linear perpetuals, with normal quantities and mixed margin currencies."""
    menu = listed_contracts(market) + [Instrument(u, "spot", "linear") for u in ("BTC", "ETH")] + [
        Instrument(u, "perpetual", "linear") for u in ("BTC", "ETH")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        picks = rng.choice(len(menu), positions, replace=False)
        out.append(make_portfolio([Position(menu[j], float(rng.normal(0, 3))) for j in picks], account=f"acct-{i}",
                                  margin_currency=("USD", "BTC", "ETH")[i % 3]))
    return out


# ---------------------------------------------------------------- loading

def test_load_accounts_from_a_multi_account_file_and_a_directory(tmp_path):
    f = tmp_path / "accounts.yaml"
    f.write_text(MULTI)
    accts = load_accounts(str(f))
    assert [a.account for a in accts] == ["desk-1", "account-2"]
    assert [a.margin_currency for a in accts] == ["USD", "BTC"]
    assert [len(a.positions) for a in accts] == [2, 2]
    d = tmp_path / "dir"
    d.mkdir()
    (d / "b.csv").write_text("instrument,quantity\nBTC-PERPETUAL,1\n")
    (d / "a.json").write_text(json.dumps({"account": "alpha", "positions": [{"instrument": "ETH", "quantity": 3}]}))
    (d / "notes.txt").write_text("ignored")
    accts = load_accounts(str(d))
    assert [a.account for a in accts] == ["alpha", "b"]


def test_bad_accounts_are_input_errors_naming_where(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no portfolio files"):
        load_accounts(str(tmp_path / "empty"))
    f = tmp_path / "bad.yaml"
    f.write_text("accounts:\n  - positions: [{instrument: BTC-PERPETUAL, quantity: x}]\n")
    with pytest.raises(InputError, match=r"accounts\[0\].*positions\[0\]\.quantity"):
        load_accounts(str(f))
    with pytest.raises(InputError, match="no such file"):
        load_accounts(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------- batching

@pytest.mark.slow
def test_one_call_for_1000_accounts_equals_one_by_one(market):
    params = span_params(load_config())
    accounts = random_accounts(market, 1000, 20, seed=7)
    batch = build_batch(accounts, market)
    assert batch.books.quantity.shape == (1024, 32)
    together = span_batch(batch, params)
    assert together.total.shape == (1000,)
    for i in range(len(accounts)):
        book = make_book(batch.resolved[i], market, accounts[i].margin_currency, size=batch.size)
        alone = jax.tree_util.tree_map(np.asarray, jax.jit(span_margin)(book, params))
        for name in ("risk_array", "scan_risk", "worst_scenario", "intra_spread", "spot_charge", "inter_credit",
                     "short_option_minimum", "composite_delta", "underlying_risk", "risk", "nov", "total"):
            np.testing.assert_allclose(getattr(together, name)[i], getattr(alone, name), rtol=1e-10, atol=1e-9,
                                       err_msg=f"{name} of account {i}")
    # a handful through the public single-account report too
    sections = span_sections(batch, together)
    for i in (0, 1, 2, 999):
        np.testing.assert_allclose(sections[i]["total"], span_report(accounts[i], market, load_config())["total"],
                                   rtol=1e-10)


@pytest.mark.slow
def test_deribit_batch_of_1000_accounts_equals_one_by_one(market):
    """The path ``pmjax stress --method deribit`` takes (one vmapped call over the padded batch) against
    ``deribit_margin`` account by account, every field of the result, for all 1000 accounts."""
    from pmjax.cli.commands.stress_methods import deribit_method
    from pmjax.apps.margin import deribit_report
    from pmjax.batch.sharding import vmapped
    from pmjax.measures.deribit import DeribitResult, deribit_margin, deribit_params

    config = load_config()
    params = deribit_params(config)
    accounts = random_accounts(market, 1000, 20, seed=11)
    batch = build_batch(accounts, market)
    assert batch.books.quantity.shape == (1024, 32)
    together = jax.tree_util.tree_map(lambda x: np.asarray(x)[:1000], vmapped(deribit_margin)(batch.books, params))
    assert together.initial.shape == (1000,)
    fields = list(DeribitResult.__dataclass_fields__)
    worst_rel = 0.0
    for i in range(len(accounts)):
        book = make_book(batch.resolved[i], market, accounts[i].margin_currency, size=batch.size)
        alone = jax.tree_util.tree_map(np.asarray, jax.jit(deribit_margin)(book, params))
        for name in fields:
            a, b = getattr(together, name)[i], getattr(alone, name)
            if name == "worst_case_index":
                np.testing.assert_array_equal(a, b, err_msg=f"{name} of account {i}")
                continue
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{name} of account {i}")
            big = np.abs(b) > 1e-9
            if big.any():
                worst_rel = max(worst_rel, float(np.max(np.abs(a - b)[big] / np.abs(b)[big])))
    assert worst_rel < 1e-10
    # the stress command's sections, and a handful through the public single-account report
    out = deribit_method(batch, market, config, jnp.float64)
    np.testing.assert_allclose([s["initial"] for s in out.sections], together.initial, rtol=1e-10, atol=1e-12)
    for i in (0, 1, 2, 999):
        expected = deribit_report(accounts[i], market, config)
        np.testing.assert_allclose(out.sections[i]["initial"], expected["initial"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.sections[i]["maintenance"], expected["maintenance"], rtol=1e-10, atol=1e-12)


def test_a_second_batch_of_the_same_buckets_does_not_recompile(market, caplog):
    params = span_params(load_config())
    first = build_batch(random_accounts(market, 40, 5, seed=1), market)
    span_batch(first, params)  # compiles for (64 accounts, 8 rows)
    second = build_batch(random_accounts(market, 50, 6, seed=2), market)
    assert second.books.quantity.shape == first.books.quantity.shape == (64, 8)
    before = vmapped(span_margin)._cache_size()
    with jax.log_compiles(), caplog.at_level(logging.DEBUG, logger="jax"):
        span_batch(second, params)
    assert vmapped(span_margin)._cache_size() == before
    assert not [r for r in caplog.records if "span_margin" in r.getMessage() and "Compiling" in r.getMessage()]


def test_results_do_not_depend_on_chunking(market):
    params = span_params(load_config())
    batch = build_batch(random_accounts(market, 21, 4, seed=3), market)
    whole = span_batch(batch, params)
    chunked = span_batch(batch, params, chunk=8)
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- stress scenarios

def test_named_scenarios_move_every_underlying_at_once(market, tmp_path):
    f = tmp_path / "sc.yaml"
    f.write_text("scenarios:\n"
                 "  - {name: crash, moves: {BTC: {price: -0.3, vol: 0.2}, ETH: {price: -0.4}}}\n"
                 "  - {name: calm, days: 2}\n")
    scenarios = load_scenarios(str(f))
    assert [s.name for s in scenarios] == ["crash", "calm"]
    usd = make_portfolio([Position(parse_instrument("BTC_USDC-PERPETUAL"), 2.0),
                          Position(parse_instrument("ETH"), -10.0)], account="usd")
    coin = make_portfolio([Position(parse_instrument("ETH_USDC-PERPETUAL"), 5.0),
                           Position(parse_instrument("BTC"), 1.0)], account="coin", margin_currency="BTC")
    pnl = stress_pnl(build_batch([usd, coin], market), scenarios)
    S_btc, S_eth = market.spot("BTC"), market.spot("ETH")
    # linear perpetual: q S m; spot: q S m; in BTC, each value at the scenario's BTC price
    crash_usd = 2.0 * S_btc * -0.3 + -10.0 * S_eth * -0.4
    crash_coin = (5.0 * S_eth * -0.4 + 1.0 * S_btc * 0.7) / (S_btc * 0.7) - (0.0 + S_btc) / S_btc
    np.testing.assert_allclose(pnl, [[crash_usd, 0.0], [crash_coin, 0.0]], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("text,field", [
    ("- {name: a, moves: {DOGE: {price: 0.1}}}\n", "DOGE"),
    ("- {name: a, moves: {BTC: {price: -1.5}}}\n", "price"),
    ("- {name: a, moves: {BTC: {prise: 0.1}}}\n", "prise"),
    ("- {name: a}\n- {name: a}\n", "duplicate"),
    ("[]\n", "non-empty"),
])
def test_bad_scenarios_are_input_errors(tmp_path, text, field):
    f = tmp_path / "sc.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=field):
        load_scenarios(str(f))


# ---------------------------------------------------------------- the command

@pytest.fixture
def stress_cli(monkeypatch):
    monkeypatch.setitem(cli_main.COMMANDS, "stress", "many accounts at once")
    return cli.main


def test_stress_command_json(stress_cli, tmp_path, capsys, market):
    f = tmp_path / "accounts.yaml"
    f.write_text(MULTI)
    sc = tmp_path / "sc.yaml"
    sc.write_text("- {name: down, moves: {BTC: {price: -0.2}}}\n")
    rp = tmp_path / "rp.csv"
    assert stress_cli(["stress", str(f), "--json", "--scenarios", str(sc), "--risk-parameter-file", str(rp)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["account"] for a in doc["accounts"]] == ["desk-1", "account-2"]
    first = doc["accounts"][0]
    assert set(first["span"]) == {"risk", "nov", "total", "by_underlying"}
    assert len(first["span"]["by_underlying"]["BTC"]["risk_array"]) == 16
    expected = span_report(load_accounts(str(f))[0], market, load_config())
    np.testing.assert_allclose(first["span"]["total"], expected["total"], rtol=1e-12)
    assert set(first["scenarios"]) == {"down"}
    assert doc["risk_parameter_file"]["contracts"] > 1000 and rp.exists()


def test_stress_command_text_and_errors(stress_cli, tmp_path, capsys):
    f = tmp_path / "accounts.yaml"
    f.write_text(MULTI)
    assert stress_cli(["stress", str(f)]) == 0
    out = capsys.readouterr().out
    assert "desk-1" in out and "worst scenario" in out
    assert stress_cli(["stress", str(f), "--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
