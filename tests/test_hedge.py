"""The margin-minimising hedge (pmjax.apps.hedge): the linear parts of SPAN and the Deribit grid it reads equal the
measures' own figures for any quantities; on a scan-risk-only SPAN config the hedge is the optimum (checked against
a one-dimensional search of pmjax's own SPAN); after = pmjax margin on the book plus the trades, exactly; the
constraints hold; VaR's hedge is the Rockafellar-Uryasev optimum of its own paths; bad requests exit 2."""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import pmjax
from pmjax.apps.hedge import HedgeUnavailable, hedge, hedge_section
from pmjax.apps.hedge_map import extended_book
from pmjax.cli.app import main
from pmjax.core.portfolio import make_portfolio
from pmjax.measures.deribit import deribit_linear_terms, deribit_margin, deribit_params
from pmjax.measures.span import span_linear_terms, span_margin, span_params

scipy_optimize = pytest.importorskip("scipy.optimize")  # the optional pmjax[hedge] extra (a test dependency)

BOOK = "BTC-30JAN26-100000-C:-2,BTC-27MAR26-80000-P:1.5,ETH-30JAN26-3000-P:-5,ETH-PERPETUAL:3,BTC-27MAR26:-0.3"


@pytest.fixture(scope="module")
def market():
    return pmjax.load_market("deribit-20260102")


@pytest.fixture(scope="module")
def config():
    return pmjax.load_config()


@pytest.fixture(scope="module")
def book(market):
    return make_portfolio(pmjax.parse_trades(BOOK), account="hedge-test", margin_currency="USD")


def scan_only(config):
    """SPAN with no intra spreads, no spot charge, no short option minimum and no inter credit."""
    c = copy.deepcopy(config)
    for u in c["span"]["underlyings"].values():
        u.update(intra_spread_rate=0.0, spot_rate=0.0, short_option_minimum=0.0)
    c["span"]["inter_spreads"] = []
    return c


# ------------------------------------------------------------------------------------------ linear parts

