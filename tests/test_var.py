"""Monte Carlo and historical VaR/ES: closed forms for linear books, an independent numpy revaluation
of an options book on the same draws, standard errors against the spread across batches,
determinism across chunk sizes and device counts, and Euler contributions."""

import csv
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import ndtr

import pmjax
from pmjax.io import config as config_mod
from pmjax.apps import demo
from pmjax.io import history
from pmjax.scenarios import montecarlo as mc
from pmjax.measures import var
from pmjax.apps.margin import var_report
from pmjax.scenarios.historical import historical_scenarios
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, parse_instrument
from pmjax.io.market import market_from_dict
from pmjax.core.portfolio import Position, make_portfolio

AS_OF = "2026-01-02T09:18:09Z"


def flat_market(btc_vol=0.6, eth_vol=0.8, rho=None):
    doc = {"as_of": AS_OF,
           "underlyings": {"BTC": {"spot": 90000.0, "forwards": {"2026-03-27": 91000.0}, "vol": {"atm": btc_vol}},
                           "ETH": {"spot": 3000.0, "forwards": {"2026-03-27": 3040.0}, "vol": {"atm": eth_vol}}}}
    if rho is not None:
        doc["correlation"] = {"BTC": {"ETH": rho}}
    return market_from_dict(doc, source="test")


def book_of(market, positions, margin="USD", dtype=jnp.float64):
    p = make_portfolio([Position(parse_instrument(n), q) for n, q in positions], margin_currency=margin)
    return p, pmjax.book_from_portfolio(p, market, dtype=dtype)[0]


def settings(horizon=1, **var_section):
    return mc.var_settings({"horizon_days": horizon, "var": {"historical": False, **var_section}})


def run(market, book, s, dtype=jnp.float64):
    return var.var_margin(book, var.VarParams(*mc.build_model(market, s, dtype=dtype), s))


def historical(book, market, s):
    """Historical simulation of ``book`` with the settings ``s`` (the normal model's arrays)."""
    _, scen, _ = mc.build_model(market, dataclasses.replace(s, model="normal"), dtype=book.quantity.dtype)
    dates, scenarios = historical_scenarios(market, s, scen, dtype=book.quantity.dtype)
    return var.historical_simulation(book, scenarios, dates, s.confidence)


def within(estimate, exact, se, n_se=3.0):
    assert abs(estimate - exact) < n_se * se, f"{estimate} vs exact {exact}: {abs(estimate - exact) / se:.2f} SE"


def lognormal_tail(c, mu, sd, a):
    """Exact VaR and ES of the loss c (1 - exp(r)), r ~ N(mu, sd^2), c > 0, at confidence a."""
    z = stats.norm.ppf(1 - a)
    return c * (1 - math.exp(mu + sd * z)), c * (1 - math.exp(mu + sd * sd / 2) * stats.norm.cdf(z - sd) / (1 - a))


# ---------------------------------------------------------------- the estimator


def test_var_es_of_a_hand_sample():
    losses = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))
    e = var.var_es(losses, 0.95)
    assert (e.k, e.var, e.es) == (5, 96.0, 98.0)
    assert sorted(losses[e.tail]) == [96.0, 97.0, 98.0, 99.0, 100.0]
    # ES standard error by its formula: tail variance 2.5, a (ES - VaR)^2 = 0.95 * 4
    assert e.es_stderr == pytest.approx(math.sqrt((2.5 + 0.95 * 4.0) / 5))
    # VaR: m = ceil(sqrt(5)) = 3 order statistics either side: losses 99 .. 93 over 6/100 of probability
    assert e.var_stderr == pytest.approx(6.0 * 100 / 6 * math.sqrt(0.95 * 0.05 / 100))
    assert var.tail_size(10**6, 0.99) == 10_000 and var.tail_size(10, 0.999) == 1


def test_standard_errors_match_the_spread_across_batches():
    market = pmjax.load_market()
    book = pmjax.book_from_portfolio(demo.seed_portfolio(market), market)[0]
    s = settings(model="student_t", paths=400_000, seed=11)
    spec, params, _ = mc.build_model(market, s)
    losses = mc.simulate_losses(book, spec, params, paths=s.paths, seed=s.seed)
    batches = [var.var_es(b, 0.99) for b in losses.reshape(80, 5000)]
    for name in ("var", "es"):
        spread = np.std([getattr(b, name) for b in batches], ddof=1)
        stated = np.mean([getattr(b, f"{name}_stderr") for b in batches])
        # with 80 batches the sample sd is itself uncertain by about 8%
        assert 0.7 < spread / stated < 1.4, (name, spread, stated)


