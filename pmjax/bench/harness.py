"""``pmjax bench``: throughput and latency of pmjax's kernels next to numpy implementations of the SAME
computations, timed in the same run (SPEC section 1; the JSON document is described in SPEC section 3).

Rows (``name``, unit):

- ``black76_f32`` / ``black76_f64`` (options/s): price and six Greeks (delta, gamma, vega, theta, vanna,
  volga, as ``kernel.unit_greeks`` defines them) of a book of options by pmjax's closed-form path,
  ``fast_greeks.unit_greeks_fast`` (blocks of 16,384 float32 / 8,192 float64 options, split over every
  local device); ``black76_autodiff_f32`` / ``black76_autodiff_f64``: the same Greeks by the autodiff kernel
  ``kernel.unit_greeks_jit`` on the same book and devices, against the same baseline: ``numpy_unit_greeks``
  (closed forms, vectorised numpy, chunked for the cache, one thread); ``black76_f64_quantlib``: the
  closed-form float64 rate next to QuantLib's ``BlackCalculator`` called per option (when QuantLib is
  importable); ``black76_price_f32``: the price alone (``kernel.black76`` against ``black76_np``), to show
  what the Greeks cost. Each row's ``path`` says what it timed;
- ``span_accounts`` (accounts/s): full SPAN (16-scenario scan, composite delta, tiers, spot charge,
  inter credits, short option minimum, NOV) of many accounts, sharded over the devices; baseline ``numpy_span``;
- ``mc_revaluations`` (position-path revaluations/s): Monte Carlo losses of an options book (draws,
  shocks, full Black-76 revaluation, sum); baseline ``numpy_monte_carlo`` (numpy draws of the same model);
- ``what_if_latency`` (s): median warm latency of ``whatif_latency.whatif_latency`` (SPAN incremental margin of a
  new option on a 100-position account); baseline ``numpy_span`` of the before and after books;
  ``what_if_latency_span_deribit``: the same with SPAN and the Deribit grid; baseline pmjax's regular path
  (resolve, ``make_book``, ``span_margin`` and ``deribit_margin`` of the before and after books: there is
  no numpy Deribit grid);
- ``margin_10k_positions_rules`` / ``_span`` / ``_deribit`` (s): one market maker's account of 10,000
  positions (``big_book`` of the preset), each method warm as ``pmjax margin`` computes it (``big_book``);
  baselines: the greedy pairing for rules, ``numpy_span`` of the same book for SPAN and the Deribit grid;
- ``compile`` (s): trace + lower + compile of the vmapped ``span_margin`` at the bench chunk shape; baseline: the
  numpy SPAN of one chunk of that shape (so speedup > 1 means compiling costs less than numpy's run).

``speedup`` = baseline time / pmjax time (> 1: pmjax faster). Each timing is the median of several
repeats after a warm-up call, with ``jax.block_until_ready``. The numpy baselines are tested against
pmjax on small sizes (tests/test_bench.py), so they compute the same numbers. The normal CDF of the
baselines is ``scipy.special.ndtr`` when scipy is importable, else ``ndtr_cody`` (W. J. Cody's rational
Chebyshev erfc, vectorised numpy, ~1e-16 relative); each row's ``baseline`` says which.

Devices: every row uses every local device. ``pmjax bench`` calls ``use_all_cpu_cores`` before the JAX
backend starts, so a CPU gets one device per core (XLA's CPU client runs each fusion of a device's program on
one thread: with one device the other cores mostly idle); the header prints the count. Targets
(``TARGETS``) are checked for the platform at hand; the GPU targets are stated in float32 (``pmjax bench
--precision float32``) and a run in another precision reports them not measured.

Modules: ``baselines`` (the numpy baselines), ``books`` (synthetic books), ``rows`` (one ``bench_*`` per
row, ``SIZES``, ``TARGETS``), ``big_book`` (the 10,000-position rows), ``format`` (the text table); this one runs them and builds the document.
"""


from __future__ import annotations

import datetime as dt
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.bench.baselines import baseline_ndtr
from pmjax.bench.big_book import NAMES as BIG_BOOK_ROWS, bench_big_book
from pmjax.bench.rows import (ROW_NAMES, SIZES, TARGETS, bench_black76, bench_black76_price, bench_mc, bench_monitor,
                              bench_quantlib,
                              bench_hedge_map, bench_span, bench_var_accounts, bench_var_exact_tail, bench_whatif)


