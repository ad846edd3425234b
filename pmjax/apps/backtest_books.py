"""The backtest's stationary books: legs re-struck every day at fixed moneyness and fixed days to expiry.

``representative_books()``: the five books of the first backtest (``FIRST_BOOKS``: long delta or short vol,
four of them BTC only) and five beside them (``MORE_BOOKS``): short delta, long vol, short-dated, deep
out-of-the-money and ETH only. Options are inverse (Deribit's); 1 coin per leg.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from pmjax.core.instruments import Instrument
from pmjax.core.units import SECONDS_PER_DAY

#: the books of the first backtest
FIRST_BOOKS = ("long BTC", "covered call", "short straddle", "short put spread", "seed BTC/ETH")
#: the books added beside them (issue 19)
MORE_BOOKS = ("short delta", "long straddle", "short 4-day straddle", "short OTM wings", "ETH short strangle")


@dataclasses.dataclass(frozen=True)
class Leg:
    """One leg of a stationary book: strike = moneyness x spot, expiry ``days`` ahead, ``quantity`` coins."""

    underlying: str
    kind: str  # option | future | perpetual | spot
    quantity: float
    right: str | None = None
    moneyness: float = 1.0
    days: float = 0.0
    settlement: str = "inverse"


def seed_legs() -> list[Leg]:
    """``demo.seed_portfolio`` as stationary legs: its strikes over the seed's prices, its 30/60 days."""
    from pmjax.apps.demo import SEED_SPOT, seed_portfolio
    from pmjax.core.market import Market, UnderlyingMarket

    as_of = dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc)
    mkt = Market(as_of, {u: UnderlyingMarket(s, rate=0.0, atm=0.5) for u, s in SEED_SPOT.items()})
    out = []
    for p in seed_portfolio(mkt, scale_to_market=False).positions:
        i = p.instrument
        days = (i.expiry - as_of).total_seconds() / SECONDS_PER_DAY if i.expiry else 0.0
        out.append(Leg(i.underlying, i.kind, p.quantity, i.right, (i.strike or SEED_SPOT[i.underlying])
                       / SEED_SPOT[i.underlying], days, i.settlement))
    return out


def representative_books() -> dict[str, list[Leg]]:
    """The backtested books: ``FIRST_BOOKS`` then ``MORE_BOOKS`` (docs/methodology.md section 10.5).

    The added five: short delta = short 1 BTC perpetual (inverse) and long 1 put 90% 30 days (delta about
    -1.2); long straddle = long 1 call and 1 put at the money, 30 days; short 4-day straddle = short 1 call and 1
    put at the money, 4 days to expiry (re-struck daily, so always 4 days out); short OTM wings = short 1 put 80%
    and 1 call 120%, 30 days (about 10-delta at a 60% vol); ETH short strangle = short 1 ETH put 90% and 1 ETH
    call 110%, 30 days."""
    call = functools.partial(Leg, "BTC", "option", right="call", days=30.0)
    put = functools.partial(Leg, "BTC", "option", right="put", days=30.0)
    eth = functools.partial(Leg, "ETH", "option", days=30.0)
    return {
        "long BTC": [Leg("BTC", "spot", 1.0, settlement="linear")],
        "covered call": [Leg("BTC", "spot", 1.0, settlement="linear"), call(-1.0, moneyness=1.10)],
        "short straddle": [call(-1.0, moneyness=1.0), put(-1.0, moneyness=1.0)],
        "short put spread": [put(-1.0, moneyness=0.95), put(1.0, moneyness=0.90)],
        "seed BTC/ETH": seed_legs(),
        "short delta": [Leg("BTC", "perpetual", -1.0), put(1.0, moneyness=0.90)],
        "long straddle": [call(1.0, moneyness=1.0), put(1.0, moneyness=1.0)],
        "short 4-day straddle": [call(-1.0, moneyness=1.0, days=4.0), put(-1.0, moneyness=1.0, days=4.0)],
        "short OTM wings": [put(-1.0, moneyness=0.80), call(-1.0, moneyness=1.20)],
        "ETH short strangle": [eth(-1.0, right="put", moneyness=0.90), eth(-1.0, right="call", moneyness=1.10)],
    }


def day_portfolio(legs: list[Leg], market):
    """The legs struck on ``market`` as a portfolio (for the rules method)."""
    from pmjax.core.portfolio import Position, make_portfolio

    positions = []
    for g in legs:
        expiry = market.as_of + dt.timedelta(days=g.days) if g.kind in ("option", "future") else None
        strike = g.moneyness * market.spot(g.underlying) if g.kind == "option" else None
        positions.append(Position(Instrument(g.underlying, g.kind, g.settlement, expiry, strike, g.right),
                                  g.quantity))
    return make_portfolio(positions, account="backtest", source="backtest", merge_notice=False)


__all__ = ["FIRST_BOOKS", "Leg", "MORE_BOOKS", "day_portfolio", "representative_books", "seed_legs"]
