"""The backtest's skewed smile (``pmjax.apps.backtest_smile``) and what it changes in the backtest: the stored
constants are the refit on the bundled chains, the smile reproduces the chains within the stated RMSE, its
formula by hand, the flat rule gives the flat backtest bitwise, the realized P&L under the smile and over a 2-day
margin period of risk is a hand revaluation, and the added books are what their names say."""

import dataclasses
import math

import jax
import numpy as np
import pytest
import scipy.stats

from pmjax.apps import backtest as B
from pmjax.apps import backtest_smile as S
from pmjax.core.kernel import unit_greeks

from conftest import SHARED_DATA, needs_shared_data

SHARED = str(SHARED_DATA)
WINDOW = B.BacktestSettings(start="2022-11-07", end="2022-11-12", paths=256, measures=("span",))


@pytest.fixture(scope="module")
def points():
    return S.chain_points(SHARED)


def test_stored_constants_are_the_refit_on_the_bundled_chains(points):
    fit = S.fit_rule(points)
    for f in dataclasses.fields(S.SmileRule):
        assert getattr(fit, f.name) == pytest.approx(getattr(S.FITTED, f.name), rel=1e-9, abs=1e-12), f.name
    # after a fall the skew steepens towards puts and the term structure inverts
    assert S.FITTED.skew_b > 0 and S.FITTED.beta1 > 0 and S.FITTED.curvature > 0


def test_smile_reproduces_the_chains_within_the_stated_rmse(points):
    seen = set()
    for p in points:
        stated = S.STATED_RMSE[(p.chain, p.underlying)]
        seen.add(p.chain)
        assert S.rmse(S.FITTED, p, anchor="chain") <= stated["chain"]
        if "dvol" in stated:
            assert S.rmse(S.FITTED, p) <= stated["dvol"]
            # and the skewed smile is closer to the chain than the flat one at DVOL the first backtest used
            assert S.rmse(S.FITTED, p) < S.rmse(S.SmileRule(), p)
    assert {"2026-01-02", "2026-02-06"} <= seen


@needs_shared_data
def test_the_held_out_2020_chain_is_among_the_checked_points(points):
    """The 2020-05-21 chain (shared data only, before DVOL existed) is fitted against with the chain's own ATM."""
    held_out = [p for p in points if p.chain == "2020-05-21"]
    assert held_out
    for p in held_out:
        assert S.rmse(S.FITTED, p, anchor="chain") <= S.STATED_RMSE[(p.chain, p.underlying)]["chain"]


def test_the_smile_formula_by_hand():
    r = S.FITTED
    dvol, ret, T = 0.6, -0.1, 10 / 365
    # at the money (ln K/F = 0) the smile is A(T); at 30 days A30 = alpha DVOL
    assert r.vol(dvol, ret, 0.0, S.T30) == pytest.approx(r.alpha * dvol, rel=1e-15)
    a30 = r.alpha * dvol
    atm = a30 * (1 + (r.beta0 + r.beta1 * ret) * math.log(T / S.T30))
    assert r.vol(dvol, ret, 0.0, T) == pytest.approx(atm, rel=1e-14)
    lk = math.log(0.9)
    x = lk / math.sqrt(T)
    assert r.vol(dvol, ret, lk, T) == pytest.approx(atm + (r.skew_a + r.skew_b * ret) * x + r.curvature * x * x / a30,
                                                    rel=1e-14)
    # beyond x_max the smile is flat
    assert r.vol(dvol, ret, -5.0, T) == r.vol(dvol, ret, -r.x_max * math.sqrt(T), T)
    # a put wing is dearer after a fall than after a rise
    assert r.vol(dvol, -0.2, lk, T) - r.vol(dvol, -0.2, 0.0, T) > r.vol(dvol, 0.2, lk, T) - r.vol(dvol, 0.2, 0.0, T)
    # the default rule is flat at DVOL, bitwise
    grid = np.linspace(-0.5, 0.5, 11)
    assert np.array_equal(S.SmileRule().vol(dvol, ret, grid, T), np.full(11, dvol))


@pytest.fixture(scope="module")
def flat_days():
    return B.backtest_days(dataclasses.replace(WINDOW, smile="flat"))