def device_info() -> dict:
    """The first local device (platform, kind, name), the device count and the host's cores."""
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return {"platform": d.platform, "kind": kind, "count": jax.local_device_count(), "name": f"{d.platform}: {kind}",
            "host": platform.processor() or platform.machine(), "cpu_count": cpu_count(),
            "cpu_devices": CPU_DEVICES.get("how")}


def default_sizes(platform_name: str) -> tuple[str, str]:
    """The preset ``pmjax bench`` runs when no size is given, and the notice saying so: the GPU target sizes
    (``full``) on an accelerator; on a CPU ``quick`` (about 30 s on 2 cores), where ``full`` would take hours."""
    if platform_name == "cpu":
        return "quick", ("no --sizes given: running the 'quick' preset (about 30 s on 2 CPU cores); --sizes full "
                         "runs the GPU target sizes (1e6 paths x 1,000 options, 1e5 accounts), hours on a CPU")
    return "full", (f"no --sizes given: running the 'full' preset, the GPU target sizes, on {platform_name} "
                    "(--quick for small sizes)")


def cpu_count() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


#: how ``use_all_cpu_cores`` set the CPU device count this process (shown in the bench header)
CPU_DEVICES: dict = {}


def use_all_cpu_cores(n: int | None = None) -> str:
    """Make the CPU backend one device per core (``n``, default the cores this process may use) so that
    ``pmjax bench`` on a CPU runs on every core: XLA's CPU client runs one partitioned program per device,
    each fusion of it on one thread, so one device leaves the other cores mostly idle. Must run before the
    JAX backend is initialised (importing jax or pmjax does not initialise it; the first device query or
    array does). Leaves the count alone when ``XLA_FLAGS`` already has
    ``--xla_force_host_platform_device_count``, ``JAX_NUM_CPU_DEVICES`` is set, ``n`` is 0 or the backend
    is already up. Returns (and keeps in ``CPU_DEVICES``) a line saying what was done. On a GPU machine
    this changes only the CPU backend, which the bench does not use."""
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a jax without it: try, and treat a refusal as "already up"
        backends_are_initialized = lambda: False  # noqa: E731

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        how = "host device count from XLA_FLAGS"
    elif os.environ.get("JAX_NUM_CPU_DEVICES"):
        how = "host device count from JAX_NUM_CPU_DEVICES"
    elif n == 0:
        how = "one CPU device (--cpu-devices 0)"
    elif backends_are_initialized():
        how = "JAX backend already initialised: device count as it was"
    else:
        n = cpu_count() if n is None else int(n)
        how = f"{n} CPU devices, one per core (pmjax bench)"
        try:
            jax.config.update("jax_num_cpu_devices", n)
        except AttributeError:  # an older jax without the option: the XLA flag does the same
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_force_host_platform_device_count={n}").strip()
        except RuntimeError:  # the backend started after all
            how = "JAX backend already initialised: device count as it was"
    CPU_DEVICES["how"] = how
    return how


def _run_rows(only: set, sz: dict, dtype, ndtr, ndtr_name: str, compile_times: dict, say) -> list[dict]:
    """The rows named in ``only``, in the bench's order."""
    results = []
    if only & {"black76_f32", "black76_autodiff_f32"}:
        say("black76 float32 ...")
        results += bench_black76(jnp.float32, sz, ndtr, ndtr_name, compile_times, closed_form="black76_f32" in only,
                                 autodiff="black76_autodiff_f32" in only)
    if "black76_price_f32" in only:
        say("black76 price only, float32 ...")
        results.append(bench_black76_price(sz, ndtr, ndtr_name))
    if only & {"black76_f64", "black76_autodiff_f64", "black76_f64_quantlib"}:
        say("black76 float64 ...")
        rows = bench_black76(jnp.float64, sz, ndtr, ndtr_name, compile_times,
                             closed_form=bool(only & {"black76_f64", "black76_f64_quantlib"}),
                             autodiff="black76_autodiff_f64" in only)
        results += [r for r in rows if r["name"] in only]
        if "black76_f64_quantlib" in only:
            say("QuantLib per option ...")
            ql_row = bench_quantlib(sz, rows[0]["pmjax"])
            if ql_row is not None:
                results.append(ql_row)
    if only & {"span_accounts", "compile"}:
        say("SPAN accounts ...")
        span_row, compile_row = bench_span(dtype, sz, ndtr, ndtr_name, compile_times)
        results += [r for r in (span_row, compile_row) if r["name"] in only]
    if "mc_revaluations" in only:
        say("Monte Carlo ...")
        results.append(bench_mc(dtype, sz, ndtr, ndtr_name, compile_times))
    if "mc_var_exact_tail" in only:
        say("Monte Carlo VaR, exact tail against full revaluation ...")
        results.append(bench_var_exact_tail(dtype, sz, ndtr, ndtr_name))
    if "hedge_map" in only:
        say("marginal margin map of a whole chain ...")
        results.append(bench_hedge_map(dtype, sz))
    if "var_accounts" in only:
        say("Monte Carlo VaR of many accounts on shared paths ...")
        results.append(bench_var_accounts(dtype, sz, ndtr, ndtr_name))
    if only & {"what_if_latency", "what_if_latency_span_deribit"}:
        say("what-if latency ...")
        results += bench_whatif(dtype, sz, ndtr, ndtr_name, span_only="what_if_latency" in only,
                                span_deribit="what_if_latency_span_deribit" in only)
    if only & {"monitor_update", "monitor_update_one_account"}:
        say("monitor --follow latency ...")
        results += bench_monitor(dtype, sz, many="monitor_update" in only, one="monitor_update_one_account" in only)
    if only & set(BIG_BOOK_ROWS):
        say(f"one account of {sz.get('big_book', 10_000):,} positions: rules, SPAN, Deribit ...")
        results += bench_big_book(dtype, sz, ndtr, ndtr_name, only)
    return results