# ---------------------------------------------------------------- closed forms


@pytest.mark.slow
def test_linear_single_asset_book_matches_closed_form_normal():
    market = flat_market(btc_vol=0.6)
    positions = [("BTC", 1.0), ("BTC_USDC-27MAR26", 0.5), ("BTC-PERPETUAL", -0.3), ("BTC-27MAR26", 0.8)]
    _, book = book_of(market, positions)
    h = 10
    s = settings(h, model="normal", paths=10**6, seed=3)
    res = run(market, book, s)
    # every position's USD P&L is (its notional) (exp(r) - 1): spot, linear future q F, inverse q S
    c = 90000.0 * (1.0 - 0.3 + 0.8) + 0.5 * 91000.0
    sd = 0.6 * math.sqrt(h / 365)
    exact_var, exact_es = lognormal_tail(c, -sd * sd / 2, sd, 0.99)
    e = res.estimate
    within(e.var, exact_var, e.var_stderr)
    within(e.es, exact_es, e.es_stderr)
    assert sum(res.contributions) == pytest.approx(e.es, rel=1e-9)


@pytest.mark.slow
def test_two_asset_book_matches_closed_form_with_the_market_correlation():
    # ETH held in a BTC-margined account: P&L in BTC = q (S_E / S_B) (exp(r_E - r_B) - 1), and r_E - r_B
    # is normal with variance (sE^2 + sB^2 - 2 rho sE sB) tau: an exact closed form that tests the correlation
    market = flat_market(btc_vol=0.5, eth_vol=0.8, rho=0.6)
    _, book = book_of(market, [("ETH", 20.0), ("BTC", 1.0)], margin="BTC")
    h = 10
    s = settings(h, model="normal", paths=10**6, seed=5)
    res = run(market, book, s)
    assert res.params.info["correlation"]["BTC"]["ETH"] == 0.6 and res.params.info["sources"]["correlation"] == "market"
    tau = h / 365
    sb, se_ = 0.5, 0.8
    mu = -(se_**2 - sb**2) * tau / 2
    sd = math.sqrt((se_**2 + sb**2 - 2 * 0.6 * se_ * sb) * tau)
    exact_var, exact_es = lognormal_tail(20.0 * 3000.0 / 90000.0, mu, sd, 0.99)
    e = res.estimate
    within(e.var, exact_var, e.var_stderr)
    within(e.es, exact_es, e.es_stderr)
    assert abs(res.contributions[1]) < 1e-12 * e.es  # BTC in a BTC account never moves (up to rounding)
    assert res.contributions[0] == pytest.approx(e.es, rel=1e-9)


@pytest.mark.slow
def test_student_t_book_matches_the_exact_t_quantile():
    market = flat_market(btc_vol=0.6)
    _, book = book_of(market, [("BTC", 2.0)])
    h, nu, a = 10, 4.0, 0.99
    s = settings(h, model="student_t", nu=nu, paths=10**6, seed=8, confidence=a)
    res = run(market, book, s)
    tau = h / 365
    b = 0.6 * math.sqrt(tau) * math.sqrt((nu - 2) / nu)  # r = b T + m with T ~ t(nu)
    m = -0.6**2 * tau / 2
    c = 2.0 * 90000.0
    t_q = stats.t.ppf(1 - a, nu)
    exact_var = c * (1 - math.exp(b * t_q + m))
    tail_mean_growth = integrate.quad(lambda t: math.exp(b * t + m) * stats.t.pdf(t, nu), -np.inf, t_q)[0] / (1 - a)
    exact_es = c * (1 - tail_mean_growth)
    e = res.estimate
    within(e.var, exact_var, e.var_stderr)
    within(e.es, exact_es, e.es_stderr)
    # and the normal model with the same vol gives a clearly smaller ES (fat tails matter)
    normal_es = lognormal_tail(c, m, 0.6 * math.sqrt(tau), a)[1]
    assert exact_es > normal_es + 10 * e.es_stderr


# ---------------------------------------------------------------- independent numpy revaluation


def numpy_b76(F, K, T, vol, is_call):
    sd = vol * np.sqrt(T)
    d1 = np.log(F / K) / sd + 0.5 * sd
    sign = 1.0 if is_call else -1.0
    return sign * (F * ndtr(sign * d1) - K * ndtr(sign * (d1 - sd)))


