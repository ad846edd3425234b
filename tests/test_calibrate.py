"""Scan-range calibration: the test statistics against scipy (exact binomial, 0 and 1 exceedances included),
the rule and its no-look-ahead on synthetic data, the bundled calibration in and out of sample at a one-day
lag, the command, the shipped config and stress days."""

import csv
import dataclasses
import itertools
import json
import math
import pathlib

import numpy as np
import pytest
import scipy.special
import scipy.stats
import yaml

from pmjax.cli import app as cli_main
from pmjax.apps import calibrate as C
from pmjax.apps import calibrate_ranges as R
from pmjax.apps import calibrate_stats as S
from pmjax.apps import calibrate_ttc as T
from pmjax.io import history
from pmjax.scenarios.named import load_scenarios
from pmjax.io.config import CONFIG_DIR, load_config
from pmjax.core.errors import InputError
from pmjax.measures.span import span_params
from pmjax.scenarios.stress_days import STRESS_DAYS, stress_day_scenarios, stress_days_yaml


REPO = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- test statistics (against scipy)


@pytest.mark.parametrize("x", [0.0, 1e-6, 0.5, 1.0, 3.841458820694124, 6.63, 20.0, 60.0])
def test_chi2_survival_matches_scipy(x):
    assert S.chi2_1_sf(x) == pytest.approx(scipy.stats.chi2.sf(x, 1), rel=1e-12, abs=1e-300)
    assert S.chi2_2_sf(x) == pytest.approx(scipy.stats.chi2.sf(x, 2), rel=1e-12, abs=1e-300)


BINOMIAL_CASES = [(250, 0, 0.01), (250, 1, 0.01), (250, 5, 0.01), (250, 10, 0.01), (1467, 13, 0.01),
                  (1200, 30, 0.01), (2669, 24, 0.01), (500, 40, 0.05), (10, 10, 0.01), (1, 0, 0.01)]


@pytest.mark.parametrize("n,x,p", BINOMIAL_CASES)
def test_exact_binomial_tails_match_scipy(n, x, p):
    assert S.binom_upper_tail(x, n, p) == pytest.approx(scipy.stats.binom.sf(x - 1, n, p), rel=1e-9, abs=1e-300)
    assert S.binom_cdf(x, n, p) == pytest.approx(scipy.stats.binom.cdf(x, n, p), rel=1e-9, abs=1e-300)


def _scipy_kupiec_lr(k, n, p):
    k = np.asarray(k, np.float64)
    alt = np.where(k > 0, scipy.special.xlogy(k, np.where(k > 0, k / n, 1)), 0) + \
        np.where(k < n, scipy.special.xlog1py(n - k, -k / n), 0)
    return -2.0 * (scipy.stats.binom.logpmf(k, n, p) - scipy.special.gammaln(n + 1) + scipy.special.gammaln(k + 1)
                   + scipy.special.gammaln(n - k + 1) - alt)


@pytest.mark.parametrize("n,x,p", BINOMIAL_CASES)
def test_kupiec_exact_and_asymptotic_p_values_match_scipy(n, x, p):
    hits = np.zeros(n, bool)
    hits[np.random.default_rng(0).choice(n, x, replace=False)] = True
    lr = _scipy_kupiec_lr(x, n, p)
    assert C.kupiec_lr(hits, p) == pytest.approx(lr, rel=1e-9, abs=1e-9)
    k = np.arange(n + 1)
    exact = scipy.stats.binom.pmf(k, n, p)[_scipy_kupiec_lr(k, n, p) >= lr - 1e-9 * max(1, lr)].sum()
    st = S.coverage_stats(hits, 1 - p)
    assert st["kupiec_two_sided_p"] == pytest.approx(min(exact, 1.0), rel=1e-8)
    assert st["kupiec_asymptotic_p"] == pytest.approx(scipy.stats.chi2.sf(lr, 1), rel=1e-9, abs=1e-300)
    assert st["kupiec_p"] == pytest.approx(scipy.stats.binom.sf(x - 1, n, p), rel=1e-9, abs=1e-300)
    assert st["over_coverage_p"] == pytest.approx(scipy.stats.binom.cdf(x, n, p), rel=1e-9)


def test_hand_cases_zero_and_one_exceedance():
    # 0 in 250 days at 1%: the chi-square p-value (0.025) rejects what the exact tests do not
    st = S.coverage_stats(np.zeros(250, bool), 0.99)
    assert st["kupiec_asymptotic_p"] == pytest.approx(0.02498, abs=1e-5)
    assert st["kupiec_p"] == 1.0 and st["kupiec_two_sided_p"] == pytest.approx(0.09476, abs=1e-5)
    assert st["over_coverage_p"] == pytest.approx(0.99 ** 250, rel=1e-12)
    assert st["christoffersen_p"] is None and st["conditional_coverage_p"] is None
    assert "0 exceedances" in st["christoffersen_na"] and st["traffic_light"] == "green"
    one = np.zeros(250, bool)
    one[100] = True
    st = S.coverage_stats(one, 0.99)
    assert st["kupiec_p"] == pytest.approx(1 - 0.99 ** 250, rel=1e-12)
    assert st["christoffersen_p"] is None and "1 exceedance:" in st["christoffersen_na"]


@pytest.mark.parametrize("seed,clustered", [(1, False), (2, True), (3, True)])
def test_christoffersen_matches_a_stepwise_markov_likelihood(seed, clustered):
    rng = np.random.default_rng(seed)
    h = rng.random(800) < 0.03
    if clustered:  # every exceedance is followed by another: dependence the test must see
        h = h | np.roll(h, 1)
    a, b = h[:-1], h[1:]
    pi01 = np.sum(~a & b) / np.sum(~a)
    pi11 = np.sum(a & b) / np.sum(a)
    pi = np.mean(b)
    lr = -2.0 * (_markov_loglik(h, pi01, pi11, pi) - _markov_loglik(h, pi01, pi11))
    assert C.christoffersen_lr(h) == pytest.approx(lr, rel=1e-9, abs=1e-9)
    st = S.coverage_stats(h, 0.99)
    if h.sum() > S.MC_MAX_EXCEEDANCES:
        assert st["christoffersen_method"] == "chi2" and st["christoffersen_p"] == pytest.approx(
            scipy.stats.chi2.sf(lr, 1), rel=1e-9, abs=1e-300)
    else:  # few exceedances: the Monte Carlo p-value (checked against enumeration below)
        assert st["christoffersen_method"] == "monte_carlo"
    assert st["conditional_coverage_p"] == pytest.approx(
        scipy.stats.chi2.sf(lr + _scipy_kupiec_lr(h.sum(), len(h), 0.01), 2), rel=1e-9, abs=1e-300)
    assert (st["christoffersen_p"] < 1e-3) if clustered else (st["christoffersen_p"] > 0.05)


