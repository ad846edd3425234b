"""``pmjax hedge BOOK --market M --method span|deribit|var [--instruments futures,perpetuals[,options]]
[--max-trades K] [--max-notional X] [--cost BPS] [--lot L] [--out-book FILE] [--config C] [--paths N] [--seed S]``"""

from __future__ import annotations

from pmjax.apps.names import DEFAULT_INSTRUMENTS, HEDGE_METHODS
from pmjax.cli.app import notices
from pmjax.cli.commands.margin import load_inputs
from pmjax.core.errors import InputError
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("portfolio", metavar="BOOK", help="portfolio file (YAML/JSON/CSV)")
    p.add_argument("--market", default=DEFAULT_MARKET,
                   help=f"market file (YAML/JSON/Deribit chain CSV) or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--method", default="span", help=f"the margin to minimise: {', '.join(HEDGE_METHODS)}, or several joined by commas for the "
                        "largest of them (default span)")
    p.add_argument("--instruments", default=",".join(DEFAULT_INSTRUMENTS),
                   help="candidate contracts: kinds (futures, perpetuals, options) and/or contract names, "
                        "comma-separated (default futures,perpetuals)")
    p.add_argument("--max-trades", type=int, default=None, help="at most this many contracts traded")
    p.add_argument("--max-notional", type=float, default=None,
                   help="gross notional of the trades at most this (margin currency; |quantity| x spot)")
    p.add_argument("--cost", type=float, default=0.0,
                   help="trading cost, basis points of the notional traded, added to the margin minimised (default 0)")
    p.add_argument("--lot", type=float, default=None, help="trade in multiples of this many coins (default: any)")
    p.add_argument("--compare", default="rules,span,deribit",
                   help="methods whose before and after are shown besides --method (default rules,span,deribit)")
    p.add_argument("--out-book", default=None, help="write the book plus the trades here (.yaml/.json)")
    p.add_argument("--config", default=None, help="config YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="var: Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="var: Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="var: confidence (default: config var.confidence)")


def run(args):
    from pmjax.apps.hedge import check_request, hedge, hedge_section
    from pmjax.io.portfolio import write_portfolio

    method = args.method
    compare = [m.strip().lower() for m in args.compare.split(",") if m.strip()]
    bad = [m for m in compare if m not in ("rules", "span", "deribit", "var")]
    if bad:
        raise InputError(f"unknown {', '.join(bad)} (choose from rules, span, deribit, var)", source="--compare")
    if args.out_book is not None and not args.out_book.lower().endswith((".yaml", ".yml", ".json")):
        raise InputError("must end in .yaml, .yml or .json", source="--out-book")
    check_request(method, args.max_trades, args.max_notional, args.cost, args.lot)  # before loading anything
    portfolio, market, config, dtype = load_inputs(args)
    result = hedge(portfolio, market, config, method=method, instruments=args.instruments,
                   max_trades=args.max_trades, max_notional=args.max_notional, cost_bps=args.cost, lot=args.lot,
                   compare=compare, dtype=dtype)
    notices(result.notices)
    if args.out_book is not None:
        write_portfolio(result.portfolio, args.out_book, market)
    doc = hedge_section(result)
    return doc, render(doc, portfolio.account, args)


def render(doc: dict, account: str, args) -> str:
    from pmjax.apps.tables import table

    cur = doc["currency"]
    lp = doc["lp"]
    head = (f"Hedge minimising {doc['method']} for account {account} over {doc['candidates']:,} candidate contracts "
            f"({args.instruments}); {lp['kind'].upper()} by {lp['solver']}: {lp['message']}")
    parts = [head]
    if doc["trades"]:
        parts.append(table([[t["instrument"], t["quantity"]] for t in doc["trades"]], ["instrument", "quantity (coins)"],
                           title="Trades"))
    else:
        parts.append("No trade: none of the candidates lowers the margin.")
    rows = [[m, doc["before"][m], doc["after"][m], doc["after"][m] - doc["before"][m]] for m in doc["before"]]
    parts.append(table(rows, ["method", f"before ({cur})", f"after ({cur})", "change"],
                       title="Margin before and after (pmjax margin on the book plus the trades)"))
    line = f"cost {doc['cost']:,.6g} {cur}, notional traded {doc['notional']:,.6g} {cur}"
    if doc["method"] == "span" and doc["premium"]:
        line += f", option premium paid {doc['premium']:,.6g} {cur} (counted in the objective)"
    parts.append(line + f"; objective {doc['objective']['before']:,.6g} -> {doc['objective']['after']:,.6g} {cur} "
                 f"(linear program {lp['objective_at_solution']:,.6g}, exact at its solution {lp['exact_objective']:,.6g})")
    if doc["trades"]:
        trades = ",".join(f"{t['instrument']}:{t['quantity']!r}" for t in doc["trades"])
        parts.append(f"check: pmjax margin {args.portfolio} --market {args.market} --method {doc['method']} "
                     f"--what-if \"{trades}\"")
    if args.out_book:
        parts.append(f"book plus trades written to {args.out_book}")
    return "\n\n".join(parts)
