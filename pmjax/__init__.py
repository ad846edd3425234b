"""pmjax: portfolio margin for crypto options books, in JAX.

Importing pmjax turns on JAX's float64 support (numbers are float64 unless float32 is asked for);
arrays are built with an explicit dtype, so float32 books stay float32.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .book import Book, book_from_portfolio, bucket_size, make_book, resolve  # noqa: E402
from .errors import InputError  # noqa: E402
from .fast_greeks import unit_greeks_fast  # noqa: E402
from .greeks import portfolio_greeks, price_instruments  # noqa: E402
from .instruments import UNDERLYINGS, Instrument, parse_instrument  # noqa: E402
from .kernel import (  # noqa: E402
    Shock,
    black76,
    no_shock,
    position_pnl,
    position_values,
    scenario_pnl,
    unit_greeks,
    unit_value_usd,
)
from .market import Market, load_market  # noqa: E402
from .portfolio import Portfolio, Position, load_portfolio  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Book", "InputError", "Instrument", "Market", "Portfolio", "Position", "Shock", "UNDERLYINGS",
    "black76", "book_from_portfolio", "bucket_size", "load_market", "load_portfolio", "make_book",
    "no_shock", "parse_instrument", "portfolio_greeks", "position_pnl", "position_values",
    "price_instruments", "resolve", "scenario_pnl", "unit_greeks", "unit_greeks_fast", "unit_value_usd",
]
