"""The rows of ``pmjax bench``: each ``bench_*`` times one pmjax computation and its numpy (or QuantLib, or
pmjax regular-path) baseline in the same run and returns SPEC rows (``name``, ``size``, ``unit``, ``pmjax``,
``baseline``, ``baseline_value``, ``speedup``, extras); the size presets, the targets and the row names.
Rates per second, latencies in seconds (see ``pmjax.bench.harness`` for what each row times)."""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.bench.baselines import BOOK_FIELDS, black76_np, host_book, numpy_monte_carlo, numpy_span, \
    numpy_span_chunked, numpy_unit_greeks
from pmjax.bench.names import ROW_NAMES  # noqa: F401  (re-exported: the rows, in order)
from pmjax.bench.books import random_account_books, random_option_book, sharded_option_book
from pmjax.core.book import Book, bucket_size
from pmjax.core.units import DAY


# ---------------------------------------------------------------- timing


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls (``fn`` must block
    until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _first_and_warm(fn, repeats: int) -> tuple[float, float]:
    """(first call, median warm call) wall times of ``fn()``, seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    return first, median_seconds(fn, repeats, warmup=0)


#: sizes per preset: options priced, accounts (and numpy's share), positions per account, Monte Carlo
#: paths (and numpy's share) x options, what-if repeats, timing repeats (pmjax, numpy)
SIZES = {
    "tiny": {"options": 2048, "numpy_options": 2048, "accounts": 64, "numpy_accounts": 64, "positions": 20,
             "paths": 256, "numpy_paths": 256, "mc_options": 64, "whatif_repeats": 10, "repeats": 2,
             "numpy_repeats": 1, "quantlib_options": 200, "var_paths": 2048, "var_options": 20,
             "var_accounts": 4, "var_account_paths": 2048, "hedge_map_kinds": ("futures", "perpetuals"),
             "monitor_accounts": 8, "monitor_ticks": 5, "big_book": 200},
    "quick": {"options": 1 << 18, "numpy_options": 1 << 18, "accounts": 2048, "numpy_accounts": 1024,
              "positions": 20, "paths": 8192, "numpy_paths": 2048, "mc_options": 256, "whatif_repeats": 100,
              "repeats": 3, "numpy_repeats": 2, "quantlib_options": 2000, "var_paths": 65536, "var_options": 256,
              "var_accounts": 32, "var_account_paths": 16384, "monitor_accounts": 100, "monitor_ticks": 20,
              "big_book": 2000},
    "medium": {"options": 1 << 22, "numpy_options": 1 << 21, "accounts": 16384, "numpy_accounts": 4096,
               "positions": 20, "paths": 65536, "numpy_paths": 8192, "mc_options": 1000, "whatif_repeats": 200,
               "repeats": 5, "numpy_repeats": 3, "quantlib_options": 20000, "var_paths": 1_000_000,
               "var_options": 1000, "var_accounts": 1000, "var_account_paths": 100_000, "monitor_accounts": 1000,
               "monitor_ticks": 200, "big_book": 10_000},
    "full": {"options": 1 << 25, "numpy_options": 1 << 22, "accounts": 100_000, "numpy_accounts": 8192,
             "positions": 20, "paths": 1_000_000, "numpy_paths": 16384, "mc_options": 1000, "whatif_repeats": 200,
             "repeats": 5, "numpy_repeats": 3, "quantlib_options": 20000, "var_paths": 10_000_000,
             "var_options": 10_000, "var_accounts": 1000, "var_account_paths": 100_000, "monitor_accounts": 1000,
             "monitor_ticks": 300, "big_book": 10_000},
}

#: targets per platform: (row name, platform, text, check(row) -> True / False / None when not measurable,
#: precision the target is stated in or None). GPU targets are float32 (``pmjax bench --precision float32``);
#: a run in another precision reports them "not measured at this precision"
TARGETS = (
    ("black76_f32", "gpu", ">= 5e10 options/s (float32)", lambda r: r["pmjax"] >= 5e10, "float32"),
    ("mc_revaluations", "gpu", ">= 1e11 revaluations/s (float32)", lambda r: r["pmjax"] >= 1e11, "float32"),
    ("mc_revaluations", "gpu", "1e6 paths x 1,000 options < 1 s (float32)",
     lambda r: r["seconds"] < 1.0 if r["paths"] >= 1_000_000 and r["options"] >= 1000 else None, "float32"),
    ("span_accounts", "gpu", "1e5 accounts x 20 positions < 1 s (float32)",
     lambda r: r["seconds"] < 1.0 if r["accounts"] >= 100_000 and r["positions"] >= 20 else None, "float32"),
    ("black76_f32", "cpu", ">= 8x the numpy baseline (float32)", lambda r: r["speedup"] >= 8.0, "float32"),
    ("mc_revaluations", "cpu", ">= 5x the numpy baseline (float32)", lambda r: r["speedup"] >= 5.0, "float32"),
    ("mc_var_exact_tail", "cpu", ">= 30x full revaluation, 1e6 paths x 1,000 options (float64)",
     lambda r: r["speedup"] >= 30.0 if r["paths"] >= 1_000_000 and r["options"] >= 1000 else None, "float64"),
    ("mc_var_exact_tail", "gpu", "1e7 paths x 1e4 options < 1 s (float32)",
     lambda r: r["seconds"] < 1.0 if r["paths"] >= 10_000_000 and r["options"] >= 10_000 else None, "float32"),
    ("hedge_map", "cpu", "< 1 s warm, a whole chain, SPAN + Deribit",
     lambda r: r["seconds"] < 1.0 if r["contracts"] >= 1000 else None, None),
    ("what_if_latency", "cpu", "< 1 ms warm, 100 positions", lambda r: r["seconds"] < 1e-3, None),
    ("what_if_latency_span_deribit", "cpu", "< 1 ms warm, 100 positions", lambda r: r["seconds"] < 1e-3, None),
    ("monitor_update", "cpu", "p99 < 50 ms, 1,000 accounts x 20 positions (SPAN + Deribit)",
     lambda r: r["p99"] < 0.05 if r["accounts"] >= 1000 else None, None),
    ("monitor_update_one_account", "cpu", "p99 < 5 ms, one account of 100 positions (SPAN + Deribit)",
     lambda r: r["p99"] < 0.005, None),
    ("margin_10k_positions_rules", "cpu", "< 1 s warm, one account of 10,000 positions (optimal pairing)",
     lambda r: r["seconds"] < 1.0 if r["positions"] >= 10_000 else None, None),
    ("margin_10k_positions_span", "cpu", "< 2 s warm, one account of 10,000 positions",
     lambda r: r["seconds"] < 2.0 if r["positions"] >= 10_000 else None, None),
    ("margin_10k_positions_deribit", "cpu", "< 2 s warm, one account of 10,000 positions",
     lambda r: r["seconds"] < 2.0 if r["positions"] >= 10_000 else None, None),
)



def _row(name, size, unit, pmjax_value, baseline, baseline_value, higher_is_better: bool, **extra) -> dict:
    """A SPEC result row; ``speedup`` = baseline time / pmjax time (None without a baseline)."""
    if baseline_value is None or not pmjax_value:
        speedup = None
    else:
        speedup = pmjax_value / baseline_value if higher_is_better else baseline_value / pmjax_value
    return {"name": name, "size": size, "unit": unit, "pmjax": pmjax_value, "baseline": baseline,
            "baseline_value": baseline_value, "speedup": speedup, **extra}


# ---------------------------------------------------------------- the measurements


def bench_black76(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict, *, closed_form: bool = True,
                  autodiff: bool = True) -> list[dict]:
    """Price + 6 Greeks of ``sz["options"]`` options in ``dtype``: ``black76_<tag>`` times the closed-form path
    (``fast_greeks.unit_greeks_fast``: blocks, every local device), ``black76_autodiff_<tag>`` the autodiff
    kernel (``kernel.unit_greeks_jit`` on the same book split over the same devices); both against one
    numpy baseline measured here."""
    from pmjax.core.fast_greeks import block_layout, default_block, unit_greeks_fast
    from pmjax.core.kernel import unit_greeks_jit

    n = sz["options"]
    tag = "f32" if jnp.dtype(dtype) == jnp.float32 else "f64"
    precision = str(jnp.dtype(dtype))
    n_dev = jax.local_device_count()
    book = sharded_option_book(n, dtype, seed=1)
    nb = sz["numpy_options"]
    host = host_book(random_option_book(nb, dtype, seed=1))
    step = 1 << 16  # numpy in cache-sized chunks: faster than whole-array passes

    def run_numpy():
        for s in range(0, nb, step):
            numpy_unit_greeks({k: (v[s:s + step] if np.ndim(v) else v) for k, v in host.items()}, ndtr)

    base = median_seconds(run_numpy, sz["numpy_repeats"])
    label = f"numpy closed-form Black-76 + 6 Greeks ({ndtr_name})"
    rows = []
    if closed_form:
        block = block_layout(n, n_dev, default_block(dtype))[0]
        first, warm = _first_and_warm(lambda: jax.block_until_ready(unit_greeks_fast(book)), sz["repeats"])
        compile_times[f"black76_{tag}"] = max(first - warm, 0.0)
        rows.append(_row(f"black76_{tag}", n, "per_s", n / warm, label, nb / base, True, seconds=warm, options=n,
                         baseline_size=nb, precision=precision, devices=n_dev, block=block,
                         path=f"pmjax.core.fast_greeks.unit_greeks_fast: closed forms, blocks of {block:,} options "
                              f"(lax.map) on {n_dev} device(s) (shard_map)"))
    if autodiff:
        first, warm = _first_and_warm(lambda: jax.block_until_ready(unit_greeks_jit(book)), sz["repeats"])
        compile_times[f"black76_autodiff_{tag}"] = max(first - warm, 0.0)
        rows.append(_row(f"black76_autodiff_{tag}", n, "per_s", n / warm, label, nb / base, True, seconds=warm,
                         options=n, baseline_size=nb, precision=precision, devices=n_dev,
                         path=f"pmjax.core.kernel.unit_greeks_jit: autodiff of unit_value_usd, book split over "
                              f"{n_dev} device(s)"))
    return rows


def bench_black76_price(sz: dict, ndtr, ndtr_name: str) -> dict:
    """Black-76 price only, float32 (``kernel.black76`` jitted against ``black76_np``): the part of the
    pricing row without the Greeks, to show where the time of ``black76_f32`` goes."""
    from pmjax.core.kernel import black76

    n, nb = sz["options"], sz["numpy_options"]
    b = sharded_option_book(n, jnp.float32, seed=1)
    price = jax.jit(black76)
    run = lambda: jax.block_until_ready(price(b.forward, b.strike, b.expiry_years, b.vol, b.is_call))  # noqa: E731
    warm = median_seconds(run, sz["repeats"])
    h = host_book(random_option_book(nb, jnp.float32, seed=1))
    step = 1 << 16

    def run_numpy():
        for s in range(0, nb, step):
            black76_np(h["forward"][s:s + step], h["strike"][s:s + step], h["expiry_years"][s:s + step],
                       h["vol"][s:s + step], h["is_call"][s:s + step], ndtr)

    base = median_seconds(run_numpy, sz["numpy_repeats"])
    return _row("black76_price_f32", n, "per_s", n / warm, f"numpy closed-form Black-76 price only ({ndtr_name})",
                nb / base, True, seconds=warm, options=n, baseline_size=nb)


def bench_quantlib(sz: dict, pmjax_rate: float) -> dict | None:
    """QuantLib's BlackCalculator per option: value, delta, gamma, vega, vanna, volga, and theta as a second
    calculator one day on (as pmjax's one-day theta)."""
    try:
        import QuantLib as ql
    except ImportError:
        return None
    m = sz["quantlib_options"]
    b = host_book(random_option_book(m, jnp.float64, seed=1))
    rows = list(zip(b["forward"].tolist(), b["strike"].tolist(), b["expiry_years"].tolist(), b["vol"].tolist(),
                    b["is_call"].tolist()))

    def run():
        for F, K, T, v, call in rows:
            payoff = ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K)
            c = ql.BlackCalculator(payoff, F, v * math.sqrt(T), 1.0)
            c.value(), c.deltaForward(), c.gammaForward(), c.vega(T), c.vanna(F, T), c.volga(T)
            ql.BlackCalculator(payoff, F, v * math.sqrt(max(T - DAY, 0.0)), 1.0).value()

    base = median_seconds(run, 1)
    return _row("black76_f64_quantlib", sz["options"], "per_s", pmjax_rate,
                "QuantLib BlackCalculator per option (value, delta, gamma, vega, vanna, volga, 1-day theta)",
                m / base, True, baseline_size=m, precision="float64",
                path="pmjax.core.fast_greeks.unit_greeks_fast (the black76_f64 rate)")


def bench_span(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict) -> tuple[dict, dict]:
    from pmjax.io.config import load_config
    from pmjax.batch.sharding import span_chunk
    from pmjax.batch.sharding import map_accounts, vmapped
    from pmjax.measures.span import span_margin, span_params

    params = span_params(load_config(), dtype=dtype)
    a, npos = sz["accounts"], sz["positions"]
    books = random_account_books(a, npos, dtype, seed=2)
    rows = books.quantity.shape[1]
    chunk = min(span_chunk(rows, dtype), bucket_size(a, minimum=1))
    n_dev = jax.local_device_count()
    chunk = -(-chunk // n_dev) * n_dev
    # compile: trace + lower + compile of a fresh jit at the chunk shape (a fresh function: no cache hit)
    fresh = jax.jit(jax.vmap(lambda bk, pr: span_margin(bk, pr), in_axes=(0, None)))
    sample = jax.tree_util.tree_map(lambda x: x[:chunk] if x.shape[0] >= chunk else
                                    np.concatenate([x] * (-(-chunk // x.shape[0])))[:chunk], books)
    t0 = time.perf_counter()
    lowered = fresh.lower(sample, params)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    run = lambda: map_accounts(vmapped(span_margin), books, (params,), chunk=chunk)  # noqa: E731  (like span_batch)
    first, warm = _first_and_warm(run, sz["repeats"])
    compile_times["span_margin_batch"] = max(first - warm, 0.0)
    na = sz["numpy_accounts"]
    nb_books = host_book(random_account_books(na, npos, dtype, seed=2))
    base = median_seconds(lambda: numpy_span_chunked(nb_books, params, ndtr), sz["numpy_repeats"])
    numpy_chunk_seconds = base / na * chunk
    label = f"numpy SPAN, full method, vectorised over accounts ({ndtr_name})"
    span_row = _row("span_accounts", f"{a}x{npos}", "per_s", a / warm, label, na / base, True, seconds=warm,
                    accounts=a, positions=npos, book_rows=rows, chunk=chunk, devices=n_dev, baseline_size=na,
                    precision=str(jnp.dtype(dtype)))
    compile_row = _row("compile", f"span_margin_batch {chunk}x{rows}", "s", t2 - t0,
                       f"numpy SPAN of one {chunk}-account chunk (nothing to compile)", numpy_chunk_seconds, False,
                       trace_lower_s=t1 - t0, compile_s=t2 - t1, precision=str(jnp.dtype(dtype)),
                       note="speedup = numpy seconds for one chunk / pmjax compile seconds")
    return span_row, compile_row


def bench_mc(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict) -> dict:
    from pmjax.scenarios import montecarlo
    from pmjax.io.market import load_market
    from pmjax.measures.var import auto_chunk

    market = load_market()
    settings = montecarlo.var_settings({"var": {"historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
    n_opt, paths = sz["mc_options"], sz["paths"]
    book = random_option_book(n_opt, dtype, seed=3, size=bucket_size(n_opt))
    chunk = auto_chunk(book.size, dtype)  # what var.chunk: auto (the default) uses
    run = lambda: montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk,  # noqa: E731
                                             progress=False)
    first, warm = _first_and_warm(run, sz["repeats"])
    compile_times["mc_losses"] = max(first - warm, 0.0)
    np_paths = sz["numpy_paths"]
    host = host_book(random_option_book(n_opt, dtype, seed=3))  # the same options, no padding rows
    base = median_seconds(lambda: numpy_monte_carlo(host, spec, params, paths=np_paths, seed=0,
                                                    chunk=min(np_paths, 2048), ndtr=ndtr), sz["numpy_repeats"])
    return _row("mc_revaluations", f"{paths}x{n_opt}", "per_s", paths * n_opt / warm,
                f"numpy {spec.model} draws + Black-76 revaluation, chunked ({ndtr_name})", np_paths * n_opt / base,
                True, seconds=warm, paths=paths, options=n_opt, chunk=min(chunk, paths), model=spec.model,
                devices=jax.local_device_count(), baseline_size=f"{np_paths}x{n_opt}",
                precision=str(jnp.dtype(dtype)))


def bench_var_exact_tail(dtype, sz: dict, ndtr, ndtr_name: str) -> dict:
    """VaR/ES of one book of ``var_options`` options over ``var_paths`` paths: ``var.revaluation: exact_tail``
    (screen + the tail revalued in full) against full revaluation, both timed warm in this run, with the figures
    compared (``figures_equal``); the numpy baseline's time is its measured per-revaluation rate times the size."""
    from pmjax.io.market import load_market
    from pmjax.measures.var import auto_chunk, tail_rank, var_es
    from pmjax.scenarios import montecarlo, tail_screen

    market = load_market()
    settings = montecarlo.var_settings({"var": {"historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
    n_opt, paths = sz["var_options"], sz["var_paths"]
    book = random_option_book(n_opt, dtype, seed=3, size=bucket_size(n_opt))
    chunk = auto_chunk(book.size, dtype)
    top = tail_rank(paths, settings.confidence)
    kw = dict(paths=paths, seed=0, chunk=chunk)
    last = {}

    def exact():
        last["out"] = tail_screen.exact_tail_losses(book, spec, params, top=top, **kw)

    first, warm = _first_and_warm(exact, max(1, sz["repeats"] // 2))
    losses, report = last["out"]  # the last timed run's
    montecarlo.simulate_losses(book, spec, params, paths=chunk, seed=0, chunk=chunk, progress=False)  # compile
    t0 = time.perf_counter()
    full = montecarlo.simulate_losses(book, spec, params, progress=False, **kw)
    full_seconds = time.perf_counter() - t0
    a, b = var_es(losses, settings.confidence), var_es(full, settings.confidence)
    equal = (a.var, a.es, a.var_stderr, a.es_stderr) == (b.var, b.es, b.var_stderr, b.es_stderr) and bool(
        np.array_equal(a.tail, b.tail))
    np_paths = min(sz["numpy_paths"], paths)
    host = host_book(random_option_book(n_opt, dtype, seed=3))
    base = median_seconds(lambda: numpy_monte_carlo(host, spec, params, paths=np_paths, seed=0,
                                                    chunk=min(np_paths, 2048), ndtr=ndtr), sz["numpy_repeats"])
    return _row("mc_var_exact_tail", f"{paths}x{n_opt}", "s", warm,
                "pmjax full revaluation (var.revaluation: full) of the same paths, this run", full_seconds, False,
                seconds=warm, first_call_s=first, paths=paths, options=n_opt, chunk=chunk, model=spec.model,
                paths_revalued=report.paths_revalued, candidates=report.candidates, attempts=report.attempts,
                fallback=report.fallback, figures_equal=equal, devices=jax.local_device_count(),
                numpy_seconds=base * paths / np_paths, numpy_baseline=f"numpy {spec.model} draws + Black-76 "
                f"revaluation ({ndtr_name}), {np_paths} paths timed, scaled to {paths}",
                speedup_vs_numpy=base * paths / np_paths / warm, precision=str(jnp.dtype(dtype)))


def bench_var_accounts(dtype, sz: dict, ndtr, ndtr_name: str) -> dict:
    """VaR/ES of ``var_accounts`` random 20-position accounts on one shared set of ``var_account_paths`` paths
    (``var_margin_accounts``: draws once, each account screened on its own grids, its tail revalued in full),
    against numpy full revaluation of each account (timed on the first accounts at ``numpy_paths`` paths and
    scaled); ``one_at_a_time_per_s``: ``var_margin`` account by account (own draws) on the first 8 accounts,
    whose figures must equal the shared run's (``figures_equal``)."""
    from pmjax.io.market import load_market
    from pmjax.measures import var
    from pmjax.scenarios import montecarlo

    market = load_market()
    n_acc, paths = sz["var_accounts"], sz["var_account_paths"]
    settings = montecarlo.var_settings({"var": {"historical": False}}, paths=paths)
    params = var.VarParams(*montecarlo.build_model(market, settings, dtype=dtype), settings)
    books = random_account_books(n_acc, 20, dtype, seed=1)
    take = lambda i: jax.tree_util.tree_map(lambda a: a[i], books)  # noqa: E731
    few = min(8, n_acc)
    var.var_margin_accounts(jax.tree_util.tree_map(lambda a: a[:few], books), params)  # compile (tail sizes vary)
    t0 = time.perf_counter()
    shared = var.var_margin_accounts(books, params)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [var.var_margin(take(i), params) for i in range(few)]
    alone_s = (time.perf_counter() - t0) / few
    equal = all((a.estimate.var, a.estimate.es, a.estimate.var_stderr, a.estimate.es_stderr)
                == (b.estimate.var, b.estimate.es, b.estimate.var_stderr, b.estimate.es_stderr)
                and np.array_equal(a.contributions, b.contributions) for a, b in zip(alone, shared))
    np_paths = min(sz["numpy_paths"], paths)
    spec = params.model
    np_few = min(4, n_acc)
    base = median_seconds(lambda: [numpy_monte_carlo(host_book(take(i)), spec, params.scenario, paths=np_paths,
                                                     seed=0, chunk=min(np_paths, 2048), ndtr=ndtr)
                                   for i in range(np_few)], sz["numpy_repeats"])
    numpy_per_account = base / np_few * paths / np_paths
    return _row("var_accounts", f"{n_acc}x20x{paths}", "per_s", n_acc / seconds,
                f"numpy {spec.model} draws + full revaluation per account ({ndtr_name}), {np_paths} paths timed "
                f"on {np_few} accounts, scaled", 1.0 / numpy_per_account, True, seconds=seconds, accounts=n_acc,
                positions=20, paths=paths, one_at_a_time_per_s=1.0 / alone_s, figures_equal=equal,
                figures_compared=few, devices=jax.local_device_count(), precision=str(jnp.dtype(dtype)))


def bench_hedge_map(dtype, sz: dict) -> dict:
    """The marginal margin map of the seed portfolio over every contract of the bundled chain (SPAN + Deribit
    grid, one reverse pass each), warm, against the finite what-if of each contract one at a time (``WhatIf``,
    the warm path; timed on 64 contracts and scaled to the chain). The tiny preset maps futures and
    perpetuals only (``hedge_map_kinds``)."""
    from pmjax.apps.demo import seed_portfolio
    from pmjax.apps.hedge_map import hedge_map
    from pmjax.apps.whatif import WhatIf
    from pmjax.io.config import load_config
    from pmjax.io.market import load_market

    market, config = load_market(), load_config()
    portfolio = seed_portfolio(market)
    kinds = sz.get("hedge_map_kinds", ("options", "futures", "perpetuals"))
    run = lambda: hedge_map(portfolio, market, config, methods=("span", "deribit"), kinds=kinds,  # noqa: E731
                            dtype=dtype)
    first, warm = _first_and_warm(run, sz["repeats"])
    hmap = run()
    what_if = WhatIf(portfolio, market, config, methods=("span", "deribit"), dtype=dtype)
    names = [hmap.instruments[i].name for i in np.linspace(0, len(hmap.instruments) - 1, 64).astype(int)]
    names = list(dict.fromkeys(names))
    base = median_seconds(lambda: [what_if.fast_figures([(n, 1.0)]) for n in names], sz["numpy_repeats"])
    per_chain = base / len(names) * len(hmap.instruments)
    return _row("hedge_map", f"{len(hmap.instruments)} contracts", "s", warm,
                "pmjax WhatIf (warm) of one coin of each contract, one at a time (64 timed, scaled)", per_chain,
                False, seconds=warm, first_call_s=first, contracts=len(hmap.instruments),
                book_rows=len(hmap.instruments) + len(portfolio.positions), precision=str(jnp.dtype(dtype)))


def whatif_latency_fallback(n_positions: int = 100, *, repeats: int = 100, dtype=jnp.float64) -> float:
    """Median warm latency (s) of margin after - margin before through ``span_margin`` on a padded book with
    the trade written into a spare row (used when ``pmjax.apps.whatif`` is missing)."""
    from pmjax.io.config import load_config
    from pmjax.measures.span import span_margin, span_params

    params = span_params(load_config(), dtype=dtype)
    span_jit = jax.jit(span_margin)  # the regular path's one-account call
    n = n_positions
    book = random_option_book(n, dtype, seed=4, size=bucket_size(n + 4))
    trade = random_option_book(1, dtype, seed=5)

    def once():
        after = {f: np.array(getattr(book, f)) for f in BOOK_FIELDS}
        for f in BOOK_FIELDS[:10]:
            after[f][n] = np.asarray(getattr(trade, f))[0]
        before_total = span_jit(book, params).total
        after_total = span_jit(Book(**after), params).total
        return float(after_total - before_total)

    return median_seconds(once, repeats, warmup=2)


def _whatif_account(market, dtype):
    """The what-if rows' account (``whatif_latency.synthetic_account``, 100 positions), the trade (a listed
    BTC option it does not hold, 1 coin short), and its before and after books on one padded size."""
    from pmjax.core.book import make_book, resolve
    from pmjax.bench.whatif_latency import listed_options, synthetic_account

    portfolio = synthetic_account(market, 100, seed=0)
    held = set(portfolio.instruments)
    trade = [i for i in listed_options(market, ("BTC",)) if i not in held]
    trade = trade[len(trade) // 2]
    instruments = list(portfolio.instruments)
    qty = [p.quantity for p in portfolio.positions]
    size = bucket_size(len(instruments) + 4)

    def books():
        before = make_book(resolve(instruments, qty, market), market, portfolio.margin_currency, dtype=dtype,
                           size=size)
        after = make_book(resolve(instruments + [trade], qty + [-1.0], market), market, portfolio.margin_currency,
                          dtype=dtype, size=size)
        return before, after

    return portfolio, trade, books


def bench_whatif(dtype, sz: dict, ndtr, ndtr_name: str, *, span_only: bool = True,
                 span_deribit: bool = True) -> list[dict]:
    """``what_if_latency``: median warm latency of ``pmjax.bench.whatif_latency.whatif_latency`` with SPAN
    (baseline: numpy SPAN of the before and after books); ``what_if_latency_span_deribit``: the same with
    SPAN and the Deribit grid (baseline: pmjax's regular path, resolve + make_book + ``span_margin`` +
    ``deribit_margin`` of the before and after books, there being no numpy Deribit grid)."""
    from pmjax.io.config import load_config
    from pmjax.io.market import load_market
    from pmjax.measures.span import span_margin, span_params

    repeats = sz["whatif_repeats"]
    market = load_market()
    config = load_config()
    params = span_params(config, dtype=dtype)
    precision = str(jnp.dtype(dtype))
    rows = []
    try:
        from pmjax.bench.whatif_latency import whatif_latency
    except ImportError:
        if not span_only:
            return rows
        pm = whatif_latency_fallback(100, repeats=repeats, dtype=dtype)
        how = "span_margin before/after on a padded book, trade in a spare row (pmjax.bench.whatif_latency missing)"
        book = random_option_book(100, dtype, seed=4, size=bucket_size(104))
        host = host_book(jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * 2), book))
        base = median_seconds(lambda: numpy_span(host, params, ndtr), max(5, repeats // 4))
        return [_row("what_if_latency", "100 positions + 1 trade", "s", pm,
                     f"numpy SPAN of the before and after books ({ndtr_name})", base, False, method=how, seconds=pm,
                     methods="span", precision=precision)]
    _, _, books = _whatif_account(market, dtype)
    before, after = books()
    if span_only:
        pm = whatif_latency(100, repeats=repeats, methods=("span",), market=market, config=config, dtype=dtype)
        pair = jax.tree_util.tree_map(lambda x, y: np.stack([np.asarray(x), np.asarray(y)]), before, after)
        host = host_book(pair)
        base = median_seconds(lambda: numpy_span(host, params, ndtr), max(5, repeats // 4))
        rows.append(_row("what_if_latency", "100 positions + 1 trade", "s", pm,
                         f"numpy SPAN of the before and after books ({ndtr_name})", base, False,
                         method="pmjax.bench.whatif_latency (SPAN; resolve, write, one jitted call)", seconds=pm,
                         methods="span", precision=precision))
    if span_deribit:
        from pmjax.measures.deribit import deribit_margin, deribit_params

        dparams = deribit_params(config, dtype=dtype)
        deribit_jit = jax.jit(deribit_margin)  # the regular path's one-account call
        span_jit = jax.jit(span_margin)
        pm = whatif_latency(100, repeats=repeats, methods=("span", "deribit"), market=market, config=config,
                            dtype=dtype)

        def regular():
            figures = []
            for b in books():
                figures += [span_jit(b, params).total, deribit_jit(b, dparams).initial]
            return [float(f) for f in figures]

        base = median_seconds(regular, max(5, repeats // 4), warmup=2)
        rows.append(_row("what_if_latency_span_deribit", "100 positions + 1 trade", "s", pm,
                         "pmjax regular path: resolve + make_book + span_margin + deribit_margin of the before and "
                         "after books (no numpy Deribit grid)", base, False,
                         method="pmjax.bench.whatif_latency (SPAN and Deribit; resolve, write, one jitted call)",
                         seconds=pm, methods="span,deribit", precision=precision))
    return rows


__all__ = ["ROW_NAMES", "SIZES", "TARGETS", "bench_black76", "bench_black76_price", "bench_mc", "bench_quantlib",
           "bench_span", "bench_whatif", "median_seconds", "whatif_latency_fallback"]


def bench_monitor(dtype, sz: dict, *, many: bool = True, one: bool = True) -> list[dict]:
    """``monitor_update`` (``monitor_accounts`` accounts x 20 positions) and ``monitor_update_one_account`` (100
    positions): p50/p99 of an index tick to every event line written (``pmjax.bench.monitor_latency``), against
    the replay's ``Monitor.update`` timed in the same run."""
    from pmjax.bench.monitor_latency import monitor_latency

    rows = []
    cases = ([("monitor_update", sz["monitor_accounts"], 20)] if many else []) + \
        ([("monitor_update_one_account", 1, 100)] if one else [])
    for name, n, k in cases:
        r = monitor_latency(n, k, sz["monitor_ticks"], dtype=dtype)
        rows.append(_row(name, f"{n} accounts x {k} positions", "s", r["p50"],
                         f"the replay's Monitor.update (warm median, no lines written); tick p99 "
                         f"{r['p99'] * 1e3:.3g} ms", r["replay_median"], False, seconds=r["p50"], **r))
    return rows