def numpy_pnl(portfolio, market, zr, zv, *, vol, atm, vov, horizon, floor):
    """Per-path, per-position P&L in margin currency: the model of pmjax.scenarios.mc_models, written out in numpy."""
    tau = horizon / 365
    r = vol * np.sqrt(tau) * zr - 0.5 * vol**2 * tau
    x = vov * np.sqrt(tau) * zv - 0.5 * vov**2 * tau
    scale, shift = np.exp(r), atm * np.expm1(x)
    cols = []
    for pos in portfolio.positions:
        inst, q = pos.instrument, pos.quantity
        u = UNDERLYINGS.index(inst.underlying)
        S = market.spot(inst.underlying)
        F = market.forward(inst.underlying, inst.expiry)
        S1, F1 = S * scale[:, u], F * scale[:, u]
        if inst.kind == "spot":
            v0, v1 = S, S1
        elif inst.kind in ("future", "perpetual"):
            v0 = 0.0
            v1 = (1 - F / F1) * S1 if inst.settlement == "inverse" else F1 - F
        else:
            T = market.years_to(inst.expiry)
            iv = market.vol(inst.underlying, inst.expiry, inst.strike)
            call = inst.right == "call"
            p0 = numpy_b76(F, inst.strike, T, iv, call)
            p1 = numpy_b76(F1, inst.strike, T - tau, np.maximum(iv + shift[:, u], floor), call)
            v0, v1 = (p0 / F * S, p1 / F1 * S1) if inst.settlement == "inverse" else (p0, p1)
        if portfolio.margin_currency == "USD":
            cols.append(q * (v1 - v0))
        else:
            c = UNDERLYINGS.index(portfolio.margin_currency)
            sc = market.spot(portfolio.margin_currency)
            cols.append(q * (v1 / (sc * scale[:, c]) - v0 / sc))
    return np.stack(cols, axis=1)


def options_portfolio(market, margin):
    seed = demo.seed_portfolio(market, margin_currency=margin)
    extra = [Position(parse_instrument(n), q) for n, q in (
        ("ETH_USDC-27MAR26-3000-P", -3.0), ("BTC-27MAR26-90000-C", 0.7), ("BTC-27MAR26", -0.4),
        ("ETH_USDC-PERPETUAL", 2.0), ("BTC_USDC-27MAR26", 0.3), ("ETH-PERPETUAL", -1.5))]
    return make_portfolio(list(seed.positions) + extra, margin_currency=margin)


@pytest.mark.parametrize("margin, model", [("USD", "student_t"), ("BTC", "normal"), ("ETH", "fhs")])
def test_options_book_matches_numpy_on_the_same_draws(market, margin, model):
    portfolio = options_portfolio(market, margin)
    book = pmjax.book_from_portfolio(portfolio, market)[0]
    # every path's loss is compared, so revalue every path (exact_tail screens those outside the tail)
    s = settings(2, model=model, paths=20_000, seed=21, chunk=4096, revaluation="full")
    res = run(market, book, s)
    zr, zv = mc.scenario_factors(res.params.model, res.params.scenario, s.seed, np.arange(s.paths))
    p = res.params.scenario
    # the scenario vol defaults to the ATM implied vol at 30 days
    for i, u in enumerate(UNDERLYINGS):
        e30 = market.as_of + __import__("datetime").timedelta(days=30)
        assert float(p.vol[i]) == market.vol(u, e30, market.forward(u, e30))
    pnl = numpy_pnl(portfolio, market, zr, zv, vol=np.asarray(p.vol), atm=np.asarray(p.atm_vol),
                    vov=np.asarray(p.vol_of_vol), horizon=2, floor=0.01)
    losses = -pnl.sum(axis=1)
    scale = np.abs(losses).max()
    np.testing.assert_allclose(res.losses, losses, rtol=1e-6, atol=1e-9 * scale)
    e = var.var_es(losses, 0.99)
    assert res.estimate.var == pytest.approx(e.var, rel=1e-6)
    assert res.estimate.es == pytest.approx(e.es, rel=1e-6)
    # contributions: each position's mean loss over the tail paths
    n = len(portfolio.positions)
    np.testing.assert_allclose(res.contributions[:n], -pnl[e.tail].mean(axis=0), rtol=1e-6, atol=1e-9 * e.es)
    assert np.all(res.contributions[n:] == 0.0)


# ---------------------------------------------------------------- the draws


