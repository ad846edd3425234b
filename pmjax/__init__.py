"""pmjax: portfolio margin for crypto options books, in JAX.

The data flow, one layer per subpackage (lower layers never import higher ones)::

    Portfolio x Market -> Book -> scenario set -> Shock -> scenario P&L [s, n] -> measure -> result -> section
    core                  core    scenarios      core     core                    measures   measures  apps/cli

Every measure has three doors: ``x_params(config, *, dtype) -> XParams``, a pure
``x_margin(book, params) -> XResult`` that callers jit, vmap or shard, and ``x_section(result)`` for JSON.
docs/api.md shows each public name in use; docs/methodology.md states every formula.

Importing pmjax changes no global JAX setting and imports nothing heavy until a name is used (the names
below are loaded on first access). pmjax computes in float64 by default, which needs JAX's x64 mode:
call ``jax.config.update("jax_enable_x64", True)`` first, or pass ``dtype=jnp.float32``; a float64 request
without it raises a ValueError saying so. The ``pmjax`` command enables x64 itself, and JAX's persistent
compilation cache; a library user turns the cache on with ``pmjax.enable_compilation_cache(path=None)``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    # core: instruments, market and portfolio data, the Book, the kernel, Greeks
    "InputError": "pmjax.core.errors",
    "UNDERLYINGS": "pmjax.core.instruments",
    "Instrument": "pmjax.core.instruments",
    "parse_instrument": "pmjax.core.instruments",
    "Market": "pmjax.core.market",
    "Portfolio": "pmjax.core.portfolio",
    "Position": "pmjax.core.portfolio",
    "make_portfolio": "pmjax.core.portfolio",
    "Book": "pmjax.core.book",
    "book_from_portfolio": "pmjax.core.book",
    "bucket_size": "pmjax.core.book",
    "make_book": "pmjax.core.book",
    "resolve": "pmjax.core.book",
    "Shock": "pmjax.core.kernel",
    "black76": "pmjax.core.kernel",
    "no_shock": "pmjax.core.kernel",
    "position_pnl": "pmjax.core.kernel",
    "position_values": "pmjax.core.kernel",
    "scenario_pnl": "pmjax.core.kernel",
    "unit_greeks": "pmjax.core.kernel",
    "unit_value_usd": "pmjax.core.kernel",
    "portfolio_greeks": "pmjax.core.greeks",
    "price_instruments": "pmjax.core.greeks",
    "unit_greeks_fast": "pmjax.core.fast_greeks",
    "enable_compilation_cache": "pmjax.core.jax_cache",
    # io: loaders
    "load_market": "pmjax.io.market",
    "load_portfolio": "pmjax.io.portfolio",
    "write_portfolio": "pmjax.io.portfolio",
    "parse_trades": "pmjax.io.portfolio",
    "load_accounts": "pmjax.io.accounts",
    "load_config": "pmjax.io.config",
    "default_config": "pmjax.io.config",
    # batch: many accounts
    "AccountBatch": "pmjax.batch.accounts",
    "build_batch": "pmjax.batch.accounts",
    "map_accounts": "pmjax.batch.sharding",
    "vmapped": "pmjax.batch.sharding",
    # scenarios
    "load_scenarios": "pmjax.scenarios.named",
    # measures: three doors each
    "SpanParams": "pmjax.measures.span",
    "SpanResult": "pmjax.measures.span",
    "span_params": "pmjax.measures.span",
    "span_margin": "pmjax.measures.span",
    "span_section": "pmjax.measures.span",
    "DeribitParams": "pmjax.measures.deribit",
    "DeribitResult": "pmjax.measures.deribit",
    "deribit_params": "pmjax.measures.deribit",
    "deribit_margin": "pmjax.measures.deribit",
    "deribit_section": "pmjax.measures.deribit",
    "VarParams": "pmjax.measures.var",
    "VarResult": "pmjax.measures.var",
    "var_params": "pmjax.measures.var",
    "var_margin": "pmjax.measures.var",
    "var_section": "pmjax.measures.var",
    "var_margin_accounts": "pmjax.measures.var",
    "RulesParams": "pmjax.measures.rules",
    "RulesResult": "pmjax.measures.rules",
    "rules_params": "pmjax.measures.rules",
    "rules_margin": "pmjax.measures.rules",
    "rules_section": "pmjax.measures.rules",
    "pm_qualification": "pmjax.measures.qualification",
    # apps
    "margin_document": "pmjax.apps.margin",
    "compute_margins": "pmjax.apps.margin",
    "WhatIf": "pmjax.apps.whatif",
    "Monitor": "pmjax.apps.monitor",
    "hedge_map": "pmjax.apps.hedge_map",
    "hedge_map_section": "pmjax.apps.hedge_map",
    "listed_contracts": "pmjax.apps.hedge_map",
    "hedge": "pmjax.apps.hedge",
    "tims_params": "pmjax.measures.tims",
    "tims_margin": "pmjax.measures.tims",
    "tims_section": "pmjax.measures.tims",
    "span_array_params": "pmjax.measures.span_arrays",
    "span_array_margin": "pmjax.measures.span_arrays",
    "span_array_section": "pmjax.measures.span_arrays",
    "load_risk_parameters": "pmjax.io.risk_parameters",
    "load_pa2": "pmjax.io.span_pa2",
    "load_risk_file": "pmjax.io.span_pa2",
    "supplied_margin_document": "pmjax.apps.supplied",
    "hedge_section": "pmjax.apps.hedge",
    "HedgeResult": "pmjax.apps.hedge",
    "monitor_settings": "pmjax.apps.monitor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pmjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
