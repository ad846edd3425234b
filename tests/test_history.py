"""History loaders, aligned returns and the EWMA / GARCH(1,1) filters, against hand derivations,
the raw files parsed independently, and scipy's optimiser on the same likelihood."""

import csv
import math
import pathlib

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data

from pmjax.io import history
from pmjax.core.errors import InputError

DATA = pathlib.Path(history.__file__).parents[1] / "data" / "history"


def raw_rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


# ---------------------------------------------------------------- loaders


@needs_shared_data
@pytest.mark.parametrize("shipped, shared", [
    ("BTCUSDT_1d.csv", "history/BTCUSDT_1d.csv"), ("ETHUSDT_1d.csv", "history/ETHUSDT_1d.csv"),
    ("btc_dvol.csv", "vol/btc_dvol.csv"), ("eth_dvol.csv", "vol/eth_dvol.csv")])
def test_bundled_files_are_byte_copies(shipped, shared):
    assert (DATA / shipped).read_bytes() == (SHARED_DATA / shared).read_bytes()


@pytest.mark.parametrize("u, filename", [("BTC", "BTCUSDT_1d.csv"), ("ETH", "ETHUSDT_1d.csv")])
def test_bundled_close_matches_the_raw_file(u, filename):
    rows = raw_rows(DATA / filename)
    assert rows[0] == ["timestamp", "open", "high", "low", "close", "volume"]
    s = history.bundled_close(u)
    assert s.name == u and len(s) == len(rows) - 1 == 3065
    assert str(s.dates[0]) == "2017-08-17" and str(s.dates[-1]) == "2026-01-06"
    assert np.all(np.diff(s.dates.astype(np.int64)) == 1)  # consecutive days
    np.testing.assert_array_equal(s.values, [float(r[4]) for r in rows[1:]])


