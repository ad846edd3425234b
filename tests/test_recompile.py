"""Books are padded to size buckets, so a new portfolio of a known bucket reuses the compiled kernel."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmjax.core.book import book_from_portfolio, bucket_size
from pmjax.core.kernel import no_shock, position_values_jit, unit_greeks_jit
from pmjax.core.portfolio import make_portfolio
from pmjax.io.portfolio import parse_trades


def portfolio(trades: str, margin_currency: str = "USD"):
    return make_portfolio(parse_trades(trades), margin_currency=margin_currency)


# two different portfolios in the smallest bucket (8 rows), one with more positions than that
SMALL_A = "BTC-27MAR26-100000-C:-2,BTC-27MAR26:1.5,BTC-PERPETUAL:-0.5"
SMALL_B = "ETH-27MAR26-3000-P:2,ETH_USDC-PERPETUAL:3,BTC:1,BTC-30JAN26-90000-C:1,BTC-27MAR26-80000-P:-4"
STRIKES = range(50_000, 150_000, 5_000)  # 20 listed strikes, calls and puts: 40 positions


def run_both(book):
    shock = no_shock(book)
    jax.block_until_ready(position_values_jit(book, shock))
    jax.block_until_ready(unit_greeks_jit(book))


@pytest.mark.parametrize("margin_b", ["USD", "BTC"])
def test_second_portfolio_in_the_same_bucket_does_not_recompile(market, margin_b, compile_log):
    book_a, resolved_a = book_from_portfolio(portfolio(SMALL_A), market)
    book_b, resolved_b = book_from_portfolio(portfolio(SMALL_B, margin_b), market)
    assert len(resolved_a) != len(resolved_b) and book_a.size == book_b.size == bucket_size(len(resolved_b))
    shocks = no_shock(book_a), no_shock(book_b)  # built outside the log: their own small ops compile too
    run_both(book_a)  # compiles, unless an earlier test already compiled this bucket
    with compile_log() as log:
        values_b = position_values_jit(book_b, shocks[1])
        greeks_b = unit_greeks_jit(book_b)
        jax.block_until_ready((values_b, greeks_b))
    assert log.compiles("jit(position_values)") == 0, log.messages
    assert log.compiles("jit(unit_greeks)") == 0, log.messages
    # and the reused code computes book B's own numbers, not book A's
    assert np.asarray(values_b)[len(resolved_b):].tolist() == [0.0] * (book_b.size - len(resolved_b))
    assert not np.allclose(np.asarray(values_b), np.asarray(position_values_jit(book_a, shocks[0])))


def test_larger_bucket_compiles_once(market, compile_log):
    trades = ",".join(f"BTC-27MAR26-{k}-{r}:1" for k in STRIKES for r in "CP")
    book, resolved = book_from_portfolio(portfolio(trades), market)
    assert len(resolved) == 40 and book.size == 64
    small, _ = book_from_portfolio(portfolio(SMALL_A), market)
    run_both(small)
    # forget this size's compiled code, so the count does not depend on which tests ran before
    position_values_jit.clear_cache()
    unit_greeks_jit.clear_cache()
    run_both(small)  # the small bucket again: compiled afresh, outside the log
    shock = no_shock(book)
    with compile_log() as log:
        position_values_jit(book, shock)
        unit_greeks_jit(book)
    assert log.compiles("jit(position_values)") == 1, log.messages
    assert log.compiles("jit(unit_greeks)") == 1, log.messages
    # a second book of that larger bucket (other strikes, other quantities) reuses it
    eth_strikes = [2_500, *range(2_600, 4_000, 100), 4_000, 4_200, 4_400]  # 18 strikes the chain lists
    trades2 = ",".join(f"ETH-27MAR26-{k}-{r}:{i - 3.5}" for i, k in enumerate(eth_strikes) for r in "CP")
    book2, resolved2 = book_from_portfolio(portfolio(trades2 + ",ETH-27MAR26:2", "ETH"), market)
    assert len(resolved2) == 37 and book2.size == book.size
    shock2 = no_shock(book2)
    with compile_log() as log:
        position_values_jit(book2, shock2)
        unit_greeks_jit(book2)
        run_both(small)
    assert log.compiles("jit(position_values)") == 0 and log.compiles("jit(unit_greeks)") == 0, log.messages


def test_float32_book_is_its_own_compilation(market, compile_log):
    """A dtype change is a new signature (compiles once), then float32 books of that bucket reuse it."""
    position_values_jit.clear_cache()
    book_a, _ = book_from_portfolio(portfolio(SMALL_A), market, dtype=jnp.float32)
    book_b, _ = book_from_portfolio(portfolio(SMALL_B), market, dtype=jnp.float32)
    shocks = no_shock(book_a), no_shock(book_b)
    with compile_log() as log:
        a = position_values_jit(book_a, shocks[0])
        b = position_values_jit(book_b, shocks[1])
    assert a.dtype == b.dtype == jnp.float32
    assert log.compiles("jit(position_values)") == 1, log.messages
