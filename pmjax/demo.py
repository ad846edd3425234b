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


#: strike grid the scaled seed strikes are rounded to (USD): keeps the seed's spread widths distinct
STRIKE_TICK = {"BTC": 100.0, "ETH": 10.0}


def scaled_strike(market: Market, underlying: str, strike: float) -> float:
    """The seed's ``strike`` scaled by (market spot / seed spot), rounded to ``STRIKE_TICK``."""
    tick = STRIKE_TICK[underlying]
    return float(round(strike * market.spot(underlying) / SEED_SPOT[underlying] / tick) * tick)


def seed_portfolio(market: Market, *, scale_to_market: bool = True, margin_currency: str = "USD") -> Portfolio:
    """The seed's BTC/ETH book: long 1 BTC spot, short 1 BTC 75k call (30 days), long 1 ETH spot,
    long 2 ETH 3k puts (60 days), short 1 ETH 3.8k/3.9k call and 3.2k/3.1k put iron condor (30 days).

    Strikes are the seed's, scaled by (market spot / seed spot) when ``scale_to_market`` (rounded to
    ``STRIKE_TICK``); expiries are the listed ones nearest to the seed's 30 and 60 days.
    """
    def option(u, days, strike, right, qty):
        e = listed_expiry(market, u, days)
        k = scaled_strike(market, u, strike) if scale_to_market else float(strike)
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


def rescaled_market(market: Market, underlying: str, new_spot: float) -> Market:
    """``market`` with ``underlying`` moved to ``new_spot``: forwards and smile strikes scale in proportion,
    so every smile is the same in moneyness (used to place the seed's strategies at its BTC = 70,000)."""
    import copy

    m = copy.deepcopy(market)
    u = m.underlyings[underlying]
    f = new_spot / u.spot
    u.spot = new_spot
    u.forwards = {e: v * f for e, v in u.forwards.items()}
    for s in u.smiles.values():
        s.strikes = s.strikes * f
    m.source = f"{market.source} with {underlying} rescaled to {new_spot:,.0f}"
    return m


def seed_strategies(market: Market, *, scale_to_market: bool = True) -> list[Portfolio]:
    """The seed's BTC strategy table (written at BTC = 70,000; 1 coin per leg):
    short put spread 70k/69k, iron condor 72k/73k calls and 68k/67k puts, long calendar 70k (front month
    short, back month long), short 70k straddle hedged with the front future to zero delta.

    With ``scale_to_market`` strikes scale by (market BTC / 70,000) (see ``scaled_strike``); else the
    seed's strikes are used as they are (give a market rescaled to 70,000, see ``rescaled_market``).
    """
    u = "BTC"
    front, back = listed_expiry(market, u, 30), listed_expiry(market, u, 90)

    def opt(k, right, qty, expiry=front):
        strike = scaled_strike(market, u, k) if scale_to_market else float(k)
        return Position(Instrument(u, "option", "inverse", expiry, strike, right), qty)

    def book(name, positions):
        return make_portfolio(positions, account=name, source="seed strategies")

    straddle = [opt(70_000, "call", -1.0), opt(70_000, "put", -1.0)]
    from .greeks import portfolio_greeks

    delta = portfolio_greeks(make_portfolio(straddle, source="seed"), market)["by_underlying"][u]["delta"]
    hedge = Position(Instrument(u, "future", "inverse", front), -round(delta, 4))
    return [
        book("short put spread 70k/69k", [opt(70_000, "put", -1.0), opt(69_000, "put", 1.0)]),
        book("iron condor 72k/73k 68k/67k", [opt(72_000, "call", -1.0), opt(73_000, "call", 1.0),
                                              opt(68_000, "put", -1.0), opt(67_000, "put", 1.0)]),
        book("long calendar 70k", [opt(70_000, "call", -1.0, front), opt(70_000, "call", 1.0, back)]),
        book("short straddle 70k + future hedge", straddle + [hedge]),
    ]
