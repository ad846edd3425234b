"""Scan-range calibration: the test statistics against scipy, the rule's no-look-ahead and coverage on
synthetic data, the bundled calibration's backtests, the command, the shipped config and stress days."""

import csv
import json
import math

import numpy as np
import pytest
import scipy.stats
import yaml

from pmjax.cli import app as cli_main
from pmjax.apps import calibrate as C
from pmjax.io import history
from pmjax.scenarios.named import load_scenarios
from pmjax.io.config import CONFIG_DIR, load_config
from pmjax.core.errors import InputError
from pmjax.measures.span import span_params
from pmjax.scenarios.stress_days import STRESS_DAYS, stress_day_scenarios, stress_days_yaml


# ---------------------------------------------------------------- test statistics


@pytest.mark.parametrize("x", [0.0, 1e-6, 0.5, 1.0, 3.841458820694124, 6.63, 20.0, 60.0])
def test_chi2_1_survival_matches_scipy(x):
    assert C.chi2_1_sf(x) == pytest.approx(scipy.stats.chi2.sf(x, 1), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("n,x,p", [(1000, 10, 0.01), (1000, 20, 0.01), (250, 0, 0.01), (2669, 24, 0.01),
                                   (500, 40, 0.05), (100, 100, 0.01)])
def test_kupiec_is_the_binomial_likelihood_ratio(n, x, p):
    hits = np.zeros(n, bool)
    hits[np.random.default_rng(0).choice(n, x, replace=False)] = True
    # the binomial coefficient cancels in the ratio: scipy's binomial log-pmf at p and at x / n
    lr = -2.0 * (scipy.stats.binom.logpmf(x, n, p) - scipy.stats.binom.logpmf(x, n, x / n))
    assert C.kupiec_lr(hits, p) == pytest.approx(lr, rel=1e-10, abs=1e-10)
    assert C.backtest_stats(hits, 1 - p)["kupiec_p"] == pytest.approx(scipy.stats.chi2.sf(lr, 1), rel=1e-9, abs=1e-300)


def _markov_loglik(h, pi01, pi11, pi=None):
    """Log-likelihood of a 0/1 sequence walked step by step (independent of the counting formula)."""
    total = 0.0
    for a, b in zip(h[:-1], h[1:]):
        q = pi if pi is not None else (pi11 if a else pi01)
        total += scipy.stats.bernoulli.logpmf(int(b), q) if 0 < q < 1 else 0.0
    return total


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
    p = C.backtest_stats(h, 0.99)["christoffersen_p"]
    assert (p < 1e-3) if clustered else (p > 0.05)


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


SMALL = C.CalibrationSettings(min_history_days=120, burn_in_days=20, floor_window_days=300)


def test_rule_matches_a_direct_computation_at_every_close():
    p = _random_walk(400, 0, regimes=True)
    s = SMALL
    pr = C.price_scan_ranges(_series(p), s)
    r = np.diff(np.log(p))
    # EWMA forecasts written out: the first from the mean square of the first burn_in returns
    s2 = [np.mean(r[: s.burn_in_days] ** 2)]
    for x in r:
        s2.append(s.ewma_lambda * s2[-1] + (1 - s.ewma_lambda) * x * x)
    sigma = np.sqrt(s2)
    move = p[1:] / p[:-1] - 1
    z = np.abs(move) / sigma[:-1]
    first = s.burn_in_days + s.min_history_days
    for t in range(first, len(p)):
        q = np.quantile(z[s.burn_in_days:t], s.coverage)
        floor = np.quantile(np.abs(move[max(0, t - s.floor_window_days):t]), s.floor_coverage)
        assert pr.range[t] == pytest.approx(max(q * sigma[t], floor), rel=1e-12)
        assert pr.floor[t] == pytest.approx(floor, rel=1e-12)
    assert np.all(np.isnan(pr.range[:first]))
    # the backtest: every day from the first with a known next move; an exceedance is |R_t| > range_t
    tested = np.nonzero(pr.tested)[0]
    assert tested[0] == first and tested[-1] == len(p) - 2 and len(tested) == len(p) - 1 - first
    assert np.array_equal(pr.hits[tested], np.abs(move[tested]) > pr.range[tested])


def test_no_look_ahead_changing_the_future_leaves_past_ranges():
    p = _random_walk(500, 1)
    t = 350
    q = p.copy()
    q[t + 1:] *= np.exp(np.random.default_rng(9).normal(0, 0.2, len(q) - t - 1))  # rewrite the future
    a = C.price_scan_ranges(_series(p), SMALL)
    b = C.price_scan_ranges(_series(q), SMALL)
    np.testing.assert_array_equal(a.range[: t + 1], b.range[: t + 1])
    assert not np.allclose(a.range[t + 2:], b.range[t + 2:])


@pytest.mark.parametrize("h", [2, 5])
def test_multi_day_horizon_uses_non_overlapping_windows(h):
    p = _random_walk(500, 2)
    s = C.CalibrationSettings(horizon_days=h, min_history_days=120, burn_in_days=20, floor_window_days=300)
    pr = C.price_scan_ranges(_series(p), s)
    tested = np.nonzero(pr.tested)[0]
    assert np.all(np.diff(tested) == h) and tested[-1] == len(p) - 1 - h
    t = tested[0]
    np.testing.assert_allclose(pr.move[t], p[t + h] / p[t] - 1, rtol=1e-14)
    # the range at t rests only on windows closed by t (i + h <= t)
    sigma = pr.sigma
    z = np.abs(p[h:] / p[:-h] - 1) / (sigma[:-h] * math.sqrt(h))
    q = np.quantile(z[s.burn_in_days: t - h + 1], s.coverage)
    floor = np.quantile(np.abs(p[h:] / p[:-h] - 1)[: t - h + 1], s.floor_coverage)
    assert pr.range[t] == pytest.approx(max(q * sigma[t] * math.sqrt(h), floor), rel=1e-12)


def test_coverage_on_gaussian_returns_is_near_the_target():
    # constant-vol lognormal closes: the calibrated range covers ~99% of next-day moves
    p = _random_walk(3000, 5, vol=0.02)
    pr = C.price_scan_ranges(_series(p), C.CalibrationSettings())
    st = C.backtest_stats(pr.hits[pr.tested], 0.99)
    lo, hi = C.kupiec_region(st["days"], 0.99)
    assert lo <= st["exceedances"] <= hi
    # and the range is on average near the two-sided 99% normal quantile of the daily vol: a little above
    # it, as dividing by a noisy EWMA vol (~33 effective observations) fattens the standardized tails
    mean = np.mean(pr.range[pr.tested])
    assert scipy.stats.norm.ppf(0.995) * 0.02 < mean < 1.1 * scipy.stats.norm.ppf(0.995) * 0.02


def test_garch_filter_runs_and_reports_its_parameters():
    p = _random_walk(700, 3, regimes=True)
    s = C.CalibrationSettings(volatility_model="garch", min_history_days=200)
    pr = C.price_scan_ranges(_series(p), s)
    assert pr.garch is not None and 0 < pr.garch.persistence < 1
    np.testing.assert_allclose(pr.sigma ** 2, pr.garch.variance(np.diff(np.log(p))), rtol=1e-12)


def test_vol_scan_range_is_the_quantile_of_absolute_dvol_changes():
    rng = np.random.default_rng(4)
    d = 0.5 + np.cumsum(rng.normal(0, 0.02, 600))
    vr = C.vol_scan_ranges(_series(d, name="BTC_dvol"), C.CalibrationSettings(vol_min_history_days=100))
    assert vr.vol_scan_range == pytest.approx(np.quantile(np.abs(np.diff(d)), 0.99), rel=1e-12)
    t = 300
    assert vr.range[t] == pytest.approx(np.quantile(np.abs(np.diff(d))[:t], 0.99), rel=1e-12)
    assert vr.hits[t] == (abs(d[t + 1] - d[t]) > vr.range[t])


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


@pytest.fixture(scope="module")
def bundled():
    return C.calibrate(C.load_history([C.BUNDLED]))


@pytest.mark.parametrize("u", ["BTC", "ETH"])
def test_bundled_one_day_99pct_ranges_pass_kupiec_over_2017_2026(bundled, u):
    e = bundled.doc["underlyings"][u]
    b = e["backtest"]
    assert b["start"] < "2019-01-01" and b["end"] >= "2026-01-05" and b["days"] > 2600
    lo, hi = C.kupiec_region(b["days"], 0.99)
    assert lo <= b["exceedances"] <= hi and b["kupiec_p"] >= 0.05
    assert b["expected"] == pytest.approx(0.01 * b["days"])
    assert e["price_scan_range"] == max(e["scaled_range"], e["long_run_floor"])
    assert 0.02 < e["price_scan_range"] < 0.3 and 0.02 < e["vol_scan_range"] < 0.5
    # recount the exceedances from the raw closes and the published ranges
    pr = bundled.prices[u]
    closes = history.bundled_close(u).values
    t = np.nonzero(pr.tested)[0]
    assert int(np.sum(np.abs(closes[t + 1] / closes[t] - 1) > pr.range[t])) == b["exceedances"]


def test_bundled_document_has_the_spec_keys(bundled):
    doc = bundled.doc
    assert doc["coverage"] == 0.99 and doc["horizon_days"] == 1
    for e in doc["underlyings"].values():
        assert {"price_scan_range", "vol_scan_range", "long_run_floor", "backtest"} <= set(e)
        assert set(e["backtest"]) >= {"days", "exceedances", "expected", "kupiec_p", "christoffersen_p"}
    (s,) = doc["inter_spreads"]
    assert set(s["legs"]) == {"BTC", "ETH"} and 0 <= s["credit_rate"] <= 0.75
    assert 0.5 < s["correlation"] < 0.95


def test_shipped_span_config_is_the_bundled_calibration(bundled):
    """configs/span.yaml carries `pmjax calibrate --history bundled`'s numbers (regenerate it if this fails)."""
    with open(CONFIG_DIR / "span.yaml", encoding="utf-8") as fh:
        span = yaml.safe_load(fh)["span"]
    for u, e in bundled.doc["underlyings"].items():
        for k in C.CALIBRATED_KEYS:
            assert span["underlyings"][u][k] == pytest.approx(e[k], abs=5e-7), (u, k)
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


def test_calibrate_command_text_and_errors(monkeypatch, capsys):
    rc, stdout, _ = _cli(monkeypatch, capsys, ["calibrate", "--history", "bundled", "--end", "2024-12-31"])
    assert rc == 0 and "BTC" in stdout and "ETH" in stdout and "kupiec" in stdout
    rc, stdout, err = _cli(monkeypatch, capsys, ["calibrate", "--history", "bundled", "--coverage", "1.5"])
    assert rc == 2 and stdout == "" and err.startswith("pmjax: error:") and "coverage" in err
    rc, _, err = _cli(monkeypatch, capsys, ["calibrate", "--history", "bundled", "--start", "2030-01-01"])
    assert rc == 2 and "no history" in err


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
