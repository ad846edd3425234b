"""The seed's portfolios, placed on a market: strikes scaled to its prices, expiries listed on it."""

from __future__ import annotations

import datetime as dt

from .instruments import Instrument
from .market import Market
from .portfolio import Portfolio, Position, make_portfolio

#: the seed's illustrative prices, against which its strikes are written
SEED_SPOT = {"BTC": 70_000.0, "ETH": 3_500.0}


def listed_expiry(market: Market, underlying: str, days: float) -> dt.datetime:
    """The expiry nearest to ``days`` from as_of among the market's smiles (or exactly ``days`` away at 08:00)."""
    m = market.underlying(underlying)
    target = market.as_of + dt.timedelta(days=days)
    if m.smiles:
        return min(m.smiles, key=lambda e: abs((e - target).total_seconds()))
    return target.replace(hour=8, minute=0, second=0, microsecond=0)


def listed_strike(market: Market, underlying: str, expiry: dt.datetime, strike: float) -> float:
    """The quoted strike nearest to ``strike`` at ``expiry`` (or ``strike`` rounded to 3 significant digits)."""
    smile = market.underlying(underlying).smiles.get(expiry)
    if smile is not None:
        return float(min(smile.strikes, key=lambda k: abs(k - strike)))
    return float(f"{strike:.3g}")


def seed_portfolio(market: Market, *, scale_to_market: bool = True, margin_currency: str = "USD") -> Portfolio:
    """The seed's BTC/ETH book: long 1 BTC spot, short 1 BTC 75k call (30 days), long 1 ETH spot,
    long 2 ETH 3k puts (60 days), short 1 ETH 3.8k/3.9k call and 3.2k/3.1k put iron condor (30 days).

    Strikes are the seed's, scaled by (market spot / seed spot) when ``scale_to_market``, then moved to
    the nearest listed strike.
    """
    def option(u, days, strike, right, qty):
        e = listed_expiry(market, u, days)
        f = market.spot(u) / SEED_SPOT[u] if scale_to_market else 1.0
        k = listed_strike(market, u, e, strike * f) if scale_to_market else strike
        return Position(Instrument(u, "option", "inverse", e, k, right), qty)

    positions = [
        Position(Instrument("BTC", "spot", "linear"), 1.0),
        option("BTC", 30, 75_000, "call", -1.0),
        Position(Instrument("ETH", "spot", "linear"), 1.0),
        option("ETH", 60, 3_000, "put", 2.0),
        option("ETH", 30, 3_800, "call", -1.0),
        option("ETH", 30, 3_900, "call", 1.0),
        option("ETH", 30, 3_200, "put", -1.0),
        option("ETH", 30, 3_100, "put", 1.0),
    ]
    return make_portfolio(positions, account="seed-btc-eth", margin_currency=margin_currency, source="seed")
