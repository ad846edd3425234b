"""pmjax bench: the numpy baselines compute what pmjax computes, the command emits the SPEC keys, memory-bound
chunks, and no recompilation across account batches of one bucket. No test asserts a wall time."""

from __future__ import annotations

import contextlib
import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmjax.cli import app as cli_main
from pmjax.bench import baselines, harness, rows
from pmjax.bench.format import format_bench
from pmjax.scenarios import montecarlo
from pmjax.batch import sharding
from pmjax.batch.accounts import build_batch
from pmjax.io.config import load_config
from pmjax.core.kernel import unit_greeks_jit
from pmjax.core.portfolio import make_portfolio
from pmjax.io.portfolio import parse_trades
from pmjax.measures.span import span_margin, span_params
from reference import numpy_engine as reference
from reference.numpy_engine import BOOK_FIELDS
from pmjax.bench.books import random_account_books, random_option_book

span_margin_batch = sharding.vmapped(span_margin)  # the many-account SPAN pmjax stress runs

SPEC_ROW_KEYS = {"name", "size", "unit", "pmjax", "baseline", "baseline_value", "speedup"}
NDTRS = [baselines.baseline_ndtr(False), baselines.baseline_ndtr(True)]


# ---------------------------------------------------------------- the numpy normal CDF


def test_cody_erfc_matches_math_erfc_to_near_machine_precision():
    x = np.concatenate([np.linspace(-9.0, 26.0, 20001), [0.0, 0.46875, -0.46875, 4.0, -4.0, 1e-12, -1e-300]])
    ref = np.array([math.erfc(v) for v in x])
    got = baselines.erfc_cody(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=2e-14, atol=0.0)
    assert baselines.erfc_cody(np.array([np.inf, -np.inf, 40.0])).tolist() == [0.0, 2.0, 0.0]


def test_cody_ndtr_float32_stays_float32_and_accurate():
    x = np.linspace(-8.0, 8.0, 4001).astype(np.float32)
    ref = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2.0)) for v in x])  # at the float32 arguments
    got = baselines.ndtr_cody(x)
    assert got.dtype == np.float32
    # float32 arithmetic inside: the relative error grows like x^2 eps32 in the lower tail
    rel = np.abs(got / ref - 1.0)
    bound = (1.0 + x.astype(np.float64) ** 2) * 4 * np.finfo(np.float32).eps
    assert np.all(rel <= bound), (x[rel > bound], rel[rel > bound])


def test_baseline_ndtr_names_what_it_uses():
    fn, name = baselines.baseline_ndtr(False)
    assert fn is baselines.ndtr_cody and "no scipy" in name
    fn, name = baselines.baseline_ndtr(True)  # scipy is a test dependency
    assert name == "scipy.special.ndtr"


# ---------------------------------------------------------------- the baselines compute what pmjax computes


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 3e-4)])
@pytest.mark.parametrize("ndtr, ndtr_name", NDTRS)
def test_numpy_greeks_equal_pmjax_unit_greeks(dtype, rtol, ndtr, ndtr_name):
    n = 300
    book = random_option_book(n, dtype, seed=11, size=512)
    # a few options inside the last day, so theta reprices at intrinsic (T - 1 day clipped at 0)
    book = jax.tree_util.tree_map(np.asarray, book)
    book.expiry_years[:5] = np.asarray([0.2, 0.5, 0.9, 1.0, 1.5], dtype) / 365.0
    pm = {k: np.asarray(v)[:n] for k, v in unit_greeks_jit(jax.device_put(book)).items()}
    host = {k: (v[:n] if np.ndim(v) else v) for k, v in baselines.host_book(book).items()}
    got = baselines.numpy_unit_greeks(host, ndtr)
    assert set(got) == set(pm) == {"value", "delta", "gamma", "vega", "theta", "vanna", "volga"}
    for k in pm:
        assert got[k].dtype == dtype, k
        scale = np.max(np.abs(pm[k]))  # per-Greek scale: entries near zero compare in absolute terms
        np.testing.assert_allclose(got[k], pm[k], rtol=rtol, atol=rtol * scale, err_msg=f"{k} ({ndtr_name})")
    # and the comparison can fail: a one-day theta is not a zero theta
    assert np.max(np.abs(got["theta"])) > 1e-3


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
def test_numpy_span_equals_span_margin_batch_field_by_field(dtype, rtol):
    ndtr, _ = baselines.baseline_ndtr(False)
    params = span_params(load_config(), dtype=dtype)
    books = random_account_books(40, 20, dtype, seed=5)
    assert set(books.margin_coin.tolist()) == {-1, 0, 1}  # USD, BTC and ETH margin accounts
    pm = span_margin_batch(books, params)
    got = baselines.numpy_span(books, params, ndtr)
    for field, value in got.items():
        ref = np.asarray(getattr(pm, field))
        if np.issubdtype(ref.dtype, np.integer):
            np.testing.assert_array_equal(value, ref, err_msg=field)
        else:
            scale = max(float(np.max(np.abs(ref))), 1e-30)
            np.testing.assert_allclose(value, ref, rtol=rtol, atol=rtol * scale, err_msg=field)
    # the comparison covers every part of the method, not zeros
    for field in ("total", "inter_credit", "intra_spread", "spot_charge", "short_option_minimum", "nov"):
        assert np.count_nonzero(got[field]) > 0, field
    totals = baselines.numpy_span_chunked(books, params, ndtr, chunk=7)  # chunking changes nothing
    np.testing.assert_array_equal(totals, got["total"])


