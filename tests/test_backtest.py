"""Margin backtest: the stacked day books are the portfolios struck on each day's market, the realized
P&L is a hand Black-76 revaluation, every vmapped measure equals the single-account method, and the
Monte Carlo tail is seeded by date (independent of the window) and agrees with the Student-t quantile."""

import dataclasses
import math

import jax
import numpy as np
import pytest
import scipy.stats

from conftest import tree_allclose
from pmjax.apps import backtest as B
from pmjax.apps import calibrate
from pmjax.core.book import book_from_portfolio
from pmjax.io.config import deep_merge, load_config
from pmjax.apps.margin import deribit_report
from pmjax.core.kernel import position_values, no_shock
from pmjax.measures.rules import rules_margin, rules_params
from pmjax.apps.margin import span_report

WINDOW = B.BacktestSettings(start="2022-11-07", end="2022-11-12", paths=512)


@pytest.fixture(scope="module")
def days():
    return B.backtest_days(WINDOW)


@pytest.fixture(scope="module")
def config():
    return load_config()


def _day(tree, t):
    return jax.tree_util.tree_map(lambda x: x[t], tree)


def test_days_are_consecutive_closes_and_dvol(days):
    assert [str(d) for d in days.dates] == [f"2022-11-{d:02d}" for d in range(7, 13)]
    from pmjax.io import history

    btc, dvol = history.bundled_close("BTC"), history.bundled_dvol("BTC")
    i = int(np.searchsorted(btc.dates, np.datetime64("2022-11-08")))
    t = 1
    assert days.spot[t, 0] == btc.values[i] and days.next_spot[t, 0] == btc.values[i + 1]
    k = int(np.searchsorted(dvol.dates, np.datetime64("2022-11-08")))
    assert days.dvol[t, 0] == dvol.values[k] and days.next_dvol[t, 0] == dvol.values[k + 1]
    # the price scan range is the calibration's, set at that day's close
    pr = calibrate.price_scan_ranges(btc)
    assert days.price_scan_range[t, 0] == pr.range[np.searchsorted(pr.dates, days.dates[t])]


@pytest.mark.parametrize("name", ["covered call", "seed BTC/ETH", "short put spread", "short delta",
                                  "short 4-day straddle", "ETH short strangle"])
def test_stacked_books_are_the_portfolios_struck_on_each_day(days, name):
    legs = B.representative_books()[name]
    stacked = B.stacked_books(legs, days)
    for t in (0, 3):
        m = B.day_market(days, t, legs)
        book, _ = book_from_portfolio(B.day_portfolio(legs, m), m, size=stacked.size)
        assert tree_allclose(_day(stacked, t), book, rtol=1e-12)


def test_seed_legs_are_the_demo_seed_portfolio(days):
    from pmjax.apps.demo import seed_portfolio

    legs = B.seed_legs()
    m = B.day_market(days, 2)
    seed = seed_portfolio(m, scale_to_market=True)
    mine = B.day_portfolio(legs, m)
    assert len(seed.positions) == len(mine.positions) == 8
    for a, b in zip(seed.positions, mine.positions):
        assert a.quantity == b.quantity and a.instrument.kind == b.instrument.kind
        if a.instrument.is_option:  # the demo rounds strikes to a tick; days to expiry agree
            assert b.instrument.strike == pytest.approx(a.instrument.strike, abs=0.51 * (100 if a.instrument.underlying
                                                                                         == "BTC" else 10))
            assert abs((b.instrument.expiry - a.instrument.expiry).total_seconds()) < 86400


def _b76(F, K, T, v, call):
    d1 = (math.log(F / K) + 0.5 * v * v * T) / (v * math.sqrt(T))
    d2 = d1 - v * math.sqrt(T)
    N = scipy.stats.norm.cdf
    return F * N(d1) - K * N(d2) if call else K * N(-d2) - F * N(-d1)


def test_realized_pnl_is_a_hand_revaluation():
    days = B.backtest_days(dataclasses.replace(WINDOW, smile="flat"))
    books = B.representative_books()
    for t in range(len(days)):
        S0, S1 = days.spot[t, 0], days.next_spot[t, 0]
        v0, v1 = days.dvol[t, 0], days.next_dvol[t, 0]
        st = B.stacked_books(books["long BTC"], days)
        assert float(B._pnl(st, B.realized_shocks(st, days))[t]) == pytest.approx(S1 - S0, rel=1e-12)
        # short ATM straddle, inverse options with F = S: USD value = B76(S, K, T, vol); one day passes
        T = 30 / 365
        before = _b76(S0, S0, T, v0, True) + _b76(S0, S0, T, v0, False)
        after = _b76(S1, S0, T - 1 / 365, v1, True) + _b76(S1, S0, T - 1 / 365, v1, False)
        st = B.stacked_books(books["short straddle"], days)
        assert float(B._pnl(st, B.realized_shocks(st, days))[t]) == pytest.approx(-(after - before), rel=1e-9)