@pytest.mark.parametrize("u, filename", [("BTC", "btc_dvol.csv"), ("ETH", "eth_dvol.csv")])
def test_bundled_dvol_is_decimal_and_oldest_first(u, filename):
    rows = raw_rows(DATA / filename)[1:]
    s = history.bundled_dvol(u)
    assert s.name == f"{u}_dvol" and len(s) == len(rows) == 1840
    assert rows[0][0] == "2026-04-06" and str(s.dates[-1]) == "2026-04-06"  # the file is newest first
    by_date = {r[0]: float(r[5]) / 100.0 for r in rows}
    assert all(by_date[str(d)] == v for d, v in zip(s.dates, s.values))
    assert 0.2 < np.median(s.values) < 1.5


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_loader_errors_name_file_and_field(tmp_path):
    with pytest.raises(InputError, match="missing column.*close") as e:
        history.read_klines(write(tmp_path, "a.csv", "timestamp,open\n2020-01-01,1\n"))
    assert e.value.field == "header"
    with pytest.raises(InputError, match="line 3: close 'x' is not a number") as e:
        history.read_klines(write(tmp_path, "b.csv", "timestamp,close\n2020-01-01,1\n2020-01-02,x\n"))
    assert e.value.field == "close" and e.value.source.endswith("b.csv")
    with pytest.raises(InputError, match="positive"):
        history.read_klines(write(tmp_path, "c.csv", "timestamp,close\n2020-01-01,-1\n"))
    with pytest.raises(InputError, match="bad date"):
        history.read_dvol(write(tmp_path, "d.csv", "date,close\n01/02/2020,50\n"))
    with pytest.raises(InputError, match="more than once"):
        history.read_dvol(write(tmp_path, "e.csv", "date,close\n2020-01-02,50\n2020-01-02,51\n"))
    with pytest.raises(InputError, match="no data rows"):
        history.read_dvol(write(tmp_path, "f.csv", "date,close\n"))
    with pytest.raises(InputError, match="cannot read file"):
        history.read_klines(str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------- returns


def series(name, days, values):
    return history.Series(name, np.array(days, dtype="datetime64[D]"), np.array(values, dtype=np.float64))


def test_log_returns_skip_gaps_and_respect_the_horizon():
    s = series("x", ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-05", "2020-01-06"], [1, 2, 4, 8, 16])
    r1 = history.log_returns(history.align([s]), 1)
    assert [str(d) for d in r1.dates] == ["2020-01-02", "2020-01-03", "2020-01-06"]  # 01-04 is missing
    np.testing.assert_allclose(r1.values[:, 0], np.log([2, 2, 2]))
    r2 = history.log_returns(history.align([s]), 2)
    assert [str(d) for d in r2.dates] == ["2020-01-03", "2020-01-05"]
    np.testing.assert_allclose(r2.values[:, 0], np.log([4 / 1, 8 / 4]))
    with pytest.raises(InputError, match="whole number"):
        history.log_returns(history.align([s]), 1.5)


def test_joint_returns_align_and_stay_inside_the_window():
    a = series("a", ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"], [1.0, 2.0, 3.0, 4.0])
    b = series("b", ["2020-01-02", "2020-01-03", "2020-01-04", "2020-01-05"], [10.0, 30.0, 60.0, 70.0])
    j = history.joint_log_returns({"A": a, "B": b})
    assert j.names == ("A", "B") and [str(d) for d in j.dates] == ["2020-01-03", "2020-01-04"]
    np.testing.assert_allclose(j.values, np.log([[3 / 2, 3], [4 / 3, 2]]))
    # the window bounds prices, not just return dates: 2020-01-03's return needs 01-02's price
    w = history.joint_log_returns([a, b], start="2020-01-03")
    assert [str(d) for d in w.dates] == ["2020-01-04"]
    assert len(history.joint_log_returns([a, b], end="2020-01-03")) == 1


def test_bundled_h_day_returns_match_the_closes():
    close = history.bundled_close("BTC")
    j = history.bundled_joint_returns(("BTC",), h=5, start="2024-01-01", end="2024-12-31", overlapping=False)
    assert str(j.dates[-1]) == "2024-12-31" and np.all(np.diff(j.dates.astype(np.int64)) == 5)
    for d, r in zip(j.dates, j.values[:, 0]):
        i = np.searchsorted(close.dates, d)
        assert r == pytest.approx(math.log(close.values[i] / close.values[i - 5]), rel=1e-14)
    joint = history.bundled_joint_returns(dvol=True)
    assert joint.names == ("BTC", "ETH", "BTC_dvol", "ETH_dvol")
    assert str(joint.dates[0]) == "2021-03-25" and str(joint.dates[-1]) == "2026-01-06"
    # spot and implied vol move against each other in crypto
    assert np.corrcoef(joint.column("BTC"), joint.column("BTC_dvol"))[0, 1] < -0.1


# ---------------------------------------------------------------- filters


def test_ewma_is_the_exponentially_weighted_sum():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.02, size=(40, 2))
    lam, s0 = 0.9, np.array([1e-4, 3e-4])
    out = history.ewma_variance(r, lam, initial=s0)
    assert out.shape == (41, 2)
    for t in (0, 1, 17, 40):
        expected = lam**t * s0 + (1 - lam) * sum(lam**j * r[t - 1 - j] ** 2 for j in range(t))
        np.testing.assert_allclose(out[t], expected, rtol=1e-12)
    default = history.ewma_variance(r[:, 0], 0.94, warmup=10)
    assert default[0] == pytest.approx(np.mean(r[:10, 0] ** 2), rel=1e-14)
    with pytest.raises(InputError, match="lambda"):
        history.ewma_variance(r, 1.0)


def simulate_garch(n, omega, alpha, beta, seed):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    r = np.empty(n)
    s2 = omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = math.sqrt(s2) * e[t]
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r


def test_garch_fit_recovers_simulated_parameters():
    omega, alpha, beta = 2e-5, 0.08, 0.9
    r = simulate_garch(6000, omega, alpha, beta, seed=7)
    g = history.fit_garch(r)
    # asymptotic MLE standard errors at n = 6000 are about 0.008 (alpha) and 0.01 (beta)
    assert abs(g.alpha - alpha) < 0.03 and abs(g.beta - beta) < 0.04
    assert g.long_run_variance == pytest.approx(omega / (1 - alpha - beta), rel=0.3)
    assert g.loglik == pytest.approx(history.garch_loglik(r, g.omega, g.alpha, g.beta, g.initial), rel=1e-12)
    # forecasts follow the recursion by hand
    s2 = g.variance(r[:3])
    assert s2[0] == g.initial
    assert s2[2] == pytest.approx(g.omega + g.alpha * r[1] ** 2 + g.beta * (g.omega + g.alpha * r[0] ** 2
                                                                         + g.beta * g.initial), rel=1e-14)


def test_garch_fit_reaches_scipys_optimum_on_btc():
    from scipy.optimize import minimize

    r = history.bundled_joint_returns(("BTC",)).column("BTC")
    g = history.fit_garch(r)
    assert 0.85 < g.persistence < 1.0 and g.alpha > 0.01

    r2 = (r * r).tolist()

    def negll(p):  # the Gaussian GARCH(1,1) likelihood, written out independently
        w, a, b = p[0] * 1e-5, p[1], p[2]
        if w <= 0 or a < 0 or b < 0 or a + b >= 1:
            return 1e10
        s2, total = g.initial, 0.0
        for x2 in r2:
            total += math.log(2 * math.pi) + math.log(s2) + x2 / s2
            s2 = w + a * x2 + b * s2
        return 0.5 * total

    best = min((minimize(negll, x0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 4000})
                for x0 in ([1.0, 0.05, 0.9], [10.0, 0.15, 0.7])), key=lambda res: res.fun)
    assert g.loglik >= -best.fun - 1e-6


def test_nelder_mead_minimises_rosenbrock():
    x, f = history.nelder_mead(lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2, [-1.2, 1.0],
                               xtol=1e-10, ftol=1e-14, max_iter=5000)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-6)
    assert f < 1e-12


@pytest.mark.parametrize("model", ["ewma", "garch"])
def test_standardized_residuals(model):
    r = simulate_garch(3000, 1e-5, 0.1, 0.85, seed=3)
    other = simulate_garch(3000, 3e-5, 0.05, 0.9, seed=4)
    joint = history.Joint(np.arange(3000).astype("datetime64[D]"), ("a", "b"), np.stack([r, other], axis=1))
    res = history.standardized_residuals(joint, model, ewma_lambda=0.94, burn_in=30)
    assert res.z.shape == (2970, 2) and res.dates[0] == joint.dates[30]
    np.testing.assert_allclose(res.z * res.vol, joint.values[30:], rtol=1e-13)
    # a volatility filter close to the truth leaves residuals of about unit variance and no clustering
    assert np.all(np.abs(res.z.std(axis=0) - 1.0) < 0.1)
    z2 = res.z[:, 0] ** 2
    assert abs(np.corrcoef(z2[1:], z2[:-1])[0, 1]) < 0.08
    if model == "ewma":
        s2 = history.ewma_variance(joint.values, 0.94, warmup=30)
        np.testing.assert_allclose(res.next_vol, np.sqrt(s2[-1]), rtol=1e-14)
    else:
        assert len(res.garch) == 2 and abs(res.garch[0].alpha - 0.1) < 0.05
        np.testing.assert_allclose(res.next_vol[1], np.sqrt(res.garch[1].variance(other)[-1]), rtol=1e-14)
    with pytest.raises(InputError, match="volatility_model"):
        history.standardized_residuals(joint, "arch")