def test_numpy_losses_equal_simulate_losses_given_the_same_factors(market):
    # the losses given the factors do not depend on the model (the draws are tested below); USD and a coin
    # margin currency share one compilation (same shapes)
    settings = montecarlo.var_settings({"var": {"model": "normal", "historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings)
    paths = 300
    zr, zv = montecarlo.scenario_factors(spec, params, 3, np.arange(paths))
    for margin_coin in (-1, 1):
        book = jax.tree_util.tree_map(np.asarray, random_option_book(50, jnp.float64, seed=9, size=64))
        book = type(book)(**{**{f: getattr(book, f) for f in BOOK_FIELDS},
                             "margin_coin": np.int32(margin_coin)})
        pm = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=3, chunk=128, progress=False)
        got = baselines.numpy_losses(baselines.host_book(book), params, zr, zv, baselines.ndtr_cody)
        np.testing.assert_allclose(got, pm, rtol=1e-10, atol=1e-10 * np.max(np.abs(pm)), err_msg=str(margin_coin))


def test_numpy_draws_follow_the_model(market):
    normal = montecarlo.var_settings({"var": {"model": "normal", "historical": False}})
    spec, params, _ = montecarlo.build_model(market, normal)
    zr, zv = baselines.numpy_factors(spec, params, 100_000, np.random.default_rng(0))
    z = np.concatenate([zr, zv], axis=1)
    corr = np.asarray(params.chol) @ np.asarray(params.chol).T
    np.testing.assert_allclose(np.corrcoef(z.T), corr, atol=0.02)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=0.02)
    # student_t: the same fat tails as pmjax's own draws (fraction beyond 2.5 sd, two-sample binomial check)
    spec_t, params_t, _ = montecarlo.build_model(market, montecarlo.var_settings({"var": {"historical": False}}))
    n = 40_000
    zr_np, _ = baselines.numpy_factors(spec_t, params_t, n, np.random.default_rng(1))
    zr_pm, _ = montecarlo.scenario_factors(spec_t, params_t, 0, np.arange(n))
    tail_np, tail_pm = np.mean(np.abs(zr_np) > 2.5), np.mean(np.abs(zr_pm) > 2.5)
    sd = math.sqrt(2 * tail_pm * (1 - tail_pm) / (2 * n))
    assert abs(tail_np - tail_pm) < 4 * sd, (tail_np, tail_pm)
    normal_tail = math.erfc(2.5 / math.sqrt(2.0))  # 1.2%: the t tail is clearly fatter
    assert tail_pm > normal_tail + 8 * sd


# ---------------------------------------------------------------- the closed-form Greeks (pmjax.core.fast_greeks)


def greeks_cases(n: int, dtype, *, seed: int, tiny_t: float = 1e-14, tiny_vol: float = 1e-9):
    """``n`` random options (calls and puts, inverse and linear) with the edge cases in tenths: expired
    today (T = 0), inside the last two days (theta reprices at intrinsic), tiny T down to ``tiny_t`` years,
    zero vol, tiny vol down to ``tiny_vol``, and exactly at the money within each of those."""
    rng = np.random.default_rng(seed)
    b = jax.tree_util.tree_map(np.asarray, random_option_book(n, jnp.float64, seed=seed))
    T, vol, K, F = b.expiry_years.copy(), b.vol.copy(), b.strike.copy(), b.forward
    q = n // 10
    T[:q] = 0.0
    T[q:2 * q] = rng.uniform(0.0, 2.0 / 365.0, q)
    T[2 * q:3 * q] = 10.0 ** rng.uniform(np.log10(tiny_t), -5.0, q)
    vol[3 * q:4 * q] = 0.0
    vol[4 * q:5 * q] = 10.0 ** rng.uniform(np.log10(tiny_vol), -2.0, q)
    atm = np.concatenate([np.arange(k * q, k * q + q // 4) for k in range(6)])
    K[atm] = F[atm]
    fields = {f: getattr(b, f) for f in BOOK_FIELDS}
    fields.update(expiry_years=T, vol=vol, strike=K)
    book = type(b)(**fields)
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if x.dtype == np.float64 else x, book)


def exact_density_greeks(book, rows) -> dict:
    """gamma, vega, vanna, volga of options ``rows`` of ``book`` from the closed forms in 50-digit decimal
    arithmetic (they need the normal density only: exp, ln, sqrt), at the float inputs exactly."""
    import decimal

    ctx = decimal.Context(prec=50)
    D = lambda x: ctx.create_decimal(float(x))  # noqa: E731  (exact: a float is a binary fraction)
    inv_sqrt_2pi = 1 / ctx.sqrt(2 * ctx.create_decimal("3.14159265358979323846264338327950288419716939937510"))
    out = {k: np.zeros(len(rows)) for k in ("gamma", "vega", "vanna", "volga")}
    for j, i in enumerate(rows):
        F, K, T, vol, S = (D(np.asarray(getattr(book, f))[i]) for f in ("forward", "strike", "expiry_years", "vol",
                                                                         "spot"))
        r = S / F if bool(np.asarray(book.inverse)[i]) else D(1)
        sd = ctx.sqrt(vol * vol * T)
        d1 = ctx.ln(F / K) / sd + sd / 2
        d2 = d1 - sd
        pdf = inv_sqrt_2pi * ctx.exp(-d1 * d1 / 2)
        vega = F * r * pdf * sd / vol
        out["gamma"][j] = float(pdf * F * r / (sd * S * S))
        out["vega"][j] = float(vega)
        out["vanna"][j] = float(-F * r * pdf * d2 / (vol * S))
        out["volga"][j] = float(vega * d1 * d2 / vol)
    return out


def test_closed_form_greeks_equal_the_autodiff_kernel_in_float64():
    from pmjax.core.fast_greeks import KEYS, unit_greeks_fast

    book = greeks_cases(6000, np.float64, seed=21)
    assert {bool(x) for x in book.is_call} == {True, False} and {bool(x) for x in book.inverse} == {True, False}
    ad = {k: np.asarray(v) for k, v in unit_greeks_jit(book).items()}
    cf = {k: np.asarray(v) for k, v in unit_greeks_fast(book).items()}
    assert set(cf) == set(ad) == set(KEYS)
    T, vol = np.asarray(book.expiry_years), np.asarray(book.vol)
    dead = vol * vol * T <= np.finfo(np.float64).eps ** 2
    sd = vol * np.sqrt(T)
    narrow = ~dead & (sd < 1e-4)  # tiny T or tiny vol, still alive
    assert dead.sum() >= 1000 and narrow.sum() >= 500
    for k in KEYS:
        assert cf[k].dtype == np.float64 and np.all(np.isfinite(cf[k])), k
        scale = np.max(np.abs(ad[k]))
        # 1e-12 relative, plus 1e-13 of the Greek's largest value: reverse-mode derivatives of sums whose terms
        # cancel analytically (d/dF of F N(d1) - K N(d2), theta = price(T - 1 day) - price(T)) carry rounding
        # of a few eps times those terms, large relative to an entry near 0 (measured <= 1.5e-14 of the scale)
        tol = dict(rtol=1e-12, atol=1e-13 * scale)
        rows = ~narrow if k in ("gamma", "vega", "vanna", "volga") else slice(None)
        np.testing.assert_allclose(cf[k][rows], ad[k][rows], err_msg=k, **tol)
    # sigma sqrt T < 1e-4: the kernel's second vol derivative cancels terms of order F phi(d1) ln(F/K) / sd^2
    # (its volga is off by up to 1e-9 of the scale there), so the density Greeks are checked against the
    # closed forms in 50-digit arithmetic instead, at the same tolerance
    idx = np.flatnonzero(narrow)
    exact = exact_density_greeks(book, idx)
    for k, ref in exact.items():
        scale = np.max(np.abs(ad[k]))
        np.testing.assert_allclose(cf[k][idx], ref, rtol=1e-12, atol=1e-13 * scale, err_msg=f"{k} (exact)")
    worst = np.argmax(np.abs(ad["volga"][idx] - exact["volga"]))
    assert abs(cf["volga"][idx][worst] - exact["volga"][worst]) <= abs(ad["volga"][idx][worst] - exact["volga"][worst])
    np.testing.assert_array_equal(cf["value"], ad["value"])  # the same price formula
    # the dead side (sigma^2 T <= eps^2) is exactly the kernel's: intrinsic value, its slope (half at the
    # money, as JAX differentiates maximum) and zero second-order Greeks
    for k in ("delta", "gamma", "vega", "vanna", "volga"):
        np.testing.assert_array_equal(cf[k][dead], ad[k][dead], err_msg=k)
    atm_dead = dead & (np.asarray(book.strike) == np.asarray(book.forward))
    assert atm_dead.sum() > 100 and np.all(np.abs(cf["delta"][atm_dead]) > 0)
    assert np.max(np.abs(cf["theta"])) > 1e-3  # a one-day theta, not zeros


def test_closed_form_greeks_of_every_kind_and_stacked_books():
    """Futures, perpetuals, spot and padding rows too, on stacked (accounts, rows) books."""
    from pmjax.core.fast_greeks import unit_greeks_fast

    books = random_account_books(40, 20, np.float64, seed=8)  # (40, 32): 12 padding rows each
    ad = {k: np.asarray(v) for k, v in unit_greeks_jit(books).items()}
    cf = {k: np.asarray(v) for k, v in unit_greeks_fast(books, block=64).items()}
    for k in ad:
        assert cf[k].shape == (40, 32), k
        np.testing.assert_allclose(cf[k], ad[k], rtol=1e-12, atol=1e-13 * np.max(np.abs(ad[k])), err_msg=k)
    assert len(set(np.asarray(books.kind).ravel().tolist())) == 4


@pytest.mark.parametrize("cdf", ["auto", "exact"])
def test_closed_form_greeks_float32_against_float64(cdf):
    """float32 (default: Hart's CDF sharing the density's exp; or the exact ndtr) against the float64 kernel."""
    from pmjax.core.fast_greeks import KEYS, unit_greeks_fast

    # tiny T and vol kept where float32's eps^2 (1.4e-14) classifies sigma^2 T as float64 does
    b64 = greeks_cases(20000, np.float64, seed=22, tiny_t=1e-8, tiny_vol=1e-3)
    b32 = greeks_cases(20000, np.float32, seed=22, tiny_t=1e-8, tiny_vol=1e-3)
    ref = {k: np.asarray(v) for k, v in unit_greeks_jit(b64).items()}
    cf = unit_greeks_fast(b32, cdf=cdf)
    kernel32 = unit_greeks_jit(b32)
    for k in KEYS:
        assert cf[k].dtype == np.float32, k
        scale = np.max(np.abs(ref[k]))
        err = np.max(np.abs(np.asarray(cf[k], np.float64) - ref[k])) / scale
        err_kernel = np.max(np.abs(np.asarray(kernel32[k], np.float64) - ref[k])) / scale
        # float32 inputs and arithmetic: measured <= 3.1e-5 of the Greek's scale, either CDF (the autodiff
        # kernel in float32: the same); bound 1e-4, and never more than twice the float32 kernel's own error
        assert err < 1e-4 and err <= 2.0 * err_kernel + 1e-6, (k, err, err_kernel)


def test_hart_cdf_accuracy_and_very_wide_distributions_in_float32():
    from scipy.special import ndtr

    from pmjax.core.fast_greeks import KEYS, ndtr_from_density, unit_greeks_fast

    x = np.linspace(-14.0, 14.0, 280001)
    got = np.asarray(ndtr_from_density(x, np.exp(-0.5 * x * x)))
    ref = ndtr(x)
    rel = np.abs(got / ref - 1.0)
    assert rel[np.abs(x) < 7.0].max() < 5e-9 and rel.max() < 3e-7  # below float32's 6e-8 in the body
    # sigma sqrt T up to 28: one of the two densities underflows in float32; the shared exp is taken at the
    # d nearer 0, so prices and Greeks keep float32 accuracy (against the float64 closed forms)
    rng = np.random.default_rng(3)
    b = jax.tree_util.tree_map(np.asarray, random_option_book(4000, jnp.float64, seed=2))
    fields = {f: getattr(b, f) for f in BOOK_FIELDS}
    fields.update(vol=rng.uniform(0.5, 20.0, 4000), expiry_years=rng.uniform(0.01, 2.0, 4000))
    b64 = type(b)(**fields)
    b32 = jax.tree_util.tree_map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v, b64)
    ref = unit_greeks_fast(b64)
    got = unit_greeks_fast(b32)
    for k in KEYS:
        r = np.asarray(ref[k])
        assert np.max(np.abs(np.asarray(got[k], np.float64) - r)) <= 1e-5 * np.max(np.abs(r)), k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_closed_form_greeks_blocks_padding_and_gradients(dtype):
    from pmjax.core.fast_greeks import book_greeks, closed_form_greeks, unit_greeks_fast

    book = greeks_cases(1003, dtype, seed=23)  # 1003: padded to whole blocks and cut back
    ref = jax.jit(book_greeks)(book)
    for block in (8, 96, 4096):
        got = unit_greeks_fast(book, block=block)
        for k in ref:
            assert got[k].shape == (1003,)
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(ref[k]), err_msg=f"{k} block {block}")
    # NaN-safe under differentiation too (double where): gradients at T = 0 and vol = 0 are finite
    fields = [jnp.asarray(getattr(book, f)) for f in ("kind", "inverse", "is_call", "strike", "expiry_years",
                                                       "spot", "forward", "vol")]

    def total(T, vol):
        args = fields[:4] + [T] + fields[5:7] + [vol]
        return sum(v.sum() for v in closed_form_greeks(*args).values())

    gT, gv = jax.grad(total, (0, 1))(fields[4], fields[7])
    assert np.all(np.isfinite(np.asarray(gT))) and np.all(np.isfinite(np.asarray(gv)))


# ---------------------------------------------------------------- the command


def _cli(monkeypatch, argv):
    from pmjax import cli

    monkeypatch.setitem(cli_main.COMMANDS, "bench", "throughput and latency table, with baselines measured in the same run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_bench_json_has_the_spec_keys(monkeypatch):
    code, out, err = _cli(monkeypatch, ["bench", "--sizes", "tiny", "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert {"device", "jax", "results"} <= set(doc)
    assert doc["jax"] == jax.__version__
    by = {r["name"]: r for r in doc["results"]}
    assert {"black76_f32", "black76_autodiff_f32", "black76_price_f32", "black76_f64", "black76_autodiff_f64",
            "span_accounts", "mc_revaluations", "what_if_latency", "what_if_latency_span_deribit", "compile"} <= set(by)
    for r in doc["results"]:
        assert SPEC_ROW_KEYS <= set(r), r
        assert r["pmjax"] > 0 and r["baseline_value"] > 0 and r["baseline"]
        want = r["pmjax"] / r["baseline_value"] if r["unit"] == "per_s" else r["baseline_value"] / r["pmjax"]
        assert r["speedup"] == pytest.approx(want)
    assert {by[n]["unit"] for n in ("black76_f32", "black76_f64", "span_accounts", "mc_revaluations")} == {"per_s"}
    assert by["what_if_latency"]["unit"] == by["what_if_latency_span_deribit"]["unit"] == by["compile"]["unit"] == "s"
    assert by["what_if_latency_span_deribit"]["methods"] == "span,deribit"
    # the pricing rows say which path they time: closed forms (fast_greeks) and the autodiff kernel
    assert "fast_greeks" in by["black76_f32"]["path"] and "unit_greeks_jit" in by["black76_autodiff_f32"]["path"]
    assert by["black76_f32"]["baseline_value"] == by["black76_autodiff_f32"]["baseline_value"]  # one baseline
    assert by["black76_f32"]["precision"] == "float32" and by["span_accounts"]["precision"] == "float64"
    assert "scipy.special.ndtr" in by["black76_f32"]["baseline"]
    assert by["span_accounts"]["size"] == "64x20" and by["mc_revaluations"]["size"] == "256x64"
    # targets for the device at hand, each met or not met
    assert doc["targets"]
    for t in doc["targets"]:
        assert t["status"] in ("met", "not met", "not measured at this size") or \
            t["status"].startswith("not measured at this precision"), t
    if doc["device_info"]["platform"] == "cpu":
        assert {t["result"] for t in doc["targets"]} >= {"black76_f32", "what_if_latency",
                                                          "what_if_latency_span_deribit"}


def test_bench_text_without_scipy_and_one_row(monkeypatch):
    code, out, err = _cli(monkeypatch, ["bench", "--sizes", "tiny", "--only", "black76_f32", "--no-scipy"])
    assert code == 0, err
    assert "black76_f32" in out and "numpy Cody erfc (no scipy)" in out and "jax " + jax.__version__ in out
    assert ">= 8x the numpy baseline (float32)" in out or "5e10" in out  # the target line for this device
    assert "black76_autodiff_f32" not in out  # --only: that row alone


def test_bench_uses_one_cpu_device_per_core_when_run_as_a_command():
    """``pmjax bench`` makes one JAX CPU device per core before the backend starts (a fresh process: this
    one's backend is up already), prints the count, and leaves a count the user gave alone."""
    import os
    import subprocess
    import sys

    cores = harness.cpu_count()
    cmd = [sys.executable, "-m", "pmjax", "bench", "--sizes", "tiny", "--only", "black76_f32", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["JAX_PLATFORMS"] = "cpu"
    runs = {"default": env, "user": dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=3")}
    docs = {}
    for name, e in runs.items():
        proc = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs[name] = json.loads(proc.stdout)
    info = docs["default"]["device_info"]
    assert info["count"] == cores and info["cpu_devices"].startswith(f"{cores} CPU devices")
    assert docs["default"]["results"][0]["devices"] == cores
    assert docs["user"]["device_info"]["count"] == 3 and "XLA_FLAGS" in docs["user"]["device_info"]["cpu_devices"]
    assert f"x{cores} ({cores} host cores; {cores} CPU devices" in format_bench(docs["default"])
    # in a process whose backend is already up nothing changes, and the bench says so
    jax.devices()
    assert "already initialised" in harness.use_all_cpu_cores()


def test_gpu_targets_are_float32():
    """On a GPU the targets are stated in float32; a float64 run reports them not measured at its precision."""
    gpu = [t for t in rows.TARGETS if t[1] == "gpu"]
    assert gpu and all(t[4] == "float32" and "float32" in t[2] for t in gpu)
    assert any(t[0] == "what_if_latency" and t[1] == "cpu" for t in rows.TARGETS)


def test_bench_rejects_unknown_rows(monkeypatch):
    code, out, err = _cli(monkeypatch, ["bench", "--only", "black77", "--json"])
    assert code == 2 and out == "" and "unknown row 'black77'" in err


# ---------------------------------------------------------------- memory-bound chunks


def test_available_memory_is_read_and_the_budget_is_a_fraction():
    free = sharding.available_bytes()
    assert free > 0
    assert 0 < sharding.memory_budget(0.25) <= free
    with pytest.raises(ValueError):
        sharding.memory_budget(0.0)


def test_mc_chunk_keeps_compiled_memory_under_the_budget_and_runs(market):
    budget = 4 << 20
    settings = montecarlo.var_settings({"var": {"model": "normal", "historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings)
    book = random_option_book(100, jnp.float64, seed=2, size=128)
    chunk = sharding.mc_chunk(book.size, jnp.float64, budget=budget, n_devices=1)
    assert chunk & (chunk - 1) == 0
    assert sharding.mc_chunk_bytes(chunk, book.size, jnp.float64) <= budget < sharding.mc_chunk_bytes(
        2 * chunk, book.size, jnp.float64)
    # XLA's own account of the compiled call (arguments + outputs + temporaries) is within the estimate
    idx = jnp.zeros(chunk, jnp.uint32)
    mem = montecarlo.path_losses.lower(spec, jax.device_put(book), params, jax.random.key(0), idx).compile()
    mem = mem.memory_analysis()
    used = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    assert used <= sharding.mc_chunk_bytes(chunk, book.size, jnp.float64) <= budget
    # and Monte Carlo runs with that chunk, paths over several chunks, same losses as one big chunk
    paths = 2 * chunk + 5
    a = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=1, chunk=chunk, progress=False)
    b = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=1, chunk=4 * chunk, progress=False)
    np.testing.assert_array_equal(a, b)


def test_span_chunk_keeps_compiled_memory_under_the_budget():
    budget = 16 << 20
    params = span_params(load_config())
    chunk = sharding.span_chunk(32, jnp.float64, budget=budget, n_devices=1)
    assert sharding.span_chunk_bytes(chunk, 32, jnp.float64) <= budget < sharding.span_chunk_bytes(2 * chunk, 32,
                                                                                                 jnp.float64)
    books = random_account_books(chunk, 20, jnp.float64, seed=1)
    mem = span_margin_batch.lower(books, params).compile().memory_analysis()
    used = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    assert used <= sharding.span_chunk_bytes(chunk, 32, jnp.float64)


# ---------------------------------------------------------------- no recompilation within a bucket


def test_second_account_batch_of_the_same_bucket_does_not_recompile(market, compile_log):
    params = span_params(load_config())
    one = [make_portfolio(parse_trades(t), margin_currency=c) for t, c in [
        ("BTC-27MAR26-100000-C:-2,BTC-27MAR26:1.5,BTC-PERPETUAL:-0.5", "USD"),
        ("ETH-27MAR26-3000-P:2,ETH_USDC-PERPETUAL:3", "ETH"),
        ("BTC:1,BTC-30JAN26-90000-C:1", "BTC")]]
    two = [make_portfolio(parse_trades(t), margin_currency=c) for t, c in [
        ("ETH-27MAR26-2800-C:-5,BTC-27MAR26-80000-P:-4,ETH-27MAR26:2,BTC-PERPETUAL:1", "USD"),
        ("BTC-27MAR26-90000-C:3", "BTC"),
        ("ETH-27MAR26-3200-P:-1,ETH-27MAR26-3400-C:1", "USD"),
        ("BTC-27MAR26-120000-C:-1", "ETH")]]
    a, b = build_batch(one, market), build_batch(two, market)
    assert (a.size, a.n_padded) == (b.size, b.n_padded) and a.n_accounts != b.n_accounts
    span_margin_batch.clear_cache()  # so the first batch compiles here, whatever ran before
    with compile_log() as first:
        jax.block_until_ready(span_margin_batch(a.books, params))
    assert first.compiles("span_margin") == 1, first.messages  # the log sees a compilation when there is one
    with compile_log() as second:
        result = jax.block_until_ready(span_margin_batch(b.books, params))
    assert second.compiles("span_margin") == 0, second.messages
    # the reused code computes batch two's own margins
    ref = reference.numpy_span(b.books, params, reference.ndtr_cody)["total"]
    np.testing.assert_allclose(np.asarray(result.total), ref, rtol=1e-11)


def test_bench_without_a_size_says_which_preset_it_runs(monkeypatch):
    """Issue 14 item 12: `pmjax bench` with no size flag ran the GPU-size preset silently, even on a CPU (hours);
    now a CPU gets `quick` and a GPU `full`, and a notice says which."""
    assert harness.default_sizes("cpu")[0] == "quick" and harness.default_sizes("gpu")[0] == "full"
    assert "GPU target sizes" in harness.default_sizes("cpu")[1] and "gpu" in harness.default_sizes("gpu")[1]
    seen = []
    real = harness.run_bench

    def spy(sizes, **kw):
        seen.append(sizes)
        return real("tiny", **kw)  # keep the test small: the preset chosen is what is checked

    monkeypatch.setattr(harness, "run_bench", spy)
    code, out, err = _cli(monkeypatch, ["bench", "--only", "black76_f32", "--json"])
    assert code == 0, err
    want = harness.default_sizes(jax.default_backend())
    assert seen == [want[0]] and f"pmjax: notice: bench: {want[1]}" in err
    json.loads(out)  # stdout stays one JSON document
    seen.clear()
    code, out, err = _cli(monkeypatch, ["bench", "--quick", "--only", "black76_f32", "--json"])
    assert code == 0 and seen == ["quick"] and "no --sizes given" not in err