def test_factor_distributions():
    market = flat_market(rho=0.7)
    n = 100_000
    s = settings(1, model="normal", seed=2, spot_vol_correlation={"BTC": -0.4})
    spec, params, info = mc.build_model(market, s)
    zr, zv = mc.scenario_factors(spec, params, 2, np.arange(n))
    z = np.concatenate([zr, zv], axis=1)
    target = np.asarray(params.chol) @ np.asarray(params.chol).T
    assert target[0, 1] == pytest.approx(0.7) and target[0, 2] == pytest.approx(-0.4)
    np.testing.assert_allclose(np.corrcoef(z.T), target, atol=0.015)  # sd of a sample correlation < 0.0032
    assert stats.kstest(z[:, 0], "norm").pvalue > 1e-3

    st = settings(1, model="student_t", nu=5, seed=2)
    spec, params, _ = mc.build_model(market, st)
    zr, _ = mc.scenario_factors(spec, params, 2, np.arange(n))
    assert stats.kstest(zr[:, 1] / math.sqrt(3 / 5), stats.t(5).cdf).pvalue > 1e-3
    assert np.var(zr[:, 1]) == pytest.approx(1.0, abs=0.05)


def test_fhs_draws_whole_historical_days():
    market = pmjax.load_market()
    s = settings(1, model="fhs", seed=4)
    spec, params, info = mc.build_model(market, s)
    resid = np.asarray(params.residuals)
    assert info["fhs"]["end"] == "2026-01-01"  # no look-ahead past the market's as_of (2026-01-02)
    np.testing.assert_allclose(resid.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(resid.std(axis=0), 1.0, rtol=1e-12)
    zr, zv = mc.scenario_factors(spec, params, 4, np.arange(50_000))
    rows = {tuple(r) for r in resid}
    assert all(tuple(r) in rows for r in zr)  # BTC and ETH from the same day
    assert len({tuple(r) for r in zr}) > 0.9 * len(resid)
    # the vol factor is Gaussian given the return factor, with the history's correlation
    coef, *_ = np.linalg.lstsq(zr, zv, rcond=None)
    np.testing.assert_allclose(coef.T, np.asarray(params.vol_given_return), atol=0.02)
    assert info["spot_vol_correlation"]["BTC"] < -0.1
    # h days: the mean of h drawn days times sqrt(h) keeps unit variance
    spec2, params2, _ = mc.build_model(market, settings(3, model="fhs", seed=4))
    zr3, _ = mc.scenario_factors(spec2, params2, 4, np.arange(50_000))
    assert np.var(zr3[:, 0]) == pytest.approx(1.0, abs=0.05)


def _joint_daily_returns(market, s):
    start, end = mc.history_window(s, market)
    return history.bundled_joint_returns(UNDERLYINGS, h=1, start=start, end=end)


def _ewma_by_hand(r, lam, warmup):
    """EWMA variance forecasts, one more row than r, by the RiskMetrics recursion (numpy, written out)."""
    out = [np.mean(r[:warmup] ** 2, axis=0)]
    for x in r:
        out.append(lam * out[-1] + (1 - lam) * x * x)
    return np.array(out)


def _standardized(r, s2, burn_in):
    z = (r / np.sqrt(s2[:-1]))[burn_in:]
    z = z - z.mean(axis=0)
    return z / z.std(axis=0)


def test_fhs_filtered_scale_uses_todays_filtered_vol(market):
    portfolio = options_portfolio(market, "USD")
    book = pmjax.book_from_portfolio(portfolio, market)[0]
    s = settings(2, model="fhs", fhs_scale="filtered", paths=8_000, seed=13, chunk=4096, revaluation="full")
    res = run(market, book, s)
    p = res.params.scenario
    r = _joint_daily_returns(market, s).values
    s2 = _ewma_by_hand(r, s.ewma_lambda, s.burn_in_days)
    filtered = np.sqrt(s2[-1] * 365.0)  # today's forecast, annualised
    np.testing.assert_allclose(np.asarray(p.vol), filtered, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(p.residuals), _standardized(r, s2, s.burn_in_days), rtol=1e-9, atol=1e-12)
    assert res.params.info["sources"]["vol"] == "filtered ewma" and res.params.info["fhs"]["scale"] == "filtered"
    assert res.params.info["volatility"] == pytest.approx(dict(zip(UNDERLYINGS, filtered)), rel=1e-12)
    assert np.all(np.abs(np.asarray(p.vol) / np.asarray(p.atm_vol) - 1) > 0.01)  # not the implied vol
    # the same draws revalued in numpy with the filtered vol as s
    zr, zv = mc.scenario_factors(res.params.model, p, s.seed, np.arange(s.paths))
    pnl = numpy_pnl(portfolio, market, zr, zv, vol=filtered, atm=np.asarray(p.atm_vol),
                    vov=np.asarray(p.vol_of_vol), horizon=2, floor=0.01)
    losses = -pnl.sum(axis=1)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-6, atol=1e-9 * np.abs(losses).max())
    # implied (the default) keeps the ATM implied vol, on the very same factor draws
    implied = settings(2, model="fhs", paths=8_000, seed=13, chunk=4096)
    spec_i, p_i, info_i = mc.build_model(market, implied)
    assert implied.fhs_scale == "implied" and info_i["fhs"]["scale"] == "implied"
    np.testing.assert_array_equal(np.asarray(p_i.vol), np.asarray(p.atm_vol))
    zr_i, _ = mc.scenario_factors(spec_i, p_i, s.seed, np.arange(s.paths))
    np.testing.assert_array_equal(zr_i, zr)
    with pytest.raises(InputError) as e:
        mc.var_settings({"var": {"fhs_scale": "garch"}})
    assert e.value.field == "var.fhs_scale"