def test_span_deribit_rules_covers_equal_the_single_account_methods(days, config):
    legs = B.representative_books()["seed BTC/ETH"]
    st = B.stacked_books(legs, days)
    span = B.span_cover(st, days, config, WINDOW)
    der = B.deribit_cover(st, config)
    rules = B.rules_cover(legs, st, days, config)
    for t in (0, 4):
        m = B.day_market(days, t, legs)
        pf = B.day_portfolio(legs, m)
        cfg = deep_merge(config, {"span": {"underlyings": {
            u: {"price_scan_range": float(days.price_scan_range[t, j]),
                "extreme_move_multiple": min(3.0, B.MAX_EXTREME_MOVE / float(days.price_scan_range[t, j]))}
            for j, u in enumerate(("BTC", "ETH"))}}})
        assert span[t] == pytest.approx(span_report(pf, m, cfg)["risk"], rel=1e-10)
        assert der[t] == pytest.approx(deribit_report(pf, m, config)["initial"], rel=1e-10)
        book, _ = book_from_portfolio(pf, m)
        values = np.asarray(position_values(book, no_shock(book)))[: len(legs)]
        nov = sum(v for v, g in zip(values, legs) if g.kind == "option")
        assert rules[t] == pytest.approx(rules_margin(pf, m, rules_params(config)).initial + nov, rel=1e-10)
    # SPAN with the config's ranges differs from the rolling ones
    fixed = B.span_cover(st, days, config, B.BacktestSettings(span_ranges="config"))
    assert not np.allclose(fixed, span)


def test_monte_carlo_tail_is_seeded_by_date_and_matches_the_student_t_quantile(days):
    legs = B.representative_books()["long BTC"]
    st = B.stacked_books(legs, days)
    settings = B.BacktestSettings(paths=20_000, chunk_days=2)
    var, es = B.var_es_cover(st, days, settings)
    # the same date gives the same draws in another window and chunking
    sub = B.backtest_days(B.BacktestSettings(start="2022-11-10", end="2022-11-11"))
    v2, e2 = B.var_es_cover(B.stacked_books(legs, sub), sub, settings)
    np.testing.assert_allclose(v2, var[3:5], rtol=1e-12)
    np.testing.assert_allclose(e2, es[3:5], rtol=1e-12)
    # long 1 BTC: loss S (1 - exp(r)), r = s sqrt(tau) z - s^2 tau / 2, z a unit-variance t(4)
    nu, tau = 4.0, 1 / 365
    z01 = scipy.stats.t.ppf(0.01, nu) * math.sqrt((nu - 2) / nu)
    for t in range(len(days)):
        s, S = days.vol[t, 0], days.spot[t, 0]
        exact = S * (1 - math.exp(s * math.sqrt(tau) * z01 - 0.5 * s * s * tau))
        assert var[t] == pytest.approx(exact, rel=0.08)
        assert es[t] > var[t]


def test_run_backtest_table_counts_exceedances(days, config):
    books = {k: v for k, v in B.representative_books().items() if k in ("long BTC", "short straddle")}
    result = B.run_backtest(books, WINDOW, config, days=days)
    rows = result.table()
    assert [(r["book"], r["measure"]) for r in rows] == [(b, m) for b in books for m in B.MEASURES]
    for r in rows:
        loss = -result.pnl[r["book"]]
        cover = result.cover[r["book"]][r["measure"]]
        assert r["exceedances"] == int(np.sum(loss > cover)) and r["days"] == len(days)
        assert r["mean_margin"] == pytest.approx(np.mean(cover))
    # 2022-11-09 (FTX): BTC fell 14%; Deribit's coin-margined grid asks nothing of a spot holding
    by = {(r["book"], r["measure"]): r for r in rows}
    assert not by[("long BTC", "deribit")]["applicable"] and by[("short straddle", "deribit")]["applicable"]
    t = list(map(str, days.dates)).index("2022-11-08")  # its loss is the move to the 11-09 close
    assert -result.pnl["long BTC"][t] == pytest.approx(days.spot[t, 0] - days.next_spot[t, 0])
    assert -result.pnl["long BTC"][t] > result.cover["long BTC"]["var"][t]


def test_report_is_written(days, config, tmp_path):
    books = {"long BTC": B.representative_books()["long BTC"]}
    settings = dataclasses.replace(WINDOW, measures=("span", "var"))
    result = B.run_backtest(books, settings, config, days=days)
    doc = B.write_report(result, str(tmp_path))
    assert (tmp_path / "README.md").read_text().count("long BTC") == 2
    assert len(doc["series"]["pnl"]["long BTC"]) == len(days)
    with pytest.raises(Exception, match="unknown measure"):
        B.run_backtest(books, B.BacktestSettings(measures=("nope",)), config, days=days)
