"""``pmjax bench [--quick] [--sizes tiny|quick|medium|full] [--only ROWS] [--no-scipy] [--cpu-devices N]``

On a CPU the bench makes one JAX device per core before the backend starts (``bench.use_all_cpu_cores``;
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``JAX_NUM_CPU_DEVICES`` given by the user win), so
every row runs on every core; the header prints the device count. On a GPU the targets are float32:
``pmjax bench --precision float32 --json`` (reports/bench/README.md, reports/bench/gpu_check.sh).
"""

from __future__ import annotations

import sys

from pmjax.cli.app import dtype_of
from pmjax.core.errors import InputError


def add_arguments(p):
    from pmjax.bench.names import ROW_NAMES

    p.add_argument("--quick", action="store_true",
                   help="small sizes (about 30 s on 2 CPU cores); same as --sizes quick")
    p.add_argument("--sizes", choices=("tiny", "quick", "medium", "full"), default=None,
                   help="size preset: tiny (tests), quick, medium (a few minutes on 2 CPU cores), full (the GPU "
                        "targets: 1e6 paths x 1,000 options, 1e5 accounts x 20 positions); default full on a GPU, "
                        "quick on a CPU (a notice says which)")
    p.add_argument("--only", default=None, metavar="ROWS",
                   help=f"comma-separated rows to run: {', '.join(ROW_NAMES)}")
    p.add_argument("--no-scipy", action="store_true",
                   help="baselines use the numpy-only normal CDF (Cody's erfc) even when scipy is importable")
    p.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                   help="JAX CPU devices to run on (default: one per core; 0: leave JAX's default of one)")


def run(args):
    from pmjax.bench.format import format_bench
    from pmjax.bench.harness import run_bench, use_all_cpu_cores
    from pmjax.bench.names import ROW_NAMES

    if args.quick and args.sizes not in (None, "quick"):
        raise InputError(f"--quick contradicts --sizes {args.sizes}", field="--sizes")
    if args.cpu_devices is not None and args.cpu_devices < 0:
        raise InputError(f"--cpu-devices must be >= 0, got {args.cpu_devices}", field="--cpu-devices")
    sizes = "quick" if args.quick else args.sizes
    only = None
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in only if s not in ROW_NAMES]
        if bad:
            raise InputError(f"unknown row {bad[0]!r} (choose from {', '.join(ROW_NAMES)})", field="--only")
    use_all_cpu_cores(args.cpu_devices)  # before anything starts the JAX backend
    if sizes is None:
        import jax

        from pmjax.bench.harness import default_sizes

        sizes, notice = default_sizes(jax.default_backend())
        print(f"pmjax: notice: bench: {notice}", file=sys.stderr, flush=True)
    say = None if args.json else (lambda line: print(f"pmjax: bench: {line}", file=sys.stderr, flush=True))
    doc = run_bench(sizes, dtype=dtype_of(args), only=only, use_scipy=False if args.no_scipy else None, progress=say)
    return doc, format_bench(doc)