def test_fhs_with_garch_standardizes_by_the_garch_vol(market):
    portfolio = options_portfolio(market, "USD")
    s = mc.var_settings({"horizon_days": 1, "var": {"model": "fhs", "volatility_model": "garch", "paths": 2000,
                                                    "seed": 3, "historical": False}})
    spec, p, info = mc.build_model(market, s)
    r = _joint_daily_returns(market, s).values
    fits = [history.fit_garch(r[:, j], warmup=s.burn_in_days) for j in range(r.shape[1])]
    s2 = np.empty((len(r) + 1, r.shape[1]))  # the GARCH(1,1) recursion written out
    for j, g in enumerate(fits):
        s2[0, j] = g.initial
        for t in range(len(r)):
            s2[t + 1, j] = g.omega + g.alpha * r[t, j] ** 2 + g.beta * s2[t, j]
    np.testing.assert_allclose(np.asarray(p.residuals), _standardized(r, s2, s.burn_in_days), rtol=1e-9, atol=1e-12)
    ewma = _standardized(r, _ewma_by_hand(r, s.ewma_lambda, s.burn_in_days), s.burn_in_days)
    assert np.abs(np.asarray(p.residuals) - ewma).max() > 0.05  # not the EWMA residuals
    assert info["fhs"]["volatility_model"] == "garch"
    for u, g in zip(UNDERLYINGS, fits):
        assert info["fhs"]["garch"][u] == {"omega": g.omega, "alpha": g.alpha, "beta": g.beta}
        assert 0 < g.alpha and 0 < g.beta and g.persistence < 1
    assert info["fhs"]["filtered_vol"] == pytest.approx(dict(zip(UNDERLYINGS, np.sqrt(s2[-1] * 365.0))), rel=1e-12)
    doc = var_report(portfolio, market, {"horizon_days": 1, "var": {
        "model": "fhs", "volatility_model": "garch", "fhs_scale": "filtered", "paths": 2000, "seed": 3,
        "historical": False}})
    assert doc["scenario"]["sources"]["vol"] == "filtered garch"
    assert doc["scenario"]["volatility"] == pytest.approx(info["fhs"]["filtered_vol"], rel=1e-12)
    assert 0 < doc["var"] <= doc["es"] and math.isfinite(doc["es_stderr"])
    assert sum(doc["contributions"]) == pytest.approx(doc["es"], rel=1e-9)


