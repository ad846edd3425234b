"""GPU-vs-CPU correctness for reports/bench/gpu_check.sh: the same figures computed on the CPU (a reference
process run with JAX_PLATFORMS=cpu) and on the default backend (the GPU), compared field by field.

    python reports/bench/gpu_check.py reference --out DIR/cpu_reference.npz [--small]
    python reports/bench/gpu_check.py compare --reference DIR/cpu_reference.npz --out DIR/gpu_correctness.json [--small]

Figures (float64 unless said): SPAN of random accounts (every field), the Deribit grid of the same accounts,
price + 6 Greeks of random options by the closed forms (``fast_greeks.unit_greeks_fast``) and by the autodiff
kernel, Monte Carlo losses of a 100-option book and their 99% VaR / ES (by full revaluation, and by
``var.revaluation: exact_tail``, which must equal it on the same device); and SPAN and the closed-form Greeks
in float32 on the device against the float64 CPU reference (float32's own error, loosely bounded).
``compare`` exits 1 when a check fails. Run from the repository root with PYTHONPATH=.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # float64: pmjax changes no JAX setting by itself
from pmjax.bench import books as bench
from pmjax.scenarios import montecarlo
from pmjax.io.config import load_config
from pmjax.batch.sharding import vmapped
from pmjax.measures.deribit import deribit_margin, deribit_params
from pmjax.core.fast_greeks import unit_greeks_fast
from pmjax.core.kernel import unit_greeks_jit
from pmjax.io.market import load_market
from pmjax.measures.span import span_margin, span_params
from pmjax.measures.var import tail_rank, var_es
from pmjax.scenarios import tail_screen

#: (accounts, options, Monte Carlo paths): full and --small (the CPU test of the script)
SIZES = {"full": (4096, 1 << 18, 200_000), "small": (64, 4096, 4000)}


def figures(dtype, small: bool) -> dict[str, np.ndarray]:
    """Every figure the check compares, as host arrays keyed 'group.field'."""
    accounts, options, paths = SIZES["small" if small else "full"]
    config = load_config()
    out = {}
    books = bench.random_account_books(accounts, 20, dtype, seed=31)
    span = vmapped(span_margin)(books, span_params(config, dtype=dtype))
    out.update({f"span.{k}": np.asarray(v) for k, v in vars(span).items()})
    deribit = vmapped(deribit_margin)(books, deribit_params(config, dtype=dtype))
    out.update({f"deribit.{k}": np.asarray(v) for k, v in vars(deribit).items()})
    opts = bench.random_option_book(options, dtype, seed=32)
    out.update({f"greeks.{k}": np.asarray(v) for k, v in unit_greeks_fast(opts).items()})
    out.update({f"autodiff.{k}": np.asarray(v) for k, v in unit_greeks_jit(jax.device_put(opts)).items()})
    if dtype == jnp.float64:
        market = load_market()
        spec, params, _ = montecarlo.build_model(market, montecarlo.var_settings({"var": {"historical": False}}),
                                                 dtype=dtype)
        book = bench.random_option_book(100, dtype, seed=33, size=128)
        losses = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=1 << 16, progress=False)
        est = var_es(losses, 0.99)
        out["mc.losses"] = np.asarray(losses)
        out["mc.var99"] = np.asarray([est.var])
        out["mc.es99"] = np.asarray([est.es])
        # var.revaluation: exact_tail on the same paths: equal to full revaluation on the same device (==)
        mixed, _ = tail_screen.exact_tail_losses(book, spec, params, seed=0, paths=paths, chunk=1 << 16,
                                                 top=tail_rank(paths, 0.99))
        exact = var_es(mixed, 0.99)
        out["mc.exact_tail_var99"] = np.asarray([exact.var])
        out["mc.exact_tail_es99"] = np.asarray([exact.es])
        out["mc.exact_tail_tail"] = np.asarray(exact.tail)
    return out


def gap(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b| (0.0: identical); integer fields: the fraction of entries that differ."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if np.issubdtype(b.dtype, np.integer) or b.dtype == bool:
        return float(np.mean(a != b)) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / max(scale, 1e-300) if b.size else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("reference", "compare"))
    p.add_argument("--out", required=True)
    p.add_argument("--reference", help="the reference .npz (compare)")
    p.add_argument("--small", action="store_true", help="small sizes (a CPU test of this script)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    device = f"{jax.devices()[0].platform}: {getattr(jax.devices()[0], 'device_kind', '')} x{jax.device_count()}"
    if args.mode == "reference":
        ref = figures(jnp.float64, args.small)
        np.savez_compressed(args.out, **ref)
        print(f"reference on {device}: {len(ref)} arrays in {time.perf_counter() - t0:.1f} s -> {args.out}")
        return 0
    ref = dict(np.load(args.reference))
    checks = []
    # float64 on the device against float64 on the CPU: the same arithmetic, only the transcendental functions'
    # last bits differ (measured on a CPU against itself: 0); bound 1e-10 of each field's scale. Integer fields
    # (worst scenarios, tiers, indices) may flip where two scenarios tie to the last bit: a fraction <= 1%
    got = figures(jnp.float64, args.small)
    for k, want in ref.items():
        g = gap(got[k], want)
        integer = np.issubdtype(want.dtype, np.integer) or want.dtype == bool
        bound = 0.01 if integer else 1e-10
        checks.append({"figure": k, "precision": "float64", "gap": g, "bound": bound, "ok": g <= bound})
    # float32 on the device against the float64 reference: float32's own rounding (tests/test_bench.py bounds
    # the Greeks at 1e-4 of the scale; SPAN measured 1e-5 on a CPU); bound 1e-3, the fields a VaR user reads
    got32 = figures(jnp.float32, args.small)
    for k in ("span.total", "span.scan_risk", "deribit.initial", "greeks.value", "greeks.delta", "greeks.gamma",
              "greeks.vega", "greeks.theta", "greeks.vanna", "greeks.volga"):
        g = gap(got32[k], ref[k])
        checks.append({"figure": k, "precision": "float32", "gap": g, "bound": 1e-3, "ok": g <= 1e-3})
    # exact tail against full revaluation on the device itself: identical figures and tail paths
    for k, full in (("mc.exact_tail_var99", "mc.var99"), ("mc.exact_tail_es99", "mc.es99")):
        same = bool(np.array_equal(got[k], got[full]))
        checks.append({"figure": f"{k} == {full}", "precision": "float64", "gap": 0.0 if same else 1.0,
                       "bound": 0.5, "ok": same})  # gap 1: not identical
    failed = [c for c in checks if not c["ok"]]
    doc = {"device": device, "jax": jax.__version__, "small": args.small, "seconds": time.perf_counter() - t0,
           "var99": {"device": float(got["mc.var99"][0]), "cpu": float(ref["mc.var99"][0])},
           "es99": {"device": float(got["mc.es99"][0]), "cpu": float(ref["mc.es99"][0])},
           "checks": checks, "failed": len(failed), "status": "ok" if not failed else "FAILED"}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"device {device}: {len(checks)} checks, {len(failed)} failed ({doc['seconds']:.1f} s)")
    print(f"  99% VaR device {doc['var99']['device']:.10g} cpu {doc['var99']['cpu']:.10g};  "
          f"ES device {doc['es99']['device']:.10g} cpu {doc['es99']['cpu']:.10g}")
    worst = sorted(checks, key=lambda c: -c["gap"] / c["bound"])[:8]
    for c in worst:
        print(f"  {c['figure']:<36} {c['precision']}  gap {c['gap']:.3e}  bound {c['bound']:.0e}  "
              f"{'ok' if c['ok'] else 'FAILED'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
