"""Every margin method behind one call: what ``pmjax margin``, the report and the monitor use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import book_from_portfolio, make_book
from pmjax.core.kernel import unit_value_delta_jit
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.measures.deribit import (
    DeribitParams,
    add_initial_addons,
    deribit_margin,
    deribit_params,
    deribit_section,
)
from pmjax.measures.qualification import qualification
from pmjax.measures.span import SpanParams, span_margin, span_params, span_section
from pmjax.measures.tims import tims_margin, tims_params, tims_section


def _rules(portfolio, market, config, dtype, marks=None):
    from pmjax.measures.rules import rules_margin, rules_params, rules_section

    return rules_section(rules_margin(portfolio, market, rules_params(config), marks=marks))  # marks in float64


#: one account (a book of the same bucket size and dtype reuses the compiled code)
_span_margin_jit = jax.jit(span_margin)


def span_report(portfolio, market, config: dict, dtype=jnp.float64, *, positions: bool = False,
                params: SpanParams | None = None) -> dict:
    """The ``span`` section of ``pmjax margin`` for one portfolio; with ``positions`` also ``by_position``
    and ``parameters``, enough to re-derive every figure (``span.span_section``)."""
    params = span_params(config, dtype=dtype) if params is None else params
    book, resolved = book_from_portfolio(portfolio, market, dtype=dtype)
    return span_section(_span_margin_jit(book, params), {p.instrument.underlying for p in portfolio.positions},
                        resolved if positions else None, as_of=market.as_of, params=params if positions else None,
                        market=market, margin_currency=portfolio.margin_currency)


def _span(portfolio, market, config, dtype):
    return span_report(portfolio, market, config, dtype=dtype, positions=True)  # by_position, parameters


_deribit_margin_jit = jax.jit(deribit_margin)


@jax.jit
def _deribit_margin_addons_jit(book, params: DeribitParams, initial_addons):
    return add_initial_addons(deribit_margin(book, params), book, params, initial_addons)


def deribit_report(portfolio, market, config: dict, dtype=jnp.float64, *, initial_addons: dict | None = None,
                   params: DeribitParams | None = None) -> dict:
    """The ``deribit`` section of ``pmjax margin`` for one portfolio (``deribit.deribit_section``).
    ``initial_addons``: amounts by pool name (``BTC``, or ``BTC_USDC`` with segregated pooling) added to the initial margin (Deribit's mmp +
    open-orders + spot margin; none by default)."""
    params = deribit_params(config, dtype=dtype) if params is None else params
    book, resolved = book_from_portfolio(portfolio, market, dtype=dtype)
    if initial_addons is None:
        result = _deribit_margin_jit(book, params)
    else:
        addons = np.zeros(len(params.pool_names))
        for name, x in initial_addons.items():
            addons[params.pool_names.index(str(name).upper())] = float(x)
        result = _deribit_margin_addons_jit(book, params, jnp.asarray(addons, book.quantity.dtype))
    return deribit_section(result, resolved, portfolio.margin_currency, params)


_tims_margin_jit = jax.jit(tims_margin)


def tims_report(portfolio, market, config: dict, dtype=jnp.float64) -> dict:
    """The ``tims`` section of ``pmjax margin``: the TIMS-style preset (``pmjax.measures.tims``; docs/tims.md)."""
    params = tims_params(config, dtype=dtype)
    book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    return tims_section(_tims_margin_jit(book, params), {p.instrument.underlying for p in portfolio.positions},
                        params=params)


def var_report(portfolio: Portfolio, market: Market, config: dict | None = None, *, paths: int | None = None,
               seed: int | None = None, confidence: float | None = None, dtype=jnp.float64, devices=None,
               progress: bool | None = None, historical_simulation: bool | None = None) -> dict:
    """The ``var`` section of ``pmjax margin`` for one account (``var.var_section``): ``config``'s ``var``
    section and ``horizon_days``, with ``paths``, ``seed``, ``confidence`` overriding it when given."""
    from pmjax.measures.var import var_margin, var_params, var_section

    params = var_params(config, market=market, dtype=dtype, paths=paths, seed=seed, confidence=confidence,
                        progress=progress, historical=historical_simulation)
    book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    return var_section(var_margin(book, params, devices=devices), n_positions=len(portfolio.positions),
                       currency=portfolio.margin_currency)


def _var(portfolio, market, config, dtype):
    return var_report(portfolio, market, config, dtype=dtype)


#: method name -> function(portfolio, market, config, dtype) -> the SPEC section 3 dict of that method
METHODS = {"rules": _rules, "span": _span, "deribit": deribit_report, "var": _var, "tims": tims_report}
#: the figure each method's what-if compares (SPEC section 3)
HEADLINE = {"rules": lambda d: d["initial"], "span": lambda d: d["total"], "deribit": lambda d: d["initial"],
            "var": lambda d: d["es"], "tims": lambda d: d["total"]}


def compute_margins(portfolio: Portfolio, market: Market, config: dict, methods, *, dtype,
                    marks: dict[str, float] | None = None) -> dict:
    """``{method: section}`` for each method named. ``marks``: the portfolio's option marks (USD per coin, by
    name, float64) when already computed, for rules."""
    return {m: _rules(portfolio, market, config, dtype, marks) if m == "rules" else
            METHODS[m](portfolio, market, config, dtype) for m in methods}


def unit_values(portfolio: Portfolio, market: Market, dtype, resolved=None) -> tuple[list, np.ndarray, np.ndarray]:
    """(resolved positions, value USD per coin, delta per coin) of each position: one kernel call, shared by
    the positions list, rules' option marks and the qualification. ``resolved``: the portfolio's positions
    already resolved against ``market`` (``core.book.resolve_portfolio``), if at hand."""
    if resolved is None:
        book, resolved = book_from_portfolio(portfolio, market, dtype=dtype)
    else:
        book = make_book(resolved, market, portfolio.margin_currency, dtype=dtype)
    g = unit_value_delta_jit(book)
    n = len(resolved)
    return resolved, np.asarray(g["value"], np.float64)[:n], np.asarray(g["delta"], np.float64)[:n]


def position_summary(portfolio: Portfolio, market: Market, dtype, values=None) -> list[dict]:
    """Each position's value (margin currency) and delta (coins) for SPEC's ``positions`` list; ``values``:
    ``unit_values`` of the portfolio, if at hand."""
    resolved, value, delta = unit_values(portfolio, market, dtype) if values is None else values
    coin = 1.0 if portfolio.margin_currency == "USD" else market.spot(portfolio.margin_currency)
    return [{"instrument": r.instrument.name, "quantity": r.quantity, "value": r.quantity * value[i] / coin,
             "delta": r.quantity * delta[i]} for i, r in enumerate(resolved)]


def margin_document(portfolio: Portfolio, market: Market, config: dict, methods, *, dtype, resolved=None) -> dict:
    """SPEC section 3's ``pmjax margin`` document: the account, its positions, each method's section and
    the portfolio-margin qualification. ``resolved``: as ``unit_values``."""
    values = unit_values(portfolio, market, dtype, resolved)
    marks = {r.instrument.name: v for r, v in zip(values[0], values[1].tolist()) if r.instrument.is_option}
    doc = {"account": portfolio.account, "as_of": market.as_of.isoformat(), "currency": portfolio.margin_currency,
           "market": market.source, "positions": position_summary(portfolio, market, dtype, values)}
    # rules prices in float64 whatever the precision: share the marks only when they are float64
    doc.update(compute_margins(portfolio, market, config, methods, dtype=dtype,
                               marks=marks if jnp.dtype(dtype) == jnp.float64 else None))
    doc["qualification"] = qualification(portfolio, market, config, dtype=dtype, marks=marks)
    return doc