def test_progress_reports_each_chunk_once_its_result_is_ready(monkeypatch, capsys):
    market = pmjax.load_market()
    book = pmjax.book_from_portfolio(options_portfolio(market, "USD"), market)[0]
    s = settings(1, model="student_t", paths=10_000, seed=8)
    spec, params, _ = mc.build_model(market, s)
    quiet = mc.simulate_losses(book, spec, params, paths=s.paths, seed=8, chunk=2048, progress=False)
    dispatched, calls = [], []
    real = mc.path_losses

    def recording(*a):
        out = real(*a)
        dispatched.append(out)
        return out

    def callback(done, total):
        calls.append((done, total, len(dispatched)))
        assert all(o.is_ready() for o in dispatched[:len(calls)])  # the chunks counted are computed

    monkeypatch.setattr(mc, "path_losses", recording)
    watched = mc.simulate_losses(book, spec, params, paths=s.paths, seed=8, chunk=2048, progress=callback)
    assert [c[:2] for c in calls] == [(2048, 10_000), (4096, 10_000), (6144, 10_000), (8192, 10_000),
                                      (10_000, 10_000)]  # once per chunk, increasing, ending at the total
    assert [c[2] for c in calls] == [2, 3, 4, 5, 5]  # chunk k reported after chunk k + 1 was dispatched
    capsys.readouterr()
    shown = mc.simulate_losses(book, spec, params, paths=s.paths, seed=8, chunk=2048, progress=True)
    err = capsys.readouterr().err
    assert err.count("paths (") == 5 and err.rstrip().endswith("10,000/10,000 paths (100.0%)")
    np.testing.assert_array_equal(watched, quiet)  # bitwise the same with the bar on or off
    np.testing.assert_array_equal(shown, quiet)


def test_antithetic_paths_are_mirror_pairs():
    market = flat_market()
    for model in ("normal", "student_t", "fhs"):
        s = settings(1, model=model, antithetic=True)
        spec, params, _ = mc.build_model(market, s)
        zr, zv = mc.scenario_factors(spec, params, 9, np.arange(1000))
        np.testing.assert_array_equal(zr[1::2], -zr[0::2])
        np.testing.assert_array_equal(zv[1::2], -zv[0::2])
        assert np.all(zr[2::2] != zr[0:-2:2])


def test_same_seed_same_figures_for_any_chunk_size():
    market = pmjax.load_market()
    book = pmjax.book_from_portfolio(options_portfolio(market, "USD"), market)[0]
    for model in ("student_t", "fhs"):
        s = settings(1, model=model, paths=70_000, seed=17)
        spec, params, _ = mc.build_model(market, s)
        a = mc.simulate_losses(book, spec, params, paths=s.paths, seed=17, chunk=4096)
        b = mc.simulate_losses(book, spec, params, paths=s.paths, seed=17, chunk=65536)
        np.testing.assert_array_equal(a, b)
        head = mc.simulate_losses(book, spec, params, paths=30_000, seed=17, chunk=4096)
        np.testing.assert_array_equal(head, a[:30_000])  # path i does not depend on how many paths run
        other = mc.simulate_losses(book, spec, params, paths=1000, seed=18)
        assert not np.any(other == a[:1000])


DEVICE_SCRIPT = r"""
import json, sys
import jax
import numpy as np
import pmjax
jax.config.update("jax_enable_x64", True)
from pmjax.io import config
from pmjax.apps import demo
from pmjax.apps.margin import var_report

market = pmjax.load_market()
portfolio = demo.seed_portfolio(market)
cfg = config.load_config()
cfg["var"]["historical"] = False  # historical simulation has no random draws to place on devices
devices = jax.local_devices()
assert len(devices) == 4, devices
four = var_report(portfolio, market, cfg, paths=20_000, seed=5, devices=devices)
one = var_report(portfolio, market, cfg, paths=20_000, seed=5, devices=devices[:1])
json.dump({"four": four, "one": one}, open(sys.argv[1], "w"))
"""


def test_same_figures_on_one_and_four_devices(tmp_path):
    out = tmp_path / "devices.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", DEVICE_SCRIPT, str(out)], check=True, env=env, timeout=300)
    docs = json.loads(out.read_text())
    market = pmjax.load_market()
    cfg = config_mod.load_config()
    cfg["var"]["historical"] = False
    here = var_report(demo.seed_portfolio(market), market, cfg, paths=20_000, seed=5)
    here = json.loads(json.dumps(here))
    assert docs["four"] == docs["one"] == here  # every figure, bit for bit


# ---------------------------------------------------------------- contributions, historical simulation


