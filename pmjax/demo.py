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


# ---------------------------------------------------------------- the demo: every method side by side

DEMO_METHODS = ("rules", "span", "deribit", "var")
#: collateral of the demo's seed account: enough to pass the portfolio-margin minimum
DEMO_COLLATERAL = {"USD": 50_000.0}

WHY_FIGURES_DIFFER = [
    "The seed's figures are illustrative, written at BTC = 70,000; these are computed on the real Deribit "
    "market of the bundled snapshot (its forwards, smiles and expiries), once with the market moved to BTC = "
    "70,000 (smiles kept in moneyness) and once at the snapshot's own BTC level, where every strike and "
    "spread width scales with the price and so does every margin figure.",
    "Spot held as a risk position vs as collateral: rules (a cash account) tie up long spot's full value, "
    "while portfolio margin holds it as a position and charges only its price risk; in a USD-margined "
    "account BTC and ETH spot dominate the seed book's SPAN and VaR figures. Held as collateral, or in an "
    "account margined in that coin, the coin's own spot carries no risk, so only the options book is "
    "margined (the 'options only' row; the Deribit grid, which works in coin pools, always treats spot "
    "as collateral, so its figure is the same in both rows).",
    "USD vs coin margin: Deribit's options are inverse (coin-settled), so a premium is worth B76/F coins "
    "and its USD value moves with the coin; in a coin-margined account every figure is in coins at the "
    "same scenario's coin price.",
    "SPAN total = risk - net option value: a short option's value is added to its risk and a long "
    "option's value covers its risk (a long calendar's SPAN total is 0 because the debit already paid "
    "covers the worst loss). Rules charge a credit spread its full width and a long option its premium.",
    "VaR and ES are one-day Monte Carlo figures (Student-t, 99%), so they sit far below the grid "
    "methods, which are calibrated to cover a large one-day move on every position at once.",
]


def _figures(doc: dict) -> dict:
    return {"rules": doc["rules"]["initial"], "span_risk": doc["span"]["risk"], "span_total": doc["span"]["total"],
            "deribit": doc["deribit"]["initial"], "var": doc["var"]["var"], "es": doc["var"]["es"]}


def run_demo(out_dir: str | None, *, market_name: str | None = None, config: dict | None = None,
             dtype=None) -> tuple[dict, str]:
    """The seed's strategies and BTC/ETH portfolio on the bundled market, every method side by side;
    writes the HTML report and JSON into ``out_dir`` when given."""
    import jax.numpy as jnp

    from .config import load_config
    from .market import DEFAULT_MARKET, load_market
    from .measures import compute_margins, margin_document
    from .report import html_table, write_report
    from .tables import table

    dtype = jnp.float64 if dtype is None else dtype
    market = load_market(market_name or DEFAULT_MARKET)
    config = load_config() if config is None else config
    at_seed = rescaled_market(market, "BTC", SEED_SPOT["BTC"])

    strategies = []
    for label, m, scale in (("BTC 70,000 (seed)", at_seed, False), (f"BTC {market.spot('BTC'):,.0f}", market, True)):
        for p in seed_strategies(m, scale_to_market=scale):
            doc = compute_margins(p, m, config, DEMO_METHODS, dtype=dtype)
            f = _figures(doc)
            strategies.append({"strategy": p.account, "level": label,
                               "positions": [{"instrument": x.instrument.name, "quantity": x.quantity}
                                             for x in p.positions],
                               **f, "span_risk_below_rules": f["rules"] - f["span_risk"],
                               "recognised": [s["type"] for s in doc["rules"]["strategies"]]})

    seed = seed_portfolio(market)
    seed.collateral = dict(DEMO_COLLATERAL)
    seed_doc = margin_document(seed, market, config, DEMO_METHODS, dtype=dtype)
    options_only = make_portfolio([p for p in seed.positions if p.instrument.is_option],
                                  account="seed options only (spot as collateral)", source="seed")
    oo = _figures(compute_margins(options_only, market, config, DEMO_METHODS, dtype=dtype))
    books = [{"book": "seed BTC/ETH portfolio (USD, spot as risk position)", **_figures(seed_doc)},
             {"book": options_only.account, **oo}]

    cols = ["rules", "span_risk", "span_total", "deribit", "var", "es"]
    head = ["rules", "SPAN risk", "SPAN total", "Deribit", "VaR 99%", "ES 99%"]
    t1 = table([[s["strategy"], s["level"]] + [s[c] for c in cols]
                + [f"{s['span_risk_below_rules']:,.0f} ({100 * s['span_risk_below_rules'] / s['rules']:.0f}%)"]
                for s in strategies], ["strategy", "market"] + head + ["SPAN risk below rules"],
               title="Seed strategies, 1 coin per leg, USD: initial margin by method")
    t2 = table([[b["book"]] + [b[c] for c in cols] for b in books], ["book"] + head,
               title=f"Seed BTC/ETH portfolio on {market.source} (BTC {market.spot('BTC'):,.2f}, "
                     f"ETH {market.spot('ETH'):,.2f})")
    text = "\n\n".join([t1, t2, "Qualification: " + seed_doc["qualification"]["reason"]])
    doc = {"market": market.source, "as_of": market.as_of.isoformat(), "strategies": strategies, "books": books,
           "seed_portfolio": seed_doc, "notes": WHY_FIGURES_DIFFER}
    if out_dir:
        strat_html = html_table([[s["strategy"], s["level"]] + [s[c] for c in cols]
                                 + [s["span_risk_below_rules"], f"{100 * s['span_risk_below_rules'] / s['rules']:.0f}%",
                                    ", ".join(s["recognised"])] for s in strategies],
                                ["strategy", "market"] + head + ["SPAN risk below rules", "in %",
                                                                 "rules recognised"])
        book_html = html_table([[b["book"]] + [b[c] for c in cols] for b in books], ["book"] + head)
        paths = write_report(seed_doc, out_dir, notes=WHY_FIGURES_DIFFER,
                             extra_sections=[("Seed strategies: every method side by side (USD)", strat_html),
                                             ("Seed portfolio: spot as risk position vs as collateral", book_html)],
                             extra_json={"strategies": strategies, "books": books})
        doc["files"] = paths
        text += "\n\nwritten: " + ", ".join(paths.values())
    return doc, text
