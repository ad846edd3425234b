"""Where the CPU time of pmjax bench goes (reports/bench/README.md): run with the repository's venv,
`python reports/bench/profile_cpu.py`; prints one JSON document."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import pmjax  # noqa: F401  (float64 on)
from pmjax import bench, montecarlo
from pmjax.kernel import black76, unit_greeks_jit
from pmjax.market import load_market


def med(fn, k=5):
    fn()
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def closed_form(b):
    """The numpy baseline's closed forms, in jnp (options only): what the kernel's autodiff computes."""
    F, K, T, vol, S = b.forward, b.strike, b.expiry_years, b.vol, b.spot
    sd = vol * jnp.sqrt(T)
    d1 = jnp.log(F / K) / sd + 0.5 * sd
    d2 = d1 - sd
    sign = jnp.where(b.is_call, 1.0, -1.0).astype(F.dtype)
    N = jax.scipy.special.ndtr
    price = sign * (F * N(sign * d1) - K * N(sign * d2))
    ratio = jnp.where(b.inverse, S / F, 1.0).astype(F.dtype)
    pdf = jnp.exp(-0.5 * d1 * d1) * 0.3989422804014327
    vega = F * pdf * jnp.sqrt(T) * ratio
    theta = black76(F, K, jnp.maximum(T - 1 / 365, 0.0), vol, b.is_call) * ratio - price * ratio
    return (price * ratio, sign * N(sign * d1) * F * ratio / S, pdf / sd * F * ratio / (S * S), vega, theta,
            -F * pdf * d2 / vol * ratio / S, vega * d1 * d2 / vol)


out = {"device": str(jax.devices()[0]), "cores": len(os.sched_getaffinity(0))}
n = 1 << 21
nd, _ = bench.baseline_ndtr()
for dtype in (jnp.float32, jnp.float64):
    tag = jnp.dtype(dtype).name
    book = jax.device_put(bench.random_option_book(n, dtype, seed=1))
    host = bench.host_book(bench.random_option_book(n, dtype, seed=1))
    cf = jax.jit(closed_form)
    price_only = jax.jit(lambda b: black76(b.forward, b.strike, b.expiry_years, b.vol, b.is_call))
    compiled = unit_greeks_jit.lower(book).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    cf_cost = cf.lower(book).compile().cost_analysis()
    cf_cost = cf_cost[0] if isinstance(cf_cost, list) else cf_cost
    mem = compiled.memory_analysis()
    t_kernel = med(lambda: jax.block_until_ready(unit_greeks_jit(book)))
    t_cf = med(lambda: jax.block_until_ready(cf(book)))
    t_price = med(lambda: jax.block_until_ready(price_only(book)))
    t_np = med(lambda: bench.numpy_unit_greeks(host, nd), 3)
    t_np_price = med(lambda: bench.black76_np(host["forward"], host["strike"], host["expiry_years"], host["vol"],
                                              host["is_call"], nd), 3)
    aff = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(aff)})
    t_kernel_1core = med(lambda: jax.block_until_ready(unit_greeks_jit(book)))
    os.sched_setaffinity(0, aff)
    bytes_moved = mem.argument_size_in_bytes + mem.output_size_in_bytes
    out[f"black76_{tag}"] = {
        "options": n,
        "kernel_unit_greeks_per_s": n / t_kernel, "kernel_one_core_per_s": n / t_kernel_1core,
        "jnp_closed_form_greeks_per_s": n / t_cf, "jnp_price_only_per_s": n / t_price,
        "numpy_greeks_per_s": n / t_np, "numpy_price_only_per_s": n / t_np_price,
        "xla_flops_per_option_kernel": cost.get("flops", 0) / n,
        "xla_transcendentals_per_option_kernel": cost.get("transcendentals", 0) / n,
        "xla_flops_per_option_closed_form": cf_cost.get("flops", 0) / n,
        "xla_transcendentals_per_option_closed_form": cf_cost.get("transcendentals", 0) / n,
        "bytes_in_out_per_option": bytes_moved / n,
        "achieved_GB_per_s": bytes_moved / t_kernel / 1e9,
    }

market = load_market()
for dtype in (jnp.float64, jnp.float32):
    tag = jnp.dtype(dtype).name
    for model in ("student_t", "normal"):
        settings = montecarlo.var_settings({"var": {"model": model, "historical": False}})
        spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
        paths, n_opt = 16384, 1000
        book = bench.random_option_book(n_opt, dtype, seed=3, size=1024)
        t_all = med(lambda: montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=paths,
                                                       progress=False), 3)
        idx = jnp.arange(paths, dtype=jnp.uint32)
        key = jax.random.key(0)
        t_draws = med(lambda: jax.block_until_ready(montecarlo._factors(spec, params, key, idx)), 3)
        out[f"mc_{model}_{tag}"] = {"paths": paths, "options": n_opt, "revaluations_per_s": paths * n_opt / t_all,
                                    "seconds": t_all, "draws_seconds": t_draws,
                                    "draws_share": t_draws / t_all}
print(json.dumps(out, indent=1))