def test_contributions_sum_to_es_and_hedges_are_negative():
    market = flat_market(rho=0.8)
    portfolio, book = book_of(market, [("BTC", 1.0), ("BTC-27MAR26", -0.6), ("ETH", 10.0), ("ETH-PERPETUAL", -4.0)])
    s = settings(1, model="student_t", paths=50_000, seed=1)
    res = run(market, book, s)
    c = res.contributions
    assert sum(c) == pytest.approx(res.estimate.es, rel=1e-9)
    assert c[0] > 0 and c[2] > 0
    assert c[1] < 0 and c[3] < 0  # the short futures hedge the longs
    # the same as each position's mean loss over the tail paths, from the closed-form linear P&L
    zr, _ = mc.scenario_factors(res.params.model, res.params.scenario, 1, res.estimate.tail)
    tau = 1 / 365
    vol = np.asarray(res.params.scenario.vol)
    growth = np.expm1(vol * math.sqrt(tau) * zr - 0.5 * vol**2 * tau)  # exp(r) - 1
    notional = np.array([90000.0, -0.6 * 90000.0, 10 * 3000.0, -4 * 3000.0])  # inverse futures: q S
    expected = -(notional * growth[:, [0, 0, 1, 1]]).mean(axis=0)
    np.testing.assert_allclose(c[:4], expected, rtol=1e-9)


def read_closes(name):
    path = pathlib.Path(history.__file__).parents[1] / "data" / "history" / name
    with open(path, newline="") as fh:
        return {r["timestamp"]: float(r["close"]) for r in csv.DictReader(fh)}


def test_historical_simulation_replays_actual_days(market):
    portfolio, book = book_of(market, [("BTC", 1.0), ("ETH", -10.0)])
    s = settings(1)
    hs = historical(book, market, s)
    btc, eth = read_closes("BTCUSDT_1d.csv"), read_closes("ETHUSDT_1d.csv")
    with open(pathlib.Path(history.__file__).parents[1] / "data" / "history" / "btc_dvol.csv", newline="") as fh:
        dvol_days = {r["date"] for r in csv.DictReader(fh)}
    # days with prices and DVOL on the day and the day before, up to the last close before as_of
    import datetime as dt

    days = sorted(d for d in btc if d <= "2026-01-01" and d in dvol_days and
                  (prev := str(dt.date.fromisoformat(d) - dt.timedelta(days=1))) in btc and prev in dvol_days)
    assert [str(d) for d in hs.dates] == days
    sb, se_ = market.spot("BTC"), market.spot("ETH")
    prev = lambda d: str(dt.date.fromisoformat(d) - dt.timedelta(days=1))  # noqa: E731
    losses = np.array([-(sb * (btc[d] / btc[prev(d)] - 1) - 10 * se_ * (eth[d] / eth[prev(d)] - 1)) for d in days])
    np.testing.assert_allclose(hs.losses, losses, rtol=1e-10)
    e = var.var_es(losses, 0.99)
    assert (hs.estimate.var, hs.estimate.es) == pytest.approx((e.var, e.es), rel=1e-10)
    assert sum(hs.contributions) == pytest.approx(e.es, rel=1e-9)


def test_historical_simulation_moves_implied_vols(market):
    # a long straddle-like vega book: DVOL changes must reach the option values
    _, book = book_of(market, [("BTC-27MAR26-90000-C", 1.0), ("BTC-27MAR26-90000-P", 1.0)])
    with_vol = historical(book, market, settings(1))
    without = historical(book, market, settings(1, vol_moves=False))
    assert not np.allclose(with_vol.losses, without.losses)
    assert np.corrcoef(with_vol.losses - without.losses, without.losses)[0, 1] < 0.5


# ---------------------------------------------------------------- the report


def test_var_report_document(market):
    portfolio = demo.seed_portfolio(market)
    cfg = config_mod.load_config()
    doc = var_report(portfolio, market, cfg, paths=20_000, seed=3, confidence=0.975)
    json.dumps(doc)
    for key in ("model", "confidence", "horizon_days", "paths", "seed", "var", "es", "var_stderr", "es_stderr",
                "contributions"):
        assert key in doc
    assert (doc["model"], doc["confidence"], doc["paths"], doc["seed"], doc["horizon_days"], doc["nu"]) == (
        "student_t", 0.975, 20_000, 3, 1, 4.0)
    assert len(doc["contributions"]) == len(portfolio.positions)
    assert sum(doc["contributions"]) == pytest.approx(doc["es"], rel=1e-9)
    assert 0 < doc["var"] < doc["es"] and doc["var_stderr"] > 0 and doc["es_stderr"] > 0
    assert doc["pnl_quantiles"]["0.025"] == pytest.approx(-doc["var"], rel=0.01)
    assert sum(doc["pnl_histogram"]["counts"]) == 20_000
    h = doc["historical"]
    assert h["end"] == "2026-01-01" and h["days"] > 1500
    assert sum(h["contributions"]) == pytest.approx(h["es"], rel=1e-9)
    assert h["worst_days"][0]["loss"] >= h["es"] >= h["var"]


