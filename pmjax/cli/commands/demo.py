"""``pmjax demo [--out DIR]``: the seed's strategies and portfolio on the bundled market, every method, report
written (default reports/demo)."""

from __future__ import annotations

from pmjax.apps.names import DEMO_OUT as DEFAULT_OUT
from pmjax.cli.app import dtype_of
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"directory for report.html, its PNG plots and report.json (default {DEFAULT_OUT})")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market (default the bundled {DEFAULT_MARKET})")


def run(args):
    from pmjax.apps.demo import run_demo

    return run_demo(args.out, market_name=args.market, dtype=dtype_of(args))
