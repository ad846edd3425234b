"""``pmjax hedge-map BOOK --market M [--method span,deribit,var] [--instruments options,futures,perpetuals]
[--top N] [--config C] [--paths N] [--seed S]``"""

from __future__ import annotations

from pmjax.apps.names import KINDS, MAP_METHODS
from pmjax.cli.commands.margin import load_inputs
from pmjax.core.errors import InputError
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("portfolio", metavar="BOOK", help="portfolio file (YAML/JSON/CSV)")
    p.add_argument("--market", default=DEFAULT_MARKET,
                   help=f"market file (YAML/JSON/Deribit chain CSV) or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--method", default="span,deribit",
                   help=f"comma-separated methods (maps: {', '.join(MAP_METHODS)}; default span,deribit)")
    p.add_argument("--instruments", default=",".join(KINDS),
                   help=f"contracts to list, comma-separated from {', '.join(KINDS)} (default all)")
    p.add_argument("--top", type=int, default=10, help="contracts shown per method and direction (default 10)")
    p.add_argument("--config", default=None, help="config YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="var: Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="var: Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="var: confidence (default: config var.confidence)")


def _names(text: str, known, source: str) -> list[str]:
    names = list(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    if not names:
        raise InputError("nothing given", source=source)
    bad = [m for m in names if m not in known]
    if bad:
        raise InputError(f"unknown {', '.join(bad)} (choose from {', '.join(known)})", source=source)
    return names


def run(args):
    from pmjax.apps.hedge_map import hedge_map, hedge_map_section
    from pmjax.apps.tables import table
    from pmjax.apps.whatif import WhatIf

    methods = _names(args.method, MAP_METHODS + ("rules",), "--method")
    if "rules" in methods:
        raise InputError("rules margin pairs strategies and has no marginal map (maps: span, deribit, var)",
                         source="--method")
    kinds = _names(args.instruments, KINDS, "--instruments")
    if args.top < 1:
        raise InputError(f"must be at least 1, got {args.top}", source="--top")
    portfolio, market, config, dtype = load_inputs(args)
    hmap = hedge_map(portfolio, market, config, methods=methods, kinds=kinds, dtype=dtype)
    doc = hedge_map_section(hmap, top=args.top)
    # the exact what-if of one coin bought, for the contracts shown (SPAN and the Deribit grid: the warm path)
    fast = [m for m in methods if m in ("span", "deribit")]
    if fast:
        what_if = WhatIf(portfolio, market, config, methods=tuple(fast), dtype=dtype)
        for m in fast:
            for side in ("best", "worst"):
                for r in doc["ranked"][m][side]:
                    r["what_if_1_coin"] = what_if.incremental([(r["instrument"], 1.0)])["incremental"][m]
    cur = portfolio.margin_currency
    parts = [f"Marginal margin of {len(hmap.instruments):,} listed contracts for account {portfolio.account} on "
             f"{market.source} ({cur} per coin bought; negative: buying lowers the margin)"]
    for m in methods:
        for side, label in (("best", "lower the margin most when bought"), ("worst", "raise it most when bought")):
            rows = [[r["instrument"], r["marginal"], r.get("what_if_1_coin", "-")] for r in doc["ranked"][m][side]]
            parts.append(table(rows, ["instrument", f"d {m} / d qty", "what-if +1 coin"],
                               title=f"{m} (now {hmap.headline[m]:,.6g} {cur}): contracts that {label}"))
    if "var" in methods:
        parts.append("var: d ES / d quantity with the tail paths held fixed (no what-if: a new run per trade)")
    return doc, "\n\n".join(parts)