def test_float32_is_close_to_float64(market):
    portfolio = demo.seed_portfolio(market)
    cfg = {"horizon_days": 1, "var": {"paths": 20_000, "historical": False}}
    d64 = var_report(portfolio, market, cfg)
    d32 = var_report(portfolio, market, cfg, dtype=jnp.float32)
    assert d32["es"] == pytest.approx(d64["es"], rel=2e-3)
    assert d32["var"] == pytest.approx(d64["var"], rel=2e-3)


@pytest.mark.parametrize("section, field", [
    ({"model": "garch"}, "var.model"), ({"nu": 2}, "var.nu"), ({"confidence": 1.0}, "var.confidence"),
    ({"paths": 0}, "var.paths"), ({"antithetic": "yes"}, "var.antithetic"), ({"vol": {"XRP": 1}}, "var.vol.XRP"),
    ({"volatility_model": "arch"}, "var.volatility_model"), ({"pathz": 10}, "var"),
    ({"history_end": "yesterday"}, "var.history_end")])
def test_config_errors_name_the_field(section, field):
    with pytest.raises(InputError) as e:
        mc.var_settings({"var": section, "_source": "my.yaml"})
    assert e.value.field == field and e.value.source == "my.yaml"


def test_shipped_config_is_valid():
    s = mc.var_settings(config_mod.load_config())
    assert (s.model, s.nu, s.confidence, s.paths, s.seed, s.chunk) == ("student_t", 4.0, 0.99, 100_000, 0, None)
    assert mc.var_settings(config_mod.load_config(), paths=7, seed=2, confidence=0.95).paths == 7


def test_pnl_histogram_bins_the_body_finely_and_keeps_the_tails():
    from pmjax.measures.var import pnl_histogram

    rng = np.random.default_rng(3)
    losses = np.concatenate([rng.standard_t(3, 50_000) * 1000.0, [40_000.0, -30_000.0]])
    h = pnl_histogram(losses, bins=80, tail=2e-4)
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    pnl = -losses
    assert counts.sum() == len(losses) and len(edges) == len(counts) + 1
    assert edges[0] == pnl.min() and edges[-1] == pnl.max() and np.all(np.diff(edges) > 0)
    lo, hi = np.quantile(pnl, (2e-4, 1 - 2e-4))
    assert np.allclose(edges[1:-1], np.linspace(lo, hi, 81))  # 80 equal bins over the body
    assert counts[0] == np.sum(pnl < lo) and counts[-1] == np.sum(pnl > hi)
    flat = pnl_histogram(np.zeros(100))
    assert sum(flat["counts"]) == 100


def test_auto_chunk_fits_the_memory_budget_and_leaves_the_figures_unchanged(monkeypatch):
    """var.chunk: auto picks the largest power of two whose estimated footprint fits the budget (capped
    at 65,536 on a CPU); a smaller budget gives a smaller chunk and the same figures."""
    import pmjax.batch.sharding as sh
    from pmjax.measures import var as var_mod

    market = pmjax.load_market()
    book = pmjax.book_from_portfolio(options_portfolio(market, "USD"), market)[0]
    rows, dtype = book.size, book.quantity.dtype
    c = var_mod.auto_chunk(rows, dtype)
    cap = min(65_536, var_mod.CPU_REVALUATIONS_PER_CALL // rows)  # rows is a power of two
    assert c & (c - 1) == 0 and c <= cap
    assert c == cap or sh.mc_chunk_bytes(2 * c, rows, dtype) > sh.memory_budget()
    assert var_mod.auto_chunk(1024, dtype) <= 4096 and var_mod.auto_chunk(8, dtype) <= 65_536
    assert sh.mc_chunk_bytes(c, rows, dtype) <= sh.memory_budget() or c == 1
    s = settings(1, paths=6_000, seed=5)
    assert s.chunk is None
    big = var_mod.var_margin(book, var_mod.VarParams(*mc.build_model(market, s), s))
    budget = sh.mc_chunk_bytes(1024, rows, dtype)  # room for 1,024 paths a call only
    monkeypatch.setattr(sh, "memory_budget", lambda *a, **k: budget)
    assert var_mod.auto_chunk(rows, dtype) == 1024
    small = var_mod.var_margin(book, var_mod.VarParams(*mc.build_model(market, s), s))
    assert np.array_equal(big.losses, small.losses) and np.array_equal(big.contributions, small.contributions)
