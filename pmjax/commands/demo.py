"""``pmjax demo [--out DIR]``: the seed portfolio on the bundled market."""

from __future__ import annotations

import os

from ..cli import dtype_of
from ..demo import seed_portfolio
from ..greeks import portfolio_greeks
from ..market import DEFAULT_MARKET, load_market
from ..tables import table


def add_arguments(p):
    p.add_argument("--out", default=None, help="directory for the report files")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market (default the bundled {DEFAULT_MARKET})")


def run(args):
    market = load_market(args.market)
    book = seed_portfolio(market)
    g = portfolio_greeks(book, market, dtype=dtype_of(args))
    cols = ["value", "delta", "gamma", "vega", "theta", "vanna", "volga"]
    pos = table([[p["instrument"], p["quantity"]] + [p[c] for c in cols] for p in g["positions"]],
                ["instrument", "quantity"] + cols,
                title=f"Seed BTC/ETH portfolio on {market.source} (as of {market.as_of:%Y-%m-%d %H:%M} UTC; "
                      f"BTC {market.spot('BTC'):,.2f}, ETH {market.spot('ETH'):,.2f}; strikes scaled from the "
                      "seed's BTC 70,000 / ETH 3,500). USD, quantity included.")
    und = table([[k] + [v[c] for c in cols] for k, v in g["by_underlying"].items()], ["underlying"] + cols,
                title="By underlying")
    exp = table([[k] + [v[c] for c in cols] for k, v in g["by_expiry"].items()], ["expiry"] + cols,
                title="By expiry")
    doc = {"as_of": market.as_of.isoformat(), "market": market.source, "seed_portfolio": g}
    text = "\n\n".join([pos, und, exp])
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        import json

        from ..cli import _jsonable

        with open(os.path.join(args.out, "demo.json"), "w") as fh:
            json.dump(_jsonable(doc), fh, indent=1)
        with open(os.path.join(args.out, "demo.txt"), "w") as fh:
            fh.write(text + "\n")
        text += f"\n\nwritten: {args.out}/demo.json, {args.out}/demo.txt"
    return doc, text
