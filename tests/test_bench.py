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

from pmjax import bench, montecarlo, sharding
from pmjax.accounts import build_batch
from pmjax.config import load_config
from pmjax.kernel import unit_greeks_jit
from pmjax.portfolio import make_portfolio, parse_trades
from pmjax.span import span_margin_batch, span_params

SPEC_ROW_KEYS = {"name", "size", "unit", "pmjax", "baseline", "baseline_value", "speedup"}
NDTRS = [bench.baseline_ndtr(False), bench.baseline_ndtr(True)]


# ---------------------------------------------------------------- the numpy normal CDF


def test_cody_erfc_matches_math_erfc_to_near_machine_precision():
    x = np.concatenate([np.linspace(-9.0, 26.0, 20001), [0.0, 0.46875, -0.46875, 4.0, -4.0, 1e-12, -1e-300]])
    ref = np.array([math.erfc(v) for v in x])
    got = bench.erfc_cody(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=2e-14, atol=0.0)
    assert bench.erfc_cody(np.array([np.inf, -np.inf, 40.0])).tolist() == [0.0, 2.0, 0.0]


def test_cody_ndtr_float32_stays_float32_and_accurate():
    x = np.linspace(-8.0, 8.0, 4001).astype(np.float32)
    ref = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2.0)) for v in x])  # at the float32 arguments
    got = bench.ndtr_cody(x)
    assert got.dtype == np.float32
    # float32 arithmetic inside: the relative error grows like x^2 eps32 in the lower tail
    rel = np.abs(got / ref - 1.0)
    bound = (1.0 + x.astype(np.float64) ** 2) * 4 * np.finfo(np.float32).eps
    assert np.all(rel <= bound), (x[rel > bound], rel[rel > bound])


def test_baseline_ndtr_names_what_it_uses():
    fn, name = bench.baseline_ndtr(False)
    assert fn is bench.ndtr_cody and "no scipy" in name
    fn, name = bench.baseline_ndtr(True)  # scipy is a test dependency
    assert name == "scipy.special.ndtr"


# ---------------------------------------------------------------- the baselines compute what pmjax computes


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 3e-4)])
@pytest.mark.parametrize("ndtr, ndtr_name", NDTRS)
def test_numpy_greeks_equal_pmjax_unit_greeks(dtype, rtol, ndtr, ndtr_name):
    n = 300
    book = bench.random_option_book(n, dtype, seed=11, size=512)
    # a few options inside the last day, so theta reprices at intrinsic (T - 1 day clipped at 0)
    book = jax.tree_util.tree_map(np.asarray, book)
    book.expiry_years[:5] = np.asarray([0.2, 0.5, 0.9, 1.0, 1.5], dtype) / 365.0
    pm = {k: np.asarray(v)[:n] for k, v in unit_greeks_jit(jax.device_put(book)).items()}
    host = {k: (v[:n] if np.ndim(v) else v) for k, v in bench.host_book(book).items()}
    got = bench.numpy_unit_greeks(host, ndtr)
    assert set(got) == set(pm) == {"value", "delta", "gamma", "vega", "theta", "vanna", "volga"}
    for k in pm:
        assert got[k].dtype == dtype, k
        scale = np.max(np.abs(pm[k]))  # per-Greek scale: entries near zero compare in absolute terms
        np.testing.assert_allclose(got[k], pm[k], rtol=rtol, atol=rtol * scale, err_msg=f"{k} ({ndtr_name})")
    # and the comparison can fail: a one-day theta is not a zero theta
    assert np.max(np.abs(got["theta"])) > 1e-3


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
def test_numpy_span_equals_span_margin_batch_field_by_field(dtype, rtol):
    ndtr, _ = bench.baseline_ndtr(False)
    params = span_params(load_config(), dtype=dtype)
    books = bench.random_account_books(40, 20, dtype, seed=5)
    assert set(books.margin_coin.tolist()) == {-1, 0, 1}  # USD, BTC and ETH margin accounts
    pm = span_margin_batch(books, params)
    got = bench.numpy_span(books, params, ndtr)
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
    totals = bench.numpy_span_chunked(books, params, ndtr, chunk=7)  # chunking changes nothing
    np.testing.assert_array_equal(totals, got["total"])


