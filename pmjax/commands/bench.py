"""``pmjax bench [--quick] [--sizes tiny|quick|medium|full] [--only ROWS] [--no-scipy]``"""

from __future__ import annotations

import sys

from ..cli import dtype_of
from ..errors import InputError


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="small sizes (about 30 s on 2 CPU cores); same as --sizes quick")
    p.add_argument("--sizes", choices=("tiny", "quick", "medium", "full"), default=None,
                   help="size preset: tiny (tests), quick, medium (a few minutes on 2 CPU cores), full (the GPU "
                        "targets: 1e6 paths x 1,000 options, 1e5 accounts x 20 positions); default full")
    p.add_argument("--only", default=None, metavar="ROWS",
                   help="comma-separated rows to run: black76_f32, black76_price_f32, black76_f64, "
                        "black76_f64_quantlib, span_accounts, mc_revaluations, what_if_latency, compile")
    p.add_argument("--no-scipy", action="store_true",
                   help="baselines use the numpy-only normal CDF (Cody's erfc) even when scipy is importable")


def run(args):
    from ..bench import ROW_NAMES, format_bench, run_bench

    if args.quick and args.sizes not in (None, "quick"):
        raise InputError(f"--quick contradicts --sizes {args.sizes}", field="--sizes")
    sizes = "quick" if args.quick else (args.sizes or "full")
    only = None
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in only if s not in ROW_NAMES]
        if bad:
            raise InputError(f"unknown row {bad[0]!r} (choose from {', '.join(ROW_NAMES)})", field="--only")
    say = None if args.json else (lambda line: print(f"pmjax: bench: {line}", file=sys.stderr, flush=True))
    doc = run_bench(sizes, dtype=dtype_of(args), only=only, use_scipy=False if args.no_scipy else None, progress=say)
    return doc, format_bench(doc)