def _markov_loglik(h, pi01, pi11, pi=None):
    """Log-likelihood of a 0/1 sequence walked step by step (independent of the counting formula)."""
    total = 0.0
    for a, b in zip(h[:-1], h[1:]):
        q = pi if pi is not None else (pi11 if a else pi01)
        total += scipy.stats.bernoulli.logpmf(int(b), q) if 0 < q < 1 else 0.0
    return total


@pytest.fixture(scope="module")
def three_in_thirty():
    """Christoffersen's LR for every placement of 3 exceedances among 30 days (all equally likely under
    independence, given the count)."""
    lrs = []
    for pos in itertools.combinations(range(30), 3):
        g = np.zeros(30, bool)
        g[list(pos)] = True
        lrs.append(C.christoffersen_lr(g))
    return np.array(lrs)


@pytest.mark.parametrize("days", [(3, 17, 25), (3, 4, 20), (0, 1, 29)])
def test_christoffersen_monte_carlo_p_is_the_permutation_p_value(days, three_in_thirty):
    """Few exceedances: the Monte Carlo p-value estimates the exact one, enumerated here."""
    h = np.zeros(30, bool)
    h[list(days)] = True
    exact = np.mean(three_in_thirty >= C.christoffersen_lr(h) - 1e-9)
    st = S.coverage_stats(h, 0.99)
    assert st["christoffersen_method"] == "monte_carlo"
    assert st["christoffersen_p"] == pytest.approx(exact, abs=0.015)
    assert S.christoffersen_mc_p(h) == st["christoffersen_p"]  # seeded: the same every time


def test_traffic_light_zones_are_basels_for_250_days():
    zones = [S.traffic_light(x, 250, 0.01) for x in range(13)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 3
    for n, x in [(1467, 20), (1467, 25), (1467, 30), (1200, 19)]:
        c = scipy.stats.binom.cdf(x, n, 0.01)
        assert S.traffic_light(x, n, 0.01) == ("green" if c < 0.95 else "yellow" if c < 0.9999 else "red")


def test_exceedance_sizes_and_directions():
    move = np.array([0.05, -0.12, 0.11, 0.02, -0.2])
    rng = np.array([0.10, 0.10, 0.10, 0.10, 0.25])
    st = S.coverage_stats(np.abs(move) > rng, 0.99, move=move, rng=rng)
    assert (st["up_exceedances"], st["down_exceedances"]) == (1, 1)
    assert st["mean_excess"] == pytest.approx(0.015) and st["max_excess"] == pytest.approx(0.02)
    assert st["mean_excess_ratio"] == pytest.approx(1.15)
    # sizes larger than the reference's: a small p; the same sizes: a large one
    assert S.excess_size_p([2.0, 2.5, 3.0], [1.01, 1.05, 1.1, 1.02]) < 0.05
    assert S.excess_size_p([1.05, 1.02], [1.01, 1.05, 1.1, 1.02]) > 0.2
    assert S.excess_size_p([], [1.1]) is None


def test_one_sided_coverage_limit():
    n = 1467
    x = C.coverage_limit(n, 0.99)
    assert scipy.stats.binom.sf(x - 1, n, 0.01) >= 0.05 > scipy.stats.binom.sf(x, n, 0.01)


def test_kupiec_region_endpoints():
    n, p = 2669, 0.01
    lo, hi = C.kupiec_region(n, 1 - p)

    def pval(x):
        return scipy.stats.chi2.sf(-2 * (scipy.stats.binom.logpmf(x, n, p) - scipy.stats.binom.logpmf(x, n, x / n)), 1)

    assert lo < n * p < hi
    assert pval(lo) >= 0.05 > pval(lo - 1)
    assert pval(hi) >= 0.05 > pval(hi + 1)


# ---------------------------------------------------------------- the rule on synthetic data


def _series(values, start="2015-01-01", name="BTC"):
    dates = np.datetime64(start, "D") + np.arange(len(values))
    return history.Series(name, dates, np.asarray(values, np.float64), "synthetic")


def _random_walk(n, seed, vol=0.03, regimes=False):
    rng = np.random.default_rng(seed)
    sig = np.full(n, vol)
    if regimes:  # calm and stormy regimes: the vol scaling has something to follow
        sig = vol * np.where((np.arange(n) // 200) % 2 == 0, 0.5, 1.5)
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(sig[1:] * rng.standard_normal(n - 1))]))


SMALL = C.CalibrationSettings(min_history_days=120, burn_in_days=20, floor_window_days=300, vol_min_history_days=120)


def _ewma_sigma(r, lam, burn):
    s2 = [np.mean(r[:burn] ** 2)]
    for x in r:
        s2.append(lam * s2[-1] + (1 - lam) * x * x)
    return np.sqrt(s2)


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_rule_matches_a_direct_computation_at_every_close(lag):
    p = _random_walk(400, 0, regimes=True)
    s = dataclasses.replace(SMALL, lag_days=lag)
    pr = C.price_scan_ranges(_series(p), s)
    b = s.burn_in_days
    sigma = _ewma_sigma(np.diff(np.log(p)), s.ewma_lambda, b)
    move = p[1:] / p[:-1] - 1
    z = {i: abs(move[i]) / sigma[i - lag] for i in range(b + lag, len(move))}  # standardized as applied
    first = b + lag + s.min_history_days
    for t in range(first, len(p)):
        q = np.quantile([z[i] for i in range(b + lag, t)], s.coverage)
        floor = np.quantile(np.abs(move[max(0, t - s.floor_window_days):t]), s.floor_coverage)
        assert pr.range[t] == pytest.approx(max(q * sigma[t], floor), rel=1e-12)
        assert pr.floor[t] == pytest.approx(floor, rel=1e-12)
    assert np.all(np.isnan(pr.range[:first]))
    # the backtest as applied: the move from close t against the range set at close t - lag
    days = R.backtest_days(pr, 0, pr.last)
    assert days[0] == first + lag and days[-1] == len(p) - 2 and len(days) == len(p) - 1 - first - lag
    st = R.backtest(pr, days, s.coverage)
    hits = [abs(move[t]) > pr.range[t - lag] for t in days]
    assert st["exceedances"] == sum(hits) and st["lag_days"] == lag