def check_targets(results: list[dict], platform_name: str) -> list[dict]:
    """The ``TARGETS`` of the platform at hand ("cpu" or "gpu") for the rows in ``results``: each met, not
    met, or not measured (at this size or precision)."""
    by_name = {r["name"]: r for r in results}
    targets = []
    for name, plat, text, check, precision in TARGETS:
        if plat != platform_name or name not in by_name:
            continue
        row = by_name[name]
        if precision is not None and row.get("precision", precision) != precision:
            met, status = None, f"not measured at this precision (run with --precision {precision})"
        else:
            met = check(row)
            status = "not measured at this size" if met is None else ("met" if met else "not met")
        targets.append({"result": name, "target": text, "platform": plat, "status": status, "met": met})
    return targets


def run_bench(sizes: str | dict = "quick", *, dtype=jnp.float64, only=None, use_scipy: bool | None = None,
              progress=None) -> dict:
    """Run the benchmark; returns the SPEC bench document ``{"device", "jax", "results", ...}``.

    ``sizes``: a preset of ``SIZES`` or a dict like one; ``dtype``: precision of SPAN, Monte Carlo and the
    what-if (pricing runs both float32 and float64); ``only``: row names to run (default all);
    ``progress``: a callable taking a line of text (e.g. to stderr). Every row uses every local device
    (``use_all_cpu_cores`` before the backend starts makes one per CPU core)."""
    preset = sizes if isinstance(sizes, str) else "custom"
    sz = dict(SIZES[sizes]) if isinstance(sizes, str) else dict(sizes)
    only = set(only) if only else set(ROW_NAMES)
    unknown = only - set(ROW_NAMES)
    if unknown:
        raise ValueError(f"unknown bench row(s) {', '.join(sorted(unknown))}")
    say = progress or (lambda line: None)
    ndtr, ndtr_name = baseline_ndtr(use_scipy)
    compile_times: dict[str, float] = {}
    load_at_start = load_average()
    started = dt.datetime.now(dt.timezone.utc)
    say(f"{jax.local_device_count()} device(s): {jax.devices()[0].platform}")
    results = _run_rows(only, sz, dtype, ndtr, ndtr_name, compile_times, say)
    info = device_info()
    targets = check_targets(results, "cpu" if info["platform"] == "cpu" else "gpu")
    return {"device": info["name"], "jax": jax.__version__, "results": results,
            "device_info": info, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "numpy": np.__version__, "precision": str(jnp.dtype(dtype)), "sizes": {"preset": preset, **sz},
            "baseline_ndtr": ndtr_name, "first_call_compile_s": compile_times, "targets": targets,
            "load_average_at_start": load_at_start, "date": started.isoformat(timespec="seconds"),
            "seconds": (dt.datetime.now(dt.timezone.utc) - started).total_seconds()}


def load_average() -> list[float] | None:
    """The host's 1, 5 and 15-minute load averages (taken before the first row: other work skews CPU
    timings, and the bench's own work would show in them afterwards)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


__all__ = ["CPU_DEVICES", "check_targets", "cpu_count", "default_sizes", "device_info", "load_average", "run_bench",
           "use_all_cpu_cores"]