def test_the_flat_rule_through_the_skewed_path_is_the_flat_backtest_bitwise(flat_days):
    from pmjax.io.config import load_config

    config = load_config()
    as_skewed = dataclasses.replace(flat_days, smile=S.SmileRule())
    for legs in (B.representative_books()["seed BTC/ETH"], B.representative_books()["short OTM wings"]):
        a, b = B.stacked_books(legs, flat_days), B.stacked_books(legs, as_skewed)
        assert np.array_equal(np.asarray(a.vol), np.asarray(b.vol))
        pa = np.asarray(B._pnl(a, B.realized_shocks(a, flat_days)))
        pb = np.asarray(B._pnl(b, B.realized_shocks(b, as_skewed)))
        assert np.array_equal(pa, pb)
        assert np.array_equal(B.span_cover(a, flat_days, config, WINDOW), B.span_cover(b, as_skewed, config, WINDOW))
    # the fitted smile does change the figures
    skewed = dataclasses.replace(flat_days, smile=S.FITTED)
    legs = B.representative_books()["short OTM wings"]
    st = B.stacked_books(legs, skewed)
    assert not np.allclose(np.asarray(st.vol), np.asarray(B.stacked_books(legs, flat_days).vol))


def _b76(F, K, T, v, call):
    d1 = (math.log(F / K) + 0.5 * v * v * T) / (v * math.sqrt(T))
    d2 = d1 - v * math.sqrt(T)
    N = scipy.stats.norm.cdf
    return F * N(d1) - K * N(d2) if call else K * N(-d2) - F * N(-d1)


def test_two_day_mpor_pnl_is_a_hand_revaluation_under_the_smile(flat_days):
    one = B.backtest_days(dataclasses.replace(WINDOW, end="2022-11-14"))
    two = B.backtest_days(dataclasses.replace(WINDOW, mpor_days=2))
    assert two.horizon_days == 2 and np.array_equal(two.dates, one.dates[:len(two)])
    np.testing.assert_array_equal(two.next_spot, one.spot[2:2 + len(two)])
    np.testing.assert_array_equal(two.next_ret, one.ret[2:2 + len(two)])
    # the trailing return the rule reads: ln(S_t / S_{t-7})
    from pmjax.io import history

    btc = history.bundled_close("BTC")
    i = int(np.searchsorted(btc.dates, one.dates[0]))
    assert one.ret[0, 0] == pytest.approx(math.log(btc.values[i] / btc.values[i - 7]), rel=1e-12)
    books = B.representative_books()
    # long 1 BTC over two days: the sum of the two one-day P&Ls
    st1, st2 = B.stacked_books(books["long BTC"], one), B.stacked_books(books["long BTC"], two)
    p1, p2 = np.asarray(B._pnl(st1, B.realized_shocks(st1, one))), np.asarray(B._pnl(st2, B.realized_shocks(st2, two)))
    np.testing.assert_allclose(p2, p1[:len(two)] + p1[1:len(two) + 1], rtol=1e-12)
    # short 90/110 ETH strangle, inverse options with F = S: the smile of day t, then that of day t + 2 at the
    # strikes' new moneyness and two days less to expiry
    st = B.stacked_books(books["ETH short strangle"], two)
    pnl = np.asarray(B._pnl(st, B.realized_shocks(st, two)))
    rule, T, h = S.FITTED, 30 / 365, 2 / 365
    for t in range(len(two)):
        S0, S2 = two.spot[t, 1], two.next_spot[t, 1]
        total = 0.0
        for m, call in ((0.9, False), (1.1, True)):
            K = m * S0
            v0 = rule.vol(two.dvol[t, 1], two.ret[t, 1], math.log(m), T)
            v2 = rule.vol(two.next_dvol[t, 1], two.next_ret[t, 1], math.log(K / S2), T - h)
            total -= _b76(S2, K, T - h, float(v2), call) - _b76(S0, K, T, float(v0), call)
        assert pnl[t] == pytest.approx(total, rel=1e-9)


def test_the_added_books_are_what_their_names_say(flat_days):
    books = B.representative_books()
    assert list(books) == list(B.FIRST_BOOKS + B.MORE_BOOKS)
    days = dataclasses.replace(flat_days, smile=S.FITTED, ret=np.zeros_like(flat_days.dvol),
                               next_ret=np.zeros_like(flat_days.dvol))

    def greeks(name):
        st = jax.tree_util.tree_map(lambda x: x[0], B.stacked_books(books[name], days))
        g = jax.jit(unit_greeks)(st)
        q = np.asarray(st.quantity)
        return {k: float(np.sum(q * np.asarray(g[k]))) for k in ("delta", "vega")}, np.asarray(g["delta"])[:2], st

    g, _, _ = greeks("short delta")
    assert g["delta"] < -1.0
    g, _, _ = greeks("long straddle")
    assert g["vega"] > 0
    _, _, st = greeks("short 4-day straddle")
    assert np.all(np.asarray(st.expiry_years)[:2] * 365 < 7)
    _, delta, _ = greeks("short OTM wings")
    assert np.all(np.abs(delta) < 0.2)
    assert {g.underlying for g in books["ETH short strangle"]} == {"ETH"}
