"""``pmjax demo [--out DIR]``: the seed's strategies and portfolio on the bundled market, every method."""

from __future__ import annotations

from ..cli import dtype_of
from ..demo import run_demo
from ..market import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("--out", default=None, help="directory for report.html, its PNG plots and report.json")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market (default the bundled {DEFAULT_MARKET})")


def run(args):
    return run_demo(args.out, market_name=args.market, dtype=dtype_of(args))