def test_numpy_losses_equal_simulate_losses_given_the_same_factors(market):
    # the losses given the factors do not depend on the model (the draws are tested below); USD and a coin
    # margin currency share one compilation (same shapes)
    settings = montecarlo.var_settings({"var": {"model": "normal", "historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings)
    paths = 300
    zr, zv = montecarlo.scenario_factors(spec, params, 3, np.arange(paths))
    for margin_coin in (-1, 1):
        book = jax.tree_util.tree_map(np.asarray, bench.random_option_book(50, jnp.float64, seed=9, size=64))
        book = type(book)(**{**{f: getattr(book, f) for f in bench.BOOK_FIELDS},
                             "margin_coin": np.int32(margin_coin)})
        pm = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=3, chunk=128, progress=False)
        got = bench.numpy_losses(bench.host_book(book), params, zr, zv, bench.ndtr_cody)
        np.testing.assert_allclose(got, pm, rtol=1e-10, atol=1e-10 * np.max(np.abs(pm)), err_msg=str(margin_coin))


def test_numpy_draws_follow_the_model(market):
    normal = montecarlo.var_settings({"var": {"model": "normal", "historical": False}})
    spec, params, _ = montecarlo.build_model(market, normal)
    zr, zv = bench.numpy_factors(spec, params, 100_000, np.random.default_rng(0))
    z = np.concatenate([zr, zv], axis=1)
    corr = np.asarray(params.chol) @ np.asarray(params.chol).T
    np.testing.assert_allclose(np.corrcoef(z.T), corr, atol=0.02)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=0.02)
    # student_t: the same fat tails as pmjax's own draws (fraction beyond 2.5 sd, two-sample binomial check)
    spec_t, params_t, _ = montecarlo.build_model(market, montecarlo.var_settings({"var": {"historical": False}}))
    n = 40_000
    zr_np, _ = bench.numpy_factors(spec_t, params_t, n, np.random.default_rng(1))
    zr_pm, _ = montecarlo.scenario_factors(spec_t, params_t, 0, np.arange(n))
    tail_np, tail_pm = np.mean(np.abs(zr_np) > 2.5), np.mean(np.abs(zr_pm) > 2.5)
    sd = math.sqrt(2 * tail_pm * (1 - tail_pm) / (2 * n))
    assert abs(tail_np - tail_pm) < 4 * sd, (tail_np, tail_pm)
    normal_tail = math.erfc(2.5 / math.sqrt(2.0))  # 1.2%: the t tail is clearly fatter
    assert tail_pm > normal_tail + 8 * sd


# ---------------------------------------------------------------- the command


def _cli(monkeypatch, argv):
    from pmjax import cli

    monkeypatch.setitem(cli.COMMANDS, "bench", "throughput and latency table, with baselines measured in the same run")
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
    assert {"black76_f32", "black76_price_f32", "black76_f64", "span_accounts", "mc_revaluations",
            "what_if_latency", "compile"} <= set(by)
    for r in doc["results"]:
        assert SPEC_ROW_KEYS <= set(r), r
        assert r["pmjax"] > 0 and r["baseline_value"] > 0 and r["baseline"]
        want = r["pmjax"] / r["baseline_value"] if r["unit"] == "per_s" else r["baseline_value"] / r["pmjax"]
        assert r["speedup"] == pytest.approx(want)
    assert {by[n]["unit"] for n in ("black76_f32", "black76_f64", "span_accounts", "mc_revaluations")} == {"per_s"}
    assert by["what_if_latency"]["unit"] == by["compile"]["unit"] == "s"
    assert "scipy.special.ndtr" in by["black76_f32"]["baseline"]
    assert by["span_accounts"]["size"] == "64x20" and by["mc_revaluations"]["size"] == "256x64"
    # targets for the device at hand, each met or not met
    assert doc["targets"] and {t["status"] for t in doc["targets"]} <= {"met", "not met", "not measured at this size"}


def test_bench_text_without_scipy_and_one_row(monkeypatch):
    code, out, err = _cli(monkeypatch, ["bench", "--sizes", "tiny", "--only", "black76_f32", "--no-scipy"])
    assert code == 0, err
    assert "black76_f32" in out and "numpy Cody erfc (no scipy)" in out and "jax " + jax.__version__ in out
    assert ">= 8x the numpy baseline" in out or "5e10" in out  # the target line for this device


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
    book = bench.random_option_book(100, jnp.float64, seed=2, size=128)
    chunk = sharding.mc_chunk(book.size, jnp.float64, budget=budget, n_devices=1)
    assert chunk & (chunk - 1) == 0
    assert sharding.mc_chunk_bytes(chunk, book.size, jnp.float64) <= budget < sharding.mc_chunk_bytes(
        2 * chunk, book.size, jnp.float64)
    # XLA's own account of the compiled call (arguments + outputs + temporaries) is within the estimate
    idx = jnp.zeros(chunk, jnp.uint32)
    mem = montecarlo._losses.lower(spec, jax.device_put(book), params, jax.random.key(0), idx).compile()
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
    books = bench.random_account_books(chunk, 20, jnp.float64, seed=1)
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
    assert first.compiles("span_core") == 1, first.messages  # the log sees a compilation when there is one
    with compile_log() as second:
        result = jax.block_until_ready(span_margin_batch(b.books, params))
    assert second.compiles("span_core") == 0, second.messages
    # the reused code computes batch two's own margins
    ref = bench.numpy_span(b.books, params, bench.ndtr_cody)["total"]
    np.testing.assert_allclose(np.asarray(result.total), ref, rtol=1e-11)
