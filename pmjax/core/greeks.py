"""Prices and Greeks of instruments and portfolios, aggregated by underlying and by expiry. Definitions and
units: docs/methodology.md sections 3.3 and 4."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pmjax.core.book import book_from_portfolio, make_book, resolve
from pmjax.core.instruments import Instrument
from pmjax.core.kernel import GREEKS, unit_greeks_jit, unit_value_delta_jit
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio


def price_instruments(instruments: list[Instrument], market: Market, *, dtype=jnp.float64) -> list[dict]:
    """Price and Greeks of one coin long of each instrument (SPEC ``pmjax price --json``).

    price_usd: option premium, a future's forward, the spot for perpetuals and spot; price_coin =
    price_usd / spot (for inverse options: B76 / F). Greeks in USD as in ``kernel.unit_greeks``.
    """
    resolved = resolve(instruments, [1.0] * len(instruments), market)
    book = make_book(resolved, market, dtype=dtype)
    g = {k: np.asarray(v, dtype=np.float64) for k, v in unit_greeks_jit(book).items()}
    out = []
    for i, r in enumerate(resolved):
        inst = r.instrument
        price = g["value"][i] if inst.is_option else (r.forward if inst.kind == "future" else r.spot)
        row = {"instrument": inst.name, "underlying": inst.underlying, "kind": inst.kind,
               "settlement": inst.settlement, "price_usd": float(price), "price_coin": float(price / r.spot),
               "forward": r.forward, "vol": r.vol if inst.is_option else None,
               "expiry_years": r.expiry_years}
        row.update({k: float(g[k][i]) for k in GREEKS})
        out.append(row)
    return out


def option_prices(instruments: list[Instrument], market: Market, *, dtype=jnp.float64) -> list[float]:
    """``price_usd`` of ``price_instruments`` for options alone (one coin long, USD), without the Greeks."""
    resolved = resolve(instruments, [1.0] * len(instruments), market)
    value = np.asarray(unit_value_delta_jit(make_book(resolved, market, dtype=dtype))["value"], np.float64)
    return value[: len(resolved)].tolist()


def portfolio_greeks(portfolio: Portfolio, market: Market, *, dtype=jnp.float64) -> dict:
    """Value and Greeks per position (quantity included, USD), and totals by underlying and expiry."""
    book, resolved = book_from_portfolio(portfolio, market, dtype=dtype)
    g = {k: np.asarray(v, dtype=np.float64)[: len(resolved)] for k, v in unit_greeks_jit(book).items()}
    keys = ("value",) + GREEKS
    positions, by_u, by_e = [], {}, {}
    for i, r in enumerate(resolved):
        row = {k: float(r.quantity * g[k][i]) for k in keys}
        inst = r.instrument
        positions.append({"instrument": inst.name, "quantity": r.quantity, **row})
        expiry = inst.expiry.strftime("%Y-%m-%d") if inst.expiry else "none"
        for agg, key in ((by_u, inst.underlying), (by_e, f"{inst.underlying} {expiry}")):
            tot = agg.setdefault(key, dict.fromkeys(keys, 0.0))
            for k in keys:
                tot[k] += row[k]
    return {"positions": positions, "by_underlying": by_u, "by_expiry": dict(sorted(by_e.items()))}
