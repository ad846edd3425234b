"""pmjax: portfolio margin for crypto options books, in JAX.

Importing pmjax turns on JAX's float64 support (numbers are float64 unless float32 is asked for);
arrays are built with an explicit dtype, so float32 books stay float32.
"""

import jax

jax.config.update("jax_enable_x64", True)

from pmjax.core.book import Book, book_from_portfolio, bucket_size, make_book, resolve  # noqa: E402
from pmjax.core.errors import InputError  # noqa: E402
from pmjax.core.fast_greeks import unit_greeks_fast  # noqa: E402
from pmjax.core.greeks import portfolio_greeks, price_instruments  # noqa: E402
from pmjax.core.instruments import UNDERLYINGS, Instrument, parse_instrument  # noqa: E402
from pmjax.core.kernel import (
    Shock,
    black76,
    no_shock,
    position_pnl,
    position_values,
    scenario_pnl,
    unit_greeks,
    unit_value_usd,
)
from pmjax.core.market import Market  # noqa: E402
from pmjax.io.market import load_market
from pmjax.core.portfolio import Portfolio, Position  # noqa: E402
from pmjax.io.portfolio import load_portfolio

__version__ = "0.1.0"

__all__ = [
    "Book", "InputError", "Instrument", "Market", "Portfolio", "Position", "Shock", "UNDERLYINGS",
    "black76", "book_from_portfolio", "bucket_size", "load_market", "load_portfolio", "make_book",
    "no_shock", "parse_instrument", "portfolio_greeks", "position_pnl", "position_values",
    "price_instruments", "resolve", "scenario_pnl", "unit_greeks", "unit_greeks_fast", "unit_value_usd",
]
