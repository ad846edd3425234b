"""``pmjax price --market M INSTRUMENT...``"""

from __future__ import annotations

from pmjax.cli.app import dtype_of, notices
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("instruments", nargs="+", metavar="INSTRUMENT", help="Deribit names, e.g. BTC-27MAR26-100000-C")
    p.add_argument("--market", default=DEFAULT_MARKET,
                   help=f"market file (YAML/JSON/Deribit chain CSV) or bundled name (default {DEFAULT_MARKET})")


def run(args):
    from pmjax.apps.tables import table
    from pmjax.core.book import years_to_expiry
    from pmjax.core.greeks import price_instruments
    from pmjax.core.instruments import parse_instrument
    from pmjax.io.market import load_market

    instruments = [parse_instrument(s, source="command line", field=f"INSTRUMENT {s}") for s in args.instruments]
    market = load_market(args.market)
    notices(market.notices)  # on stderr, with or without --json
    for s, inst in zip(args.instruments, instruments):
        years_to_expiry(inst, market, source="command line", field=f"INSTRUMENT {s}")
    rows = price_instruments(instruments, market, dtype=dtype_of(args))
    doc = {"as_of": market.as_of.isoformat(), "market": market.source, "instruments": rows}
    text = table([[r["instrument"], r["price_usd"], r["price_coin"], r["forward"], r["vol"], r["delta"], r["gamma"],
                   r["vega"], r["theta"]] for r in rows],
                 ["instrument", "price_usd", "price_coin", "forward", "vol", "delta", "gamma", "vega", "theta"],
                 title=f"market {market.source} as of {market.as_of:%Y-%m-%d %H:%M:%S} UTC "
                       "(Greeks in USD per coin: delta dV/dS, gamma per USD, vega per 1.00 vol, theta per day)")
    return doc, text
