"""Every margin method behind one call: what ``pmjax margin``, the report and the monitor use."""

from __future__ import annotations

import numpy as np

from pmjax.core.book import book_from_portfolio
from pmjax.core.kernel import unit_greeks_jit
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.measures.qualification import qualification


def _rules(portfolio, market, config, dtype):
    from pmjax.measures.rules import rules_margin

    return rules_margin(portfolio, market, config)


def _span(portfolio, market, config, dtype):
    from pmjax.measures.span import span_report

    return span_report(portfolio, market, config, dtype=dtype, positions=True)  # by_position, parameters


def _deribit(portfolio, market, config, dtype):
    from pmjax.measures.deribit import deribit_report

    return deribit_report(portfolio, market, config, dtype=dtype)


def _var(portfolio, market, config, dtype):
    from pmjax.measures.var import var_report

    return var_report(portfolio, market, config, dtype=dtype)


#: method name -> function(portfolio, market, config, dtype) -> the SPEC section 3 dict of that method
METHODS = {"rules": _rules, "span": _span, "deribit": _deribit, "var": _var}
#: the figure each method's what-if compares (SPEC section 3)
HEADLINE = {"rules": lambda d: d["initial"], "span": lambda d: d["total"], "deribit": lambda d: d["initial"],
            "var": lambda d: d["es"]}


def compute_margins(portfolio: Portfolio, market: Market, config: dict, methods, *, dtype) -> dict:
    """``{method: section}`` for each method named."""
    return {m: METHODS[m](portfolio, market, config, dtype) for m in methods}


def position_summary(portfolio: Portfolio, market: Market, dtype) -> list[dict]:
    """Each position's value (margin currency) and delta (coins) for SPEC's ``positions`` list."""
    book, resolved = book_from_portfolio(portfolio, market, dtype=dtype)
    g = unit_greeks_jit(book)
    value = np.asarray(g["value"], np.float64)[: len(resolved)]
    delta = np.asarray(g["delta"], np.float64)[: len(resolved)]
    coin = 1.0 if portfolio.margin_currency == "USD" else market.spot(portfolio.margin_currency)
    return [{"instrument": r.instrument.name, "quantity": r.quantity, "value": r.quantity * value[i] / coin,
             "delta": r.quantity * delta[i]} for i, r in enumerate(resolved)]


def margin_document(portfolio: Portfolio, market: Market, config: dict, methods, *, dtype) -> dict:
    """SPEC section 3's ``pmjax margin`` document: the account, its positions, each method's section and
    the portfolio-margin qualification."""
    doc = {"account": portfolio.account, "as_of": market.as_of.isoformat(), "currency": portfolio.margin_currency,
           "market": market.source, "positions": position_summary(portfolio, market, dtype)}
    doc.update(compute_margins(portfolio, market, config, methods, dtype=dtype))
    doc["qualification"] = qualification(portfolio, market, config, dtype=dtype)
    return doc