def test_vol_range_is_the_rule_on_dvol_changes():
    rng = np.random.default_rng(4)
    d = 0.5 + np.cumsum(rng.normal(0, 0.02, 500)) * np.where(np.arange(500) > 250, 2.0, 1.0)
    s = SMALL
    vr = C.vol_scan_ranges(_series(d, name="BTC_dvol"), s)
    b, lag = s.burn_in_days, s.lag_days
    sigma = _ewma_sigma(np.diff(d), s.vol_ewma_lambda, b)
    ch = np.diff(d)
    for t in range(b + lag + s.vol_min_history_days, len(d)):
        q = np.quantile([abs(ch[i]) / sigma[i - lag] for i in range(b + lag, t)], s.coverage)
        floor = np.quantile(np.abs(ch[max(0, t - s.floor_window_days):t]), s.vol_floor_coverage)
        assert vr.range[t] == pytest.approx(max(q * sigma[t], floor), rel=1e-12)


def test_anti_procyclicality_tools():
    p = _random_walk(700, 7, regimes=True)
    base = C.price_scan_ranges(_series(p), SMALL)
    calc = base.range
    ok = np.nonzero(np.isfinite(calc))[0]
    stress = C.price_scan_ranges(_series(p), dataclasses.replace(SMALL, price_apc=("floor", "stress")))
    for t in ok:
        peak = np.nanmax(calc[max(0, t - SMALL.floor_window_days): t + 1])
        assert stress.range[t] == pytest.approx(0.75 * calc[t] + 0.25 * peak, rel=1e-12)
    buf = C.price_scan_ranges(_series(p), dataclasses.replace(SMALL, price_apc=("floor", "buffer")))
    prev = None
    for t in ok:
        want = 1.25 * calc[t] if prev is None else max(calc[t], min(1.25 * calc[t], 1.01 * prev))
        assert buf.range[t] == pytest.approx(want, rel=1e-12)
        prev = want
    assert np.all(buf.range[ok] >= calc[ok]) and np.all(buf.range[ok] <= 1.25 * calc[ok] * (1 + 1e-12))
    none = C.price_scan_ranges(_series(p), dataclasses.replace(SMALL, price_apc=()))
    np.testing.assert_array_equal(none.range, none.scaled)
    # the tools damp the swings: a smaller peak-to-trough ratio than the range without them
    pc = {k: R.procyclicality(r)["peak_to_trough"] for k, r in (("none", none), ("stress", stress), ("buf", buf))}
    assert pc["stress"] < pc["none"] and pc["buf"] < pc["none"]


def test_procyclicality_figures():
    r = C.price_scan_ranges(_series(_random_walk(600, 8, regimes=True)), SMALL)
    pc = R.procyclicality(r)
    v = r.range[np.isfinite(r.range)]
    assert pc["peak"] == v.max() and pc["trough"] == v.min() and pc["peak_to_trough"] == v.max() / v.min()
    assert pc["max_increase_10d"] == pytest.approx(max(v[t] / v[t - 10] for t in range(10, len(v))))
    assert pc["max_rise_30d"] == pytest.approx(max(v[t] - v[t - 30] for t in range(30, len(v))))


@pytest.mark.parametrize("settings,kind", [
    (SMALL, "price"),
    (dataclasses.replace(SMALL, price_apc=("floor", "stress", "buffer"), lag_days=2), "price"),
    (dataclasses.replace(SMALL, volatility_model="garch", garch_refit_days=60), "price"),
    (dataclasses.replace(SMALL, vol_apc=("floor", "stress", "buffer")), "vol"),
])
def test_no_range_depends_on_data_after_its_day(settings, kind):
    """Truncate the history at T: every range set by T is unchanged; rewrite the future: the same."""
    p = _random_walk(520, 1, regimes=True) if kind == "price" else 0.6 + 0.002 * np.cumsum(
        np.random.default_rng(3).standard_normal(520))
    t = 380
    full = R.rolling_ranges(_series(p), settings, kind=kind)
    cut = R.rolling_ranges(_series(p[: t + 1]), settings, kind=kind)
    q = p.copy()
    q[t + 1:] *= np.exp(np.random.default_rng(9).normal(0, 0.2, len(q) - t - 1))  # rewrite the future
    other = R.rolling_ranges(_series(q), settings, kind=kind)
    assert np.isfinite(cut.range[t]) and np.sum(np.isfinite(cut.range)) > 100
    np.testing.assert_array_equal(full.range[: t + 1], cut.range)
    np.testing.assert_array_equal(full.range[: t + 1], other.range[: t + 1])
    assert not np.allclose(full.range[t + 2:], other.range[t + 2:])
    if settings.volatility_model == "garch":  # refits on the returns up to each refit day only
        assert len(full.garch) > len(cut.garch) >= 3
        for (start, g), (start2, g2) in zip(cut.garch, full.garch):
            assert start == start2 and (g.omega, g.alpha, g.beta) == (g2.omega, g2.alpha, g2.beta)
            assert g.n == start


def _mixture_quantile(moves, coverage, weight, window):
    """Reference: the inverted-CDF quantile of (1 - w) x the lookback + w x its stressed window, by brute force over
    every window and every candidate level (no sorting tricks)."""
    moves = np.asarray(moves)
    starts = range(max(1, len(moves) - window + 1))
    qs = [np.quantile(moves[a: a + window], coverage) for a in starts]
    a = int(np.argmax(qs))
    stressed = moves[a: a + window]

    def cdf(x):
        return (1 - weight) * np.mean(moves <= x) + weight * np.mean(stressed <= x)

    return min(x for x in moves if cdf(x) >= coverage - 1e-12), a