def test_span_linear_terms_give_scan_risk_spot_charge_and_nov(market, config, book):
    """For random quantities, max(0, risk array) from the per-coin terms is span_margin's scan risk, the spot charge
    and NOV likewise: the program the hedge solves is SPAN's own arithmetic."""
    import equinox as eqx

    params = span_params(config)
    inst = pmjax.listed_contracts(market, ("futures", "perpetuals"))[:6] + [i for i in pmjax.listed_contracts(
        market, ("options",)) if i.underlying == "BTC"][:40:7]
    ext, _ = extended_book(book, market, inst, dtype=jnp.float64)
    lt = span_linear_terms(ext, params)
    rng = np.random.default_rng(3)
    und = np.asarray(ext.underlying)
    for _ in range(5):
        q = rng.normal(size=ext.size) * (np.arange(ext.size) < len(book.positions) + len(inst))
        r = span_margin(eqx.tree_at(lambda b: b.quantity, ext, jnp.asarray(q)), params)
        for u in range(2):
            ra = np.asarray(lt.risk_array) @ (q * (und == u))
            np.testing.assert_allclose(ra, np.asarray(r.risk_array[u]), rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(abs(np.asarray(lt.near_delta) @ (q * (und == u))) * float(lt.spot_charge_rate[u]),
                                       float(r.spot_charge[u]), rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(np.asarray(lt.option_value) @ q, float(r.nov), rtol=1e-10, atol=1e-8)


def test_deribit_linear_terms_give_worst_case_and_roll_shock(market, config, book):
    """worst case = max(0, max -standard, max -(extended + dampener)) and roll shock = sum_g |delta_g| rate_g from
    the per-coin terms equal deribit_margin's, per pool, for random quantities (cross and segregated pooling)."""
    import equinox as eqx

    inst = pmjax.listed_contracts(market, ("futures", "perpetuals"))[:8] + pmjax.listed_contracts(
        market, ("options",))[:60:6]
    ext, _ = extended_book(book.with_trades(pmjax.parse_trades("ETH_USDC-PERPETUAL:2")), market, inst,
                           dtype=jnp.float64)
    rng = np.random.default_rng(5)
    for pooling in ("cross", "segregated"):
        cfg = copy.deepcopy(config)
        cfg["deribit"]["pooling"] = pooling
        params = deribit_params(cfg)
        lt = jax.tree_util.tree_map(np.asarray, deribit_linear_terms(ext, params))
        for _ in range(4):
            q = rng.normal(size=ext.size) * 3
            r = deribit_margin(eqx.tree_at(lambda b: b.quantity, ext, jnp.asarray(q)), params)
            for p in range(lt.to_margin.size):
                mine = lt.pool == p
                std = (lt.standard * (q * mine)[:, None]).sum(0)
                xt = (lt.extended * (q * mine)[:, None]).sum(0)
                worst = max(0.0, float(np.max(-std)), float(np.max(-xt - lt.dampener[p])))
                np.testing.assert_allclose(worst, float(r.worst_case[p]), rtol=1e-10, atol=1e-12)
                roll = sum(abs(float(lt.delta[lt.roll_group == g] @ q[lt.roll_group == g])) * lt.roll_rate[g]
                           for g in np.unique(lt.roll_group[mine]))
                np.testing.assert_allclose(roll, float(r.roll_shock[p]), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ optimality

def _span_total_with(book, market, config, trades):
    return pmjax.compute_margins(book.with_trades(pmjax.parse_trades(trades)) if trades else book, market, config,
                                 ["span"], dtype=jnp.float64)["span"]["total"]


def test_scan_only_span_hedge_is_the_optimum(market, config, book):
    """Scan-risk-only SPAN is separable by underlying and convex in each perpetual's quantity: a bounded 1-D search
    of pmjax's own SPAN (no LP) finds each minimum; the hedge over the two perpetuals equals their sum, its SPAN
    equals the program's optimum to 1e-6 relative, and the trades are the minimisers."""
    c = scan_only(config)
    r = hedge(book, market, c, method="span", instruments="BTC-PERPETUAL,ETH-PERPETUAL", compare=())
    assert r.lp["optimal"]
    assert r.after["span"] == pytest.approx(r.lp["objective_at_solution"], rel=1e-6)
    assert r.after["span"] < r.before["span"]

    def total(name, x):
        return _span_total_with(book, market, c, f"{name}:{float(x)!r}")

    base = r.before["span"]
    gains = 0.0
    found = {t.instrument.name: t.quantity for t in r.trades}
    for name in ("BTC-PERPETUAL", "ETH-PERPETUAL"):
        res = scipy_optimize.minimize_scalar(lambda x: total(name, x), bounds=(-20, 20), method="bounded",
                                             options={"xatol": 1e-9})
        gains += base - min(res.fun, base)
        if res.fun < base - 1e-6:
            assert found[name] == pytest.approx(res.x, abs=1e-5)
    assert r.after["span"] == pytest.approx(base - gains, rel=1e-6)


def test_after_is_pmjax_margin_on_the_hedged_book(tmp_path, capsys):
    """CLI: after = pmjax margin on --out-book and on --what-if of the trades, bit for bit; SPEC section 7 keys."""
    out = tmp_path / "hedged.yaml"
    assert main(["hedge", "examples/seed_portfolio.yaml", "--method", "deribit", "--json", "--out-book", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"method", "trades", "before", "after", "cost"} <= set(doc)
    assert doc["method"] == "deribit" and doc["trades"]
    assert doc["after"]["deribit"] < doc["before"]["deribit"]
    assert main(["margin", str(out), "--method", "rules,span,deribit", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["deribit"]["initial"] == doc["after"]["deribit"]
    assert m["span"]["total"] == doc["after"]["span"]
    assert m["rules"]["initial"] == doc["after"]["rules"]
    trades = ",".join(f"{t['instrument']}:{t['quantity']!r}" for t in doc["trades"])
    assert main(["margin", "examples/seed_portfolio.yaml", "--method", "span,deribit", "--what-if", trades,
                 "--json"]) == 0
    w = json.loads(capsys.readouterr().out)["what_if"]
    assert w["after"] == {k: doc["after"][k] for k in ("span", "deribit")}
    assert w["before"] == {k: doc["before"][k] for k in ("span", "deribit")}


@pytest.mark.slow
def test_seed_portfolio_hedges_lower_span_and_deribit(market, config):
    """The README's figures: on the seed portfolio, futures/perpetuals lower SPAN total (span hedge) and Deribit
    initial (deribit hedge); the largest-of-both hedge lowers the larger of the two."""
    seed = pmjax.load_portfolio("examples/seed_portfolio.yaml")
    s = hedge(seed, market, config, method="span", compare=("deribit",))
    d = hedge(seed, market, config, method="deribit", compare=("span",))
    both = hedge(seed, market, config, method="span,deribit", compare=())
    assert s.after["span"] < 0.5 * s.before["span"]
    assert d.after["deribit"] < 0.6 * d.before["deribit"]
    assert max(both.after.values()) < max(both.before.values())
    for r in (s, d, both):
        assert all(not t.instrument.is_option for t in r.trades)
        assert r.objective["after"] <= r.lp["exact_objective"] + 1e-9  # the polish never loses


def test_constraints_max_trades_notional_lot_and_cost(market, config, book):
    c = scan_only(config)
    free = hedge(book, market, c, method="span", compare=())
    one = hedge(book, market, c, method="span", max_trades=1, compare=())
    assert len(one.trades) == 1 and one.lp["kind"] == "milp"
    assert free.after["span"] <= one.after["span"] < one.before["span"]
    cap = 0.5 * free.notional
    capped = hedge(book, market, c, method="span", max_notional=cap, compare=())
    assert capped.notional <= cap * (1 + 1e-9)
    assert free.after["span"] <= capped.after["span"] < capped.before["span"]
    lot = hedge(book, market, c, method="span", lot=0.1, compare=())
    assert all(abs(t.quantity / 0.1 - round(t.quantity / 0.1)) < 1e-9 for t in lot.trades)
    costly = hedge(book, market, c, method="span", cost_bps=5.0, compare=())
    spot = {u: market.spot(u) for u in ("BTC", "ETH")}
    expect = sum(5e-4 * abs(t.quantity) * spot[t.instrument.underlying] for t in costly.trades)
    assert costly.cost == pytest.approx(expect, rel=1e-12)
    assert costly.objective["after"] == pytest.approx(costly.after["span"] + costly.cost, rel=1e-12)
    assert costly.objective["after"] >= free.after["span"] - 1e-9


def test_named_usdc_perpetual_is_a_candidate(market, config, book):
    """Contracts by name, USDC-settled ones included (the chain lists coin-settled contracts only)."""
    r = hedge(book, market, config, method="deribit", instruments="ETH_USDC-PERPETUAL", compare=())
    assert [t.instrument.name for t in r.trades] == ["ETH_USDC-PERPETUAL"]
    assert r.after["deribit"] < r.before["deribit"]


def test_coin_margined_account(market, config):
    """A BTC-margined covered-call book: figures in BTC, the hedge lowers SPAN total, after = pmjax margin."""
    p = pmjax.load_portfolio("examples/covered_calls_btc.yaml")
    r = hedge(p, market, config, method="span", compare=())
    assert r.currency == "BTC"
    assert r.after["span"] <= r.before["span"]
    check = pmjax.compute_margins(r.portfolio, market, config, ["span"], dtype=jnp.float64)["span"]["total"]
    assert check == r.after["span"]


def test_var_hedge_is_the_es_optimum_of_its_paths(market, config, book):
    """ES over fixed paths is the Rockafellar-Uryasev LP exactly: the hedge's ES (pmjax margin, exact-tail
    revaluation) equals the program's optimum, and no single perpetual step from it lowers ES."""
    r = hedge(book, market, config, method="var", paths=4000, seed=7, compare=())
    assert r.after["var"] < r.before["var"]
    assert r.after["var"] == pytest.approx(r.lp["objective_at_solution"], rel=1e-9)
    cfg = {**config, "var": {**config["var"], "paths": 4000, "seed": 7}}
    base = {t.instrument.name: t.quantity for t in r.trades}
    for name in ("BTC-PERPETUAL", "ETH-PERPETUAL"):
        for step in (0.05, -0.05):
            trades = dict(base)
            trades[name] = trades.get(name, 0.0) + step
            es = pmjax.compute_margins(book.with_trades(pmjax.parse_trades(
                ",".join(f"{k}:{v!r}" for k, v in trades.items()))), market, cfg, ["var"], dtype=jnp.float64)["var"]
            assert es["es"] >= r.after["var"] - 1e-9 * abs(r.after["var"])


def test_section_layout(market, config, book):
    r = hedge(book, market, scan_only(config), method="span", compare=("deribit",))
    d = hedge_section(r)
    assert d["method"] == "span" and set(d["before"]) == set(d["after"]) == {"span", "deribit"}
    assert all(set(t) == {"instrument", "quantity"} for t in d["trades"])
    assert json.loads(json.dumps(d)) == d


# ------------------------------------------------------------------------------------------ bad requests

@pytest.mark.parametrize("args, needle", [
    (["--instruments", "bonds"], "--instruments"),
    (["--instruments", "BTC-1JAN30"], "not listed"),
    (["--instruments", "BTC"], "a coin"),
    (["--instruments", "BTC-9JAN26-50100-C"], "no strike 50100"),
    (["--instruments", ""], "--instruments"),
    (["--max-notional", "-5"], "--max-notional"),
    (["--max-notional", "0"], "--max-notional"),
    (["--max-trades", "0"], "--max-trades"),
    (["--method", "rules"], "--method"),
    (["--cost", "-1"], "--cost"),
    (["--lot", "0"], "--lot"),
    (["--max-notional", "1", "--lot", "1"], "no trade fits"),
    (["--out-book", "hedged.txt"], "--out-book"),
])
def test_bad_requests_exit_2_with_one_line(args, needle, capsys):
    assert main(["hedge", "examples/book.yaml", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pmjax: error:") and needle in err[0], err


def test_empty_candidate_set_exits_2(tmp_path, capsys):
    m = tmp_path / "spot_only.yaml"
    m.write_text(yaml.safe_dump({"as_of": "2026-01-02T09:00:00Z", "underlyings": {
        "BTC": {"spot": 90000.0, "vol": {"atm": 0.5}}}}))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump({"positions": [{"instrument": "BTC", "quantity": 1}]}))
    assert main(["hedge", str(b), "--market", str(m), "--instruments", "futures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "candidate set is empty" in err[0]


def test_missing_scipy_says_how_to_install(monkeypatch, market, book):
    import builtins

    real = builtins.__import__

    def no_scipy(name, *a, **k):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("no scipy")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(HedgeUnavailable, match=r"pmjax\[hedge\]"):
        hedge(book, market, method="span")


def test_missing_scipy_is_one_line_exit_1(monkeypatch, capsys):
    import pmjax.apps.hedge_program as hp

    def missing():
        raise hp.HedgeUnavailable("pmjax hedge solves a linear program with scipy's HiGHS, which is not installed: "
                                  "pip install 'pmjax[hedge]' (or scipy>=1.11)")

    monkeypatch.setattr("pmjax.apps.hedge.scipy_modules", missing)
    assert main(["hedge", "examples/book.yaml"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'pmjax[hedge]'" in err[0] and "internal" not in err[0]
