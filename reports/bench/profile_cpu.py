"""Where the CPU time of pmjax bench goes (reports/bench/README.md): run with the repository's venv,
`python reports/bench/profile_cpu.py`; prints one JSON document.

Three child processes, so that each JAX runtime is set up before it starts:

- ``one_device``: JAX's default CPU client (one device), every core available;
- ``one_core``: the same, with the whole process (every XLA worker thread included) pinned to one core:
  the affinity is set before jax is imported, so the threads XLA creates later inherit it (pinning with
  ``os.sched_setaffinity(0, ...)`` after JAX has started pins the calling thread only);
- ``two_devices``: ``--xla_force_host_platform_device_count=2``, the options split over both devices (what
  ``pmjax bench`` does on this 2-core machine).

Per variant: options/s (median of 5), and from the compiled program XLA's fusion count, flops, transcendentals,
bytes accessed and temporary bytes per option; the thread count of the process. Monte Carlo: the share of
the random draws (one_device only).
"""

import json
import os
import subprocess
import sys

N = int(os.environ.get("PROFILE_OPTIONS", 1 << 21))


def child(mode: str) -> dict:
    if mode == "one_core":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before jax: every thread inherits it
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # float64: pmjax changes no JAX setting by itself
    from pmjax.bench import baselines as bench
    from pmjax.bench import books
    from pmjax.core import fast_greeks
    from pmjax.scenarios import montecarlo
    from pmjax.scenarios.mc_models import path_factors_batch
    from pmjax.core.kernel import black76, unit_greeks_jit
    from pmjax.io.market import load_market

    def med(fn, k=5):
        fn()
        ts = []
        for _ in range(k):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts))

    def hlo_stats(jitted, *args, per: int = N) -> dict:
        """XLA's counts for one call, per option; ``per``: the options one pass of the program's body covers
        (a ``lax.map`` loop is counted once, for one block)."""
        compiled = jitted.lower(*args).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        text = compiled.as_text()
        fusions = sum(1 for line in text.splitlines() if " fusion(" in line or "= fusion" in line.split("{")[0])
        mem = compiled.memory_analysis()
        return {"fusions": fusions, "flops_per_option": cost.get("flops", 0) / per,
                "transcendentals_per_option": cost.get("transcendentals", 0) / per,
                "bytes_accessed_per_option": cost.get("bytes accessed", 0) / per,
                "temp_bytes": mem.temp_size_in_bytes, "temp_bytes_per_option": mem.temp_size_in_bytes / N,
                "in_out_bytes_per_option": (mem.argument_size_in_bytes + mem.output_size_in_bytes) / N}

    out = {"mode": mode, "devices": jax.local_device_count(), "cores_allowed": len(os.sched_getaffinity(0))}
    nd, _ = bench.baseline_ndtr()
    for dtype in (jnp.float32, jnp.float64):
        tag = jnp.dtype(dtype).name
        book = fast_greeks.place_options(books.random_option_book(N, dtype, seed=1))
        r = {}
        variants = {
            "kernel_unit_greeks": (unit_greeks_jit, (book,)),
            "closed_form_unblocked": (jax.jit(fast_greeks.book_greeks), (book,)),
            "closed_form_blocked": (None, None),  # fast_greeks.unit_greeks_fast (its own jit)
            "price_only": (jax.jit(lambda b: black76(b.forward, b.strike, b.expiry_years, b.vol, b.is_call)),
                           (book,)),
        }
        for name, (fn, args) in variants.items():
            if fn is None:
                run = lambda: jax.block_until_ready(fast_greeks.unit_greeks_fast(book))  # noqa: E731
            else:
                run = lambda fn=fn, args=args: jax.block_until_ready(fn(*args))  # noqa: E731
            r[f"{name}_per_s"] = N / med(run)
            if fn is not None and mode == "one_device":
                r[f"{name}_xla"] = hlo_stats(fn, *args)
        if mode == "one_device":
            from pmjax.core.fast_greeks import _compiled, block_layout, default_block

            block, padded = block_layout(N, 1, default_block(dtype))
            fields = {f: getattr(book, f) for f in fast_greeks.FIELDS}
            r["closed_form_blocked_xla"] = {"block": block, **hlo_stats(
                _compiled(tuple(jax.local_devices()), block, N, padded), fields, per=block)}
            host = bench.host_book(books.random_option_book(N, dtype, seed=1))
            step = 1 << 16

            def run_numpy():
                for s in range(0, N, step):
                    bench.numpy_unit_greeks({k: (v[s:s + step] if np.ndim(v) else v) for k, v in host.items()}, nd)

            r["numpy_greeks_per_s"] = N / med(run_numpy, 3)
        out[f"black76_{tag}"] = r
    out["threads"] = len(os.listdir("/proc/self/task"))
    if mode == "one_device":
        market = load_market()
        for dtype in (jnp.float64, jnp.float32):
            tag = jnp.dtype(dtype).name
            for model in ("student_t", "normal"):
                settings = montecarlo.var_settings({"var": {"model": model, "historical": False}})
                spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
                paths, n_opt = 16384, 1000
                book = books.random_option_book(n_opt, dtype, seed=3, size=1024)
                t_all = med(lambda: montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=paths,
                                                               progress=False), 3)
                idx = jnp.arange(paths, dtype=jnp.uint32)
                key = jax.random.key(0)
                t_draws = med(lambda: jax.block_until_ready(path_factors_batch(spec, params, key, idx)), 3)
                out[f"mc_{model}_{tag}"] = {"paths": paths, "options": n_opt,
                                            "revaluations_per_s": paths * n_opt / t_all, "seconds": t_all,
                                            "draws_seconds": t_draws, "draws_share": t_draws / t_all}
    return out


def main():
    if len(sys.argv) > 1:
        print(json.dumps(child(sys.argv[1])))
        return
    doc = {"options": N, "cores": len(os.sched_getaffinity(0)), "load_average_before": os.getloadavg()}
    for mode in ("one_device", "one_core", "two_devices"):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        env["JAX_PLATFORMS"] = "cpu"
        if mode == "two_devices":
            env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        proc = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, env=env, check=True)
        doc[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    doc["load_average_after"] = os.getloadavg()
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
