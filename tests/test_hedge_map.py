"""The marginal margin map (pmjax.apps.hedge_map): one reverse pass gives d headline / d quantity for every listed
contract; each derivative equals the finite what-if of a small trade away from a kink, and the held positions'
ES marginals are the ES contributions per coin."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import pmjax
from pmjax.apps.hedge_map import hedge_map, hedge_map_section, listed_contracts
from pmjax.apps.whatif import WhatIf
from pmjax.cli.app import main
from pmjax.core.portfolio import make_portfolio

BOOK = "BTC:1,BTC-30JAN26-100000-C:-1,BTC-27MAR26-80000-P:2,ETH-30JAN26-3000-P:-5,ETH-PERPETUAL:3,BTC-27MAR26:-0.3"


@pytest.fixture(scope="module")
def market():
    return pmjax.load_market("deribit-20260102")


@pytest.fixture(scope="module")
def book(market):
    return make_portfolio(pmjax.parse_trades(BOOK), account="hm", margin_currency="USD")


@pytest.fixture(scope="module")
def hmap(market, book):
    return hedge_map(book, market, pmjax.load_config(), methods=("span", "deribit"))


def test_every_listed_contract_is_mapped(market, hmap):
    opts = [i for i in hmap.instruments if i.is_option]
    assert len(opts) == 2 * sum(len(ks) for e, ks in market.listed["BTC"].items() if e > market.as_of) + \
        2 * sum(len(ks) for e, ks in market.listed["ETH"].items() if e > market.as_of)
    assert {i.name for i in hmap.instruments} >= {"BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27MAR26"}
    assert len(hmap.instruments) == len(set(hmap.instruments)) == len(listed_contracts(market))
    assert all(np.isfinite(v).all() for v in hmap.marginal.values())
    doc = json.loads(json.dumps(hedge_map_section(hmap, top=3)))
    assert len(doc["rows"]) == len(hmap.instruments) and set(doc["rows"][0]["marginal"]) == {"span", "deribit"}


@pytest.mark.parametrize("method,step", [("span", 1e-3), ("deribit", 0.05)])
def test_derivatives_equal_finite_what_if_away_from_kinks(market, book, hmap, method, step):
    """For 60 contracts spread over the chain: where buying and selling a small amount change the margin at the
    same rate (no kink at the current book), that rate equals the map's derivative (relative 1e-6; the Deribit
    grid's 9-decimal coin rounding allows 1e-9 coin x S / step more)."""
    what_if = WhatIf(book, market, pmjax.load_config(), methods=(method,))
    picks = np.linspace(0, len(hmap.instruments) - 1, 60).astype(int)
    checked = 0
    for i in picks:
        name = hmap.instruments[i].name
        up = what_if.incremental([(name, step)])["incremental"][method] / step
        down = -what_if.incremental([(name, -step)])["incremental"][method] / step
        rounding = 0.0 if method == "span" else 2e-9 * 100_000 / step
        if abs(up - down) > 1e-7 * max(abs(up), 1.0) + 2 * rounding:
            continue  # a kink at the current book: the two one-sided rates differ
        checked += 1
        assert hmap.marginal[method][i] == pytest.approx(up, rel=1e-6, abs=rounding + 1e-9), name
    assert checked >= 8  # the others sit on a kink at the book (tier spreads, credits, roll shock |delta|)


def test_var_marginals_are_the_contributions_per_coin(market, book):
    """With the tail fixed, q_j d ES / d q_j is position j's ES contribution, and they sum to ES."""
    config = pmjax.load_config()
    hm = hedge_map(book, market, config, methods=("var",), kinds=("futures", "perpetuals"), paths=4000, seed=2)
    params = pmjax.var_params(config, market=market, paths=4000, seed=2, historical=False)
    held, _ = pmjax.book_from_portfolio(book, market)
    result = pmjax.var_margin(held, params)
    index = {inst: i for i, inst in enumerate(hm.instruments)}
    total = 0.0
    for j, p in enumerate(book.positions):
        if p.instrument in index:
            contribution = p.quantity * hm.marginal["var"][index[p.instrument]]
            assert contribution == pytest.approx(result.contributions[j], rel=1e-9, abs=1e-9)
            total += contribution
        else:  # spot is not a listed contract: its contribution is its own
            total += result.contributions[j]
    assert total == pytest.approx(result.estimate.es, rel=1e-9) and hm.headline["var"] == result.estimate.es


def test_command_line(tmp_path, capsys):
    path = tmp_path / "book.yaml"
    path.write_text("positions:\n  - {instrument: BTC-27MAR26-100000-C, quantity: -2}\n"
                    "  - {instrument: BTC-PERPETUAL, quantity: 0.5}\n")
    assert main(["--json", "hedge-map", str(path), "--instruments", "futures,perpetuals", "--top", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "span,deribit" and all(not r["instrument"].endswith(("-C", "-P")) for r in doc["rows"])
    best = doc["ranked"]["deribit"]["best"][0]
    assert best["marginal"] < 0 and "what_if_1_coin" in best
    for argv, field in ((["--method", "rules"], "--method"), (["--instruments", "swaps"], "--instruments"),
                        (["--top", "0"], "--top"), (["--method", ""], "--method")):
        assert main(["hedge-map", str(path)] + argv) == 2
        assert field in capsys.readouterr().err


def test_float32_map_is_close(market, book, hmap):
    hm32 = hedge_map(book, market, pmjax.load_config(), methods=("span",), kinds=("futures", "perpetuals"),
                     dtype=jnp.float32)
    index = {inst: i for i, inst in enumerate(hmap.instruments)}
    want = np.array([hmap.marginal["span"][index[i]] for i in hm32.instruments])
    np.testing.assert_allclose(hm32.marginal["span"], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_report_hedge_map_section(tmp_path, capsys):
    """``pmjax report --hedge-map``: the map's JSON (SPEC section 7 rows, ranked) in report.json and its section,
    with one chart per method and underlying held, in the HTML page."""
    path = tmp_path / "book.yaml"
    path.write_text("positions:\n" + "".join(f"  - {{instrument: {t.split(':')[0]}, quantity: {t.split(':')[1]}}}\n"
                                             for t in BOOK.split(",")))
    out = tmp_path / "rep"
    assert main(["report", str(path), "--out", str(out), "--paths", "2000", "--hedge-map"]) == 0
    capsys.readouterr()
    doc = json.loads((out / "report.json").read_text())
    assert doc["hedge_map"]["contracts"] == len(doc["hedge_map"]["rows"]) > 1000
    assert set(doc["hedge_map"]["ranked"]) == {"span", "deribit"}
    page = (out / "report.html").read_text()
    assert "Marginal margin of every listed contract" in page
    assert page.count('alt="span marginal margin') == 2 and page.count('alt="deribit marginal margin') == 2