@pytest.mark.parametrize("schedule,months,weight", [("monthly", 1, 0.25), ("quarterly", 3, 0.25), ("annual", 12, 0.25),
                                                    ("quarterly", 3, 0.0), ("quarterly", 3, 0.5)])
def test_ttc_rule_matches_a_direct_computation(schedule, months, weight):
    """The through-the-cycle range: set at the first close with the minimum history, then at the first close
    of each period, from the moves closed by then (the stress-weighted ten-year quantile) and the last year's
    daily ranges, with the 25% buffer released when the calculated range rises by more than it; constant in
    between."""
    s = dataclasses.replace(SMALL, ttc_reset=schedule, ttc_mean_days=90, ttc_stress_weight=weight,
                            ttc_stress_window_days=30)
    p = _random_walk(900, 4, regimes=True)
    daily = R.price_scan_ranges(_series(p), s)
    r = T.ttc_ranges(daily, s)
    first = s.min_history_days  # h = 1: min_history_days moves closed
    month = daily.dates.astype("datetime64[M]").astype(np.int64)
    resets = [first] + [t for t in range(first + 1, len(p)) if month[t] // months != month[t - 1] // months]
    assert [str(daily.dates[t]) for t in resets] == [x["date"] for x in T.ttc_resets(r)]
    assert np.all(np.isnan(r.range[:first])) and r.first == first
    absmove, prev = np.abs(np.diff(p) / p[:-1]), math.nan
    for k, t in enumerate(resets):
        lo = max(0, t - s.floor_window_days)
        u, a = _mixture_quantile(absmove[lo: t], 0.99, weight, 30)
        if weight == 0:  # no stressed window: the lookback's own inverted-CDF quantile
            assert u == pytest.approx(np.quantile(absmove[lo: t], 0.99, method="inverted_cdf"), rel=1e-12)
        d = daily.range[max(0, t - 89): t + 1]
        m = max(u, np.mean(d[np.isfinite(d)])) if np.isfinite(d).any() else u
        want = 1.25 * m if k == 0 else max(m, min(1.25 * m, 1.25 * prev))
        stop = resets[k + 1] if k + 1 < len(resets) else len(p)
        np.testing.assert_allclose(r.range[t:stop], want, rtol=1e-12)
        assert r.calculated[t] == pytest.approx(m, rel=1e-12) and r.scaled[t] == pytest.approx(u, rel=1e-12)
        assert T.ttc_resets(r)[k]["stressed_window"] == [str(daily.dates[lo + a]), str(daily.dates[lo + a + 29])]
        prev = want
    # applied lag_days after the re-set close, like the daily ranges
    np.testing.assert_array_equal(R.applied_range(r)[resets[1] + 1], r.range[resets[1]])
    assert R.applied_range(r)[resets[1]] == r.range[resets[1] - 1]


def test_stress_weighted_quantile_hand_cases():
    """Ten moves 1..10 %, stressed window of 2: the window {9, 10} has the largest quantile. At 90% coverage with
    weight 0.5 the CDF is 0.5 x k/10 below 9 %, reaching 0.5 x 0.8 = 0.4 at 8 %, 0.5 x 0.9 + 0.25 = 0.7 at 9 % and 1 at
    10 %: the quantile is 10 %. With weight 0 it is 9 % (the 9th of 10)."""
    x = np.arange(1.0, 11.0) / 100
    assert T.stress_weighted_quantile(x, 0.9, 0.5, 2) == (0.10, 8)
    assert T.stress_weighted_quantile(x, 0.9, 0.0, 2) == (0.09, 8)
    # 60% coverage, weight 0.25: 0.75 k/10 reaches 0.6 at k = 8 (8 %), and the window adds nothing below 9 %
    assert T.stress_weighted_quantile(x, 0.6, 0.25, 2)[0] == 0.08
    # a lookback shorter than the window: the window is the whole lookback, the weights change nothing
    assert T.stress_weighted_quantile(x[:3], 0.5, 0.25, 5) == (0.02, 0)
    with pytest.raises(InputError, match="ttc_stress_weight"):
        dataclasses.replace(SMALL, ttc_stress_weight=1.0).check()
    with pytest.raises(InputError, match="ttc_stress_window_days"):
        dataclasses.replace(SMALL, ttc_stress_window_days=0).check()


def test_ttc_range_uses_no_data_after_its_reset_and_is_stable():
    s = dataclasses.replace(SMALL, ttc_mean_days=120)
    p = _random_walk(800, 6, regimes=True)
    t = 600
    full = T.ttc_ranges(R.price_scan_ranges(_series(p), s), s)
    q = p.copy()
    q[t + 1:] *= np.exp(np.random.default_rng(2).normal(0, 0.3, len(q) - t - 1))  # rewrite the future
    other = T.ttc_ranges(R.price_scan_ranges(_series(q), s), s)
    np.testing.assert_array_equal(full.range[: t + 1], other.range[: t + 1])
    assert not np.allclose(full.range[t + 1:], other.range[t + 1:])
    # stable through the cycle: a handful of values, and a far smaller peak-to-trough than the daily rule
    daily = R.price_scan_ranges(_series(p), s)
    # (two re-sets may post the same range: the stress-weighted quantile is one of the moves)
    assert len(np.unique(full.range[np.isfinite(full.range)])) <= len(T.ttc_resets(full)) < 30
    assert R.procyclicality(full)["peak_to_trough"] < R.procyclicality(daily)["peak_to_trough"]
    e = T.ttc_entry(full, t, s)
    assert e["range"] == full.range[t] and e["schedule"] == "quarterly" and e["reset"] <= str(full.dates[t])
    assert e["next_reset_after"] > str(full.dates[t]) and e["next_reset_after"].endswith("-01")
    with pytest.raises(InputError, match="ttc_reset"):
        dataclasses.replace(s, ttc_reset="weekly").check()


def test_garch_refits_are_expanding_and_frozen_after_the_cutoff():
    p = _random_walk(700, 3, regimes=True)
    s = dataclasses.replace(SMALL, volatility_model="garch", garch_refit_days=91)
    pr = C.price_scan_ranges(_series(p), s, cutoff="2015-12-01")
    r = np.diff(np.log(p))
    cutoff = pr.index("2015-12-01")
    assert [start for start, _ in pr.garch] == list(range(pr.first, cutoff + 1, 91))
    start, g = pr.garch[1]
    ref = history.fit_garch(r[:start], warmup=s.burn_in_days)
    assert (g.omega, g.alpha, g.beta) == (ref.omega, ref.alpha, ref.beta)
    assert 0 < g.persistence < 1
    t = len(p) - 1  # after the cutoff: the last fit's forecasts
    np.testing.assert_allclose(pr.sigma[t] ** 2, pr.garch[-1][1].variance(r)[t], rtol=1e-12)


@pytest.mark.parametrize("h", [2, 5])
def test_multi_day_horizon_uses_non_overlapping_windows(h):
    p = _random_walk(500, 2)
    s = dataclasses.replace(SMALL, horizon_days=h)
    pr = C.price_scan_ranges(_series(p), s)
    days = R.backtest_days(pr, 0, pr.last)
    assert np.all(np.diff(days) == h) and days[-1] == len(p) - 1 - h
    t = days[0]
    np.testing.assert_allclose(pr.move[t], p[t + h] / p[t] - 1, rtol=1e-14)
    # the range set at t rests only on windows closed by t (i + h <= t), standardized by sigma_{i - lag}
    b, lag, sigma = s.burn_in_days, s.lag_days, pr.sigma
    sig = _ewma_sigma(np.diff(np.log(p)), s.ewma_lambda, b)
    u = t - lag
    mv = np.abs(p[h:] / p[:-h] - 1)
    q = np.quantile(mv[b + lag: u - h + 1] / (sig[b: u - h + 1 - lag] * math.sqrt(h)), s.coverage)
    floor = np.quantile(mv[: u - h + 1], s.floor_coverage)
    assert pr.range[u] == pytest.approx(max(q * sigma[u] * math.sqrt(h), floor), rel=1e-12)


def test_coverage_on_gaussian_returns_is_near_the_target():
    # constant-vol lognormal closes: the calibrated range covers ~99% of moves
    p = _random_walk(3000, 5, vol=0.02)
    pr = C.price_scan_ranges(_series(p), C.CalibrationSettings())
    st = R.backtest(pr, R.backtest_days(pr, 0, pr.last), 0.99)
    lo, hi = C.kupiec_region(st["days"], 0.99)
    assert lo <= st["exceedances"] <= hi and S.passes(st)
    # on average a little above the two-sided 99% normal quantile: a noisy EWMA vol fattens the tails
    mean = st["mean_range"]
    assert scipy.stats.norm.ppf(0.995) * 0.02 < mean < 1.12 * scipy.stats.norm.ppf(0.995) * 0.02


def test_inter_spread_credit_is_hedge_effectiveness_capped():
    rng = np.random.default_rng(6)
    re_ = rng.normal(0, 0.04, 1500)
    rb_hedged = 0.7 * re_ + rng.normal(0, 0.004, 1500)  # an almost perfect hedge
    rb_free = rng.normal(0, 0.03, 1500)  # no relation at all

    def closes(r, s0):
        return s0 * np.cumprod(np.concatenate([[1.0], 1 + r]))

    eth = _series(closes(re_, 3000.0), name="ETH")
    tight = C.inter_spread(_series(closes(rb_hedged, 90000.0)), eth)
    assert tight["beta"] == pytest.approx(0.7, abs=0.02)
    assert tight["hedge_effectiveness"] > 0.8 and tight["credit_rate"] == 0.75  # capped
    assert tight["legs"]["ETH"] == pytest.approx(round(tight["beta"] * tight["prices"]["BTC"] / tight["prices"]["ETH"],
                                                       2))
    loose = C.inter_spread(_series(closes(rb_free, 90000.0)), eth)
    assert abs(loose["correlation"]) < 0.1 and loose["credit_rate"] < 0.05


def test_daily_grid_carries_the_last_close_over_missing_days():
    s = history.Series("BTC", np.array(["2020-01-01", "2020-01-02", "2020-01-05"], dtype="datetime64[D]"),
                       np.array([1.0, 2.0, 3.0]), "x")
    g, filled = C.daily_grid(s)
    assert filled == 2 and g.values.tolist() == [1.0, 2.0, 2.0, 2.0, 3.0]


# ---------------------------------------------------------------- inputs


def test_underlying_from_the_file_name():
    assert C.underlying_from_filename("/x/BTCUSDT_1d.csv") == "BTC"
    assert C.underlying_from_filename("eth-usd.csv") == "ETH"
    assert C.underlying_from_filename("SOLUSDT.csv") is None


def test_history_inputs_and_errors(tmp_path):
    src = history.CLOSE_FILES["BTC"]
    text = open(history._bundled(src), encoding="utf-8").read()
    (tmp_path / "prices.csv").write_text(text)
    with pytest.raises(InputError, match="--underlying"):
        C.load_history([str(tmp_path / "prices.csv")])
    data = C.load_history([str(tmp_path / "prices.csv")], underlying="btc", end="2025-12-31")
    assert list(data.closes) == ["BTC"] and str(data.closes["BTC"].dates[-1]) == "2025-12-31"
    assert data.notices and "bundled Deribit DVOL" in data.notices[0]
    with pytest.raises(InputError, match="two histories"):
        C.load_history(["bundled", history._bundled(src)])
    (tmp_path / "BTC_bad.csv").write_text("timestamp,close\n2020-01-01,abc\n")
    with pytest.raises(InputError, match="not a number"):
        C.load_history([str(tmp_path / "BTC_bad.csv")])
    with pytest.raises(InputError, match="coverage"):
        C.CalibrationSettings(coverage=1.2).check()


# ---------------------------------------------------------------- the bundled calibration (acceptance)

SPLIT = "2021-12-31"


@pytest.fixture(scope="module")
def bundled():
    return C.calibrate(C.load_history([C.BUNDLED]))


@pytest.fixture(scope="module")
def split():
    return C.calibrate(C.load_history([C.BUNDLED]), split=SPLIT)


def test_split_calibration_is_the_calibration_of_the_truncated_history(split):
    """No input of a range, of the credit or of an in-sample backtest depends on data after the split:
    calibrating the history cut at the split gives the same."""
    cut = C.calibrate(C.load_history([C.BUNDLED], end=SPLIT))
    for u, e in split.doc["underlyings"].items():
        f = cut.doc["underlyings"][u]
        assert e["as_of"] == f["as_of"] == SPLIT
        for k in ("price_scan_range", "vol_scan_range", "long_run_floor", "scaled_range", "standardized_quantile",
                  "daily_vol", "vol_long_run_floor", "vol_scaled_range", "backtest", "vol_backtest",
                  "daily_price_scan_range", "daily_vol_scan_range", "daily_backtest", "daily_vol_backtest"):
            assert e[k] == f[k], (u, k)
        assert e["ttc"]["price"] == f["ttc"]["price"] and e["ttc"]["vol"] == f["ttc"]["vol"]
        for a, b in ((split.prices[u], cut.prices[u]), (split.vols[u], cut.vols[u]),
                     (split.ttc_prices[u], cut.ttc_prices[u]), (split.ttc_vols[u], cut.ttc_vols[u])):
            np.testing.assert_array_equal(a.range[: len(b.range)], b.range)
    assert split.doc["inter_spreads"] == cut.doc["inter_spreads"]
    assert split.doc["inter_spreads"][0]["end"] == SPLIT


def _recount(r, b, kind, u):
    """Exceedances recounted from the raw closes (DVOL) and the range set lag (1) days before each move."""
    raw = _raw_closes(u) if kind == "price" else _raw_dvol(u)
    t0 = int(np.searchsorted(r.dates, np.datetime64(b["start"])))
    t1 = int(np.searchsorted(r.dates, np.datetime64(b["end"])))
    ok = [t for t in range(t0, t1 + 1) if str(r.dates[t]) in raw and str(r.dates[t + 1]) in raw]
    assert len(ok) >= b["days"] - 31  # days missing from the raw file are carried over on the grid
    moves = [raw[str(r.dates[t + 1])] / raw[str(r.dates[t])] - 1 if kind == "price"
             else raw[str(r.dates[t + 1])] - raw[str(r.dates[t])] for t in ok]
    return sum(abs(m) > r.range[t - 1] for m, t in zip(moves, ok))


@pytest.mark.parametrize("u", ["BTC", "ETH"])
def test_bundled_in_sample_backtests_are_the_ranges_as_applied(split, u):
    e = split.doc["underlyings"][u]
    for key, r, kind in (("backtest", split.ttc_prices[u], "price"), ("daily_backtest", split.prices[u], "price"),
                         ("vol_backtest", split.ttc_vols[u], "vol")):
        b = e[key]
        assert b["lag_days"] == 1 and b["end"] == "2021-12-30" and b["traffic_light"] == "green"
        assert b["days"] > (1150 if kind == "price" else 30) and b["kupiec_p"] >= 0.05
        assert b["up_exceedances"] + b["down_exceedances"] == b["exceedances"] == len(b["exceedance_dates"])
        assert _recount(r, b, kind, u) == b["exceedances"], key
    # the TTC range is set from 2018-08-17 (a year of closes), DVOL's from 2021-11-29 (250 changes); the daily
    # vol range has no in-sample test day at this split (DVOL starts 2021-03-24), and says why
    assert e["backtest"]["start"] == "2018-08-18" and e["vol_backtest"]["start"] == "2021-11-30"
    assert e["daily_vol_backtest"] is None and "first vol range" in e["daily_vol_backtest_na"]
    # the over-coverage cost of the TTC range: its mean against the daily rule's on the same days
    b = e["backtest"]
    assert b["cost_vs_daily"] == pytest.approx(b["mean_range"] / b["daily_mean_range"]) and b["cost_vs_daily"] > 1


@pytest.mark.parametrize("u", ["BTC", "ETH"])
def test_bundled_out_of_sample_backtests(split, u):
    e = split.doc["underlyings"][u]
    for prefix in ("", "daily_"):
        for key in ("backtest_oos", "vol_backtest_oos", "backtest_frozen_oos", "vol_backtest_frozen_oos"):
            b = e[prefix + key]
            assert b["start"] == "2021-12-31" and b["days"] > 1400 and b["lag_days"] == 1
            if "frozen" not in key:  # both rules, re-set as applied, hold one-sided coverage out of sample
                assert b["kupiec_p"] >= 0.05 and b["traffic_light"] == "green"
    assert e["backtest_frozen_oos"]["frozen_range"] == e["price_scan_range"]
    assert e["daily_backtest_frozen_oos"]["frozen_range"] == e["daily_price_scan_range"]
    assert e["vol_backtest_frozen_oos"]["frozen_range"] == e["vol_scan_range"]
    # the TTC range re-set on schedule after the split, from data up to each re-set
    resets = [x["date"] for x in e["ttc"]["price_resets"] if x["date"] > SPLIT]
    assert resets[:3] == ["2022-01-01", "2022-04-01", "2022-07-01"]
    for key, r, kind in (("backtest_oos", split.ttc_prices[u], "price"), ("vol_backtest_oos", split.ttc_vols[u], "vol"),
                         ("daily_vol_backtest_oos", split.vols[u], "vol")):
        assert _recount(r, e[key], kind, u) == e[key]["exceedances"], key


#: issue 19's acceptance: with the shipped defaults, at lag 1, in and out of sample, both underlyings, price and
#: vol ranges of the through-the-cycle rule (what ships): exact one-sided Kupiec p and Christoffersen p >= 0.05, or
#: Christoffersen n/a (fewer than 2 exceedances); plus the daily rule's rows that pass
PASSING = [(u, k) for u in ("BTC", "ETH") for k in ("backtest", "backtest_oos", "vol_backtest", "vol_backtest_oos")] + [
    ("BTC", "daily_backtest"), ("ETH", "daily_backtest"), ("BTC", "daily_backtest_oos")]


@pytest.mark.parametrize("u,key", PASSING)
def test_bundled_acceptance_checks_that_pass(split, u, key):
    assert S.passes(split.doc["underlyings"][u][key])


def test_bundled_ttc_rule_passes_over_the_whole_history(bundled):
    for e in bundled.doc["underlyings"].values():
        assert S.passes(e["backtest"]) and S.passes(e["vol_backtest"])


@pytest.mark.xfail(strict=True, reason="the daily rule (reported beside the TTC rule, not shipped) fails independence "
                                       "out of sample at lag 1 (ETH price, both vol ranges): two-day bursts exceed "
                                       "twice before a lag-1 range can react")
@pytest.mark.parametrize("u,key", [("ETH", "daily_backtest_oos"), ("BTC", "daily_vol_backtest_oos"),
                                   ("ETH", "daily_vol_backtest_oos")])
def test_bundled_daily_rule_independence(split, u, key):
    assert S.passes(split.doc["underlyings"][u][key])


def test_bundled_document_has_the_spec_keys(bundled):
    doc = bundled.doc
    assert doc["coverage"] == 0.99 and doc["horizon_days"] == 1 and doc["lag_days"] == 1 and doc["split"] is None
    assert doc["method"]["ttc_reset"] == "quarterly"
    for u, e in doc["underlyings"].items():
        assert {"price_scan_range", "vol_scan_range", "long_run_floor", "backtest", "vol_backtest", "lag_days",
                "procyclicality", "ttc", "daily_backtest", "daily_vol_backtest"} <= set(e)
        for b in (e["backtest"], e["vol_backtest"], e["daily_backtest"], e["daily_vol_backtest"]):
            assert set(b) >= {"days", "exceedances", "expected", "kupiec_p", "christoffersen_p", "lag_days",
                              "conditional_coverage_p", "traffic_light", "up_exceedances", "down_exceedances",
                              "mean_excess", "mean_range"}
        # what --out writes: the TTC range of the 2026-01-01 re-set, in force at the last close
        for what, key in (("price", "price_scan_range"), ("vol", "vol_scan_range")):
            t = e["ttc"][what]
            assert e[key] == t["range"]
            assert t["reset"] == "2026-01-01" and t["next_reset_after"] == "2026-04-01"
            assert t["calculated"] == max(t["lookback_quantile"], t["daily_mean"])
            assert t["range"] == pytest.approx(1.25 * t["calculated"], rel=1e-12)  # the buffer, not released
        assert e["daily_price_scan_range"] == max(e["scaled_range"], e["long_run_floor"])
        assert e["daily_vol_scan_range"] == max(e["vol_scaled_range"], e["vol_long_run_floor"])
        assert 0.02 < e["price_scan_range"] < 0.3 and 0.02 < e["vol_scan_range"] < 0.5
        assert e["vol_as_of"] == e["as_of"] == "2026-01-06"  # no DVOL after the last close
        pc = e["procyclicality"]
        for what in ("price", "vol"):  # the TTC range is far less procyclical than the daily rule
            assert 1 < pc[what]["peak_to_trough"] < 2 < pc[f"daily_{what}"]["peak_to_trough"]
            assert 1 <= pc[what]["max_increase_30d"] < 1.3 < pc[f"daily_{what}"]["max_increase_30d"]
    (s,) = doc["inter_spreads"]
    assert set(s["legs"]) == {"BTC", "ETH"} and 0 <= s["credit_rate"] <= 0.75
    assert 0.5 < s["correlation"] < 0.95


def test_shipped_span_config_is_the_calibration(bundled):
    """configs/span.yaml (and the packaged copy) ships what ``pmjax calibrate --history bundled --out`` writes: the
    through-the-cycle price and vol ranges in force at the last close, and the inter-commodity spread."""
    for path in (CONFIG_DIR / "span.yaml", REPO / "configs" / "span.yaml"):
        with open(path, encoding="utf-8") as fh:
            span = yaml.safe_load(fh)["span"]
        for u, e in bundled.doc["underlyings"].items():
            for key in ("price_scan_range", "vol_scan_range"):
                assert span["underlyings"][u][key] == pytest.approx(e[key], abs=5e-7), (u, key)
        (s,) = bundled.doc["inter_spreads"]
        assert span["inter_spreads"] == [{"legs": s["legs"], "credit_rate": s["credit_rate"]}]


# ---------------------------------------------------------------- the command


def _cli(monkeypatch, capsys, argv):
    from pmjax import cli

    monkeypatch.setitem(cli_main.COMMANDS, "calibrate", "scan ranges from price history, with backtest statistics")
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_calibrate_command_json_and_config(monkeypatch, capsys, tmp_path):
    out = tmp_path / "cal.yaml"
    rc, stdout, _ = _cli(monkeypatch, capsys, ["calibrate", "--history", history._bundled("BTCUSDT_1d.csv"),
                                               "--coverage", "0.975", "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(stdout)
    assert doc["coverage"] == 0.975 and list(doc["underlyings"]) == ["BTC"] and doc["inter_spreads"] == []
    cfg = load_config(str(out))
    assert cfg["calibration"]["underlyings"]["BTC"]["price_scan_range"] == doc["underlyings"]["BTC"]["price_scan_range"]
    params = span_params(cfg)
    assert float(params.price_scan_range[0]) == pytest.approx(doc["underlyings"]["BTC"]["price_scan_range"])
    assert float(params.vol_scan_range[0]) == pytest.approx(doc["underlyings"]["BTC"]["vol_scan_range"])


def test_calibrate_command_split_lag_and_apc(monkeypatch, capsys):
    rc, stdout, _ = _cli(monkeypatch, capsys, ["calibrate", "--history", history._bundled("ETHUSDT_1d.csv"),
                                               "--split", "2022-06-30", "--lag", "0", "--vol-apc", "floor,buffer",
                                               "--ttc-reset", "monthly", "--json"])
    assert rc == 0
    doc = json.loads(stdout)
    e = doc["underlyings"]["ETH"]
    assert doc["split"] == "2022-06-30" and e["as_of"] == "2022-06-30" and e["lag_days"] == 0
    assert doc["method"]["vol_apc"] == ["floor", "buffer"] and doc["method"]["ttc_reset"] == "monthly"
    assert e["ttc"]["price"]["reset"] == "2022-06-01" and e["ttc"]["price"]["next_reset_after"] == "2022-07-01"
    for k in ("backtest", "vol_backtest", "backtest_oos", "vol_backtest_oos", "daily_backtest_oos"):
        b = e[k]
        assert b["lag_days"] == 0 and b["traffic_light"] in ("green", "yellow", "red")
        assert b["christoffersen_p"] is None or 0 < b["christoffersen_p"] <= 1
        assert (b["christoffersen_p"] is None) == (b["exceedances"] < 2)
    assert e["backtest_oos"]["start"] == "2022-06-30" and e["vol_backtest"]["end"] <= "2022-06-29"
    # the daily vol range carries the 25% buffer over its calculated value at the as-of close, or less (released)
    assert e["vol_long_run_floor"] <= e["daily_vol_scan_range"] <= 1.25 * max(e["vol_scaled_range"],
                                                                            e["vol_long_run_floor"])


def test_calibrate_command_text_and_errors(monkeypatch, capsys):
    rc, stdout, _ = _cli(monkeypatch, capsys, ["calibrate", "--history", "bundled", "--split", "2024-12-31"])
    assert rc == 0 and "out of sample" in stdout and "ETH" in stdout and "kupiec" in stdout and "peak/trough" in stdout
    for argv, word in ((["--coverage", "1.5"], "coverage"), (["--start", "2030-01-01"], "no history"),
                       (["--split", "2018-01-01"], "no price scan range"), (["--vol-apc", "floor,cap"], "unknown"),
                       (["--lag", "-1"], "--lag"), (["--ttc-reset", "weekly"], "--ttc-reset")):
        rc, stdout, err = _cli(monkeypatch, capsys, ["calibrate", "--history", "bundled"] + argv)
        assert rc == 2 and stdout == "" and err.startswith("pmjax: error:") and word in err, (argv, err)


# ---------------------------------------------------------------- stress days


def _raw_closes(u):
    with open(history._bundled(history.CLOSE_FILES[u]), newline="", encoding="utf-8") as fh:
        return {r["timestamp"][:10]: float(r["close"]) for r in csv.DictReader(fh)}


def _raw_dvol(u):
    with open(history._bundled(history.DVOL_FILES[u]), newline="", encoding="utf-8") as fh:
        return {r["date"][:10]: float(r["close"]) / 100 for r in csv.DictReader(fh)}


def test_shipped_stress_days_are_the_realized_moves():
    path = CONFIG_DIR / "scenarios" / "stress_days.yaml"
    assert path.read_text(encoding="utf-8") == stress_days_yaml()  # the file is up to date
    scen = {s.name.split()[0]: s for s in load_scenarios(str(path))}
    assert sorted(scen) == sorted(STRESS_DAYS)
    for day, s in scen.items():
        prev = str(np.datetime64(day) - 1)
        assert s.days == 1.0
        for j, u in enumerate(("BTC", "ETH")):
            c = _raw_closes(u)
            assert s.price_move[j] == pytest.approx(c[day] / c[prev] - 1, abs=1e-6)
            d = _raw_dvol(u)
            if day in d:
                assert s.vol_shift[j] == pytest.approx(d[day] - d[prev], abs=1e-6)
            else:  # 2020-03-12 predates DVOL: the spot-vol proxy, a rise in vol after a crash
                assert day == "2020-03-12" and 0.1 < s.vol_shift[j] < 0.6
    sources = {s["date"]: s["vol_source"] for s in stress_day_scenarios()}
    assert sources["2020-03-12"] == {"BTC": "proxy", "ETH": "proxy"}
    assert sources["2022-11-09"] == {"BTC": "dvol", "ETH": "dvol"}


def test_stress_days_run_through_the_stress_command(monkeypatch, capsys, tmp_path):
    from pmjax import cli

    (tmp_path / "a.yaml").write_text("account: a\npositions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    rc = cli.main(["stress", str(tmp_path), "--scenarios", str(CONFIG_DIR / "scenarios" / "stress_days.yaml"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    pnl = doc["accounts"][0]["scenarios"]
    assert doc["accounts"][0]["span"]["by_underlying"]["BTC"]["composite_delta"] == pytest.approx(1.0, rel=1e-6)
    # a long inverse perpetual in USD gains q F (1/F - 1/F') S' = q S m when spot moves by m
    from pmjax import load_market

    spot = load_market().spot("BTC")
    s = {x.name: x for x in load_scenarios(str(CONFIG_DIR / "scenarios" / "stress_days.yaml"))}
    assert sorted(pnl) == sorted(s)
    for name, v in pnl.items():
        assert v == pytest.approx(spot * s[name].price_move[0], rel=1e-9)


def test_stress_days_run_through_the_margin_command(capsys, tmp_path):
    from pmjax import cli, load_market

    path = tmp_path / "a.yaml"
    path.write_text("account: a\npositions:\n  - {instrument: BTC-PERPETUAL, quantity: 2}\n")
    days = str(CONFIG_DIR / "scenarios" / "stress_days.yaml")
    rc = cli.main(["margin", str(path), "--method", "span", "--scenarios", days, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    spot = load_market().spot("BTC")
    s = {x.name: x for x in load_scenarios(days)}
    assert sorted(doc["scenarios"]) == sorted(s)
    for name, v in doc["scenarios"].items():
        assert v == pytest.approx(2 * spot * s[name].price_move[0], rel=1e-9)
    assert cli.main(["margin", str(path), "--scenarios", str(tmp_path / "missing.yaml")]) == 2


def test_missing_history_or_dvol_file_is_named(capsys, tmp_path):
    from pmjax import cli

    assert cli.main(["calibrate", "--history", str(tmp_path / "BTCUSDT_1d.csv")]) == 2
    assert "BTCUSDT_1d.csv: cannot read file" in capsys.readouterr().err
    assert cli.main(["calibrate", "--history", "bundled", "--dvol", f"{tmp_path / 'btc_dvol.csv'},x.csv"]) == 2
    assert "btc_dvol.csv: cannot read file" in capsys.readouterr().err
