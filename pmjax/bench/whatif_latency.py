"""The what-if latency benchmark (``pmjax bench``'s ``what_if_latency`` rows): a synthetic desk account of
listed options and the median warm latency of ``pmjax.apps.whatif.WhatIf.incremental`` on it."""

from __future__ import annotations

import statistics
import time

import jax.numpy as jnp
import numpy as np

from pmjax.apps.whatif import FAST_METHODS, WhatIf
from pmjax.core.instruments import UNDERLYINGS, Instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio, Position, make_portfolio
from pmjax.io.market import load_market


def listed_options(market: Market, underlyings=UNDERLYINGS, moneyness: float = 0.3) -> list[Instrument]:
    """Every listed inverse option (call and put) of ``market`` unexpired and within ``moneyness`` in
    log-strike of its forward, in (underlying, expiry, strike, right) order."""
    return [Instrument(u, "option", "inverse", e, k, right) for u in underlyings if u in market.underlyings
            for e, k in market.listed_strikes(u, moneyness) for right in ("call", "put")]


def synthetic_account(market: Market, n_positions: int = 100, *, seed: int = 0) -> Portfolio:
    """``n_positions`` distinct listed BTC and ETH options with random long and short quantities (a
    stand-in desk book; deterministic for a seed)."""
    listed = listed_options(market)
    if len(listed) <= n_positions:
        raise ValueError(f"the market lists {len(listed)} options near the money; need more than {n_positions}")
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(listed), size=n_positions, replace=False))
    positions = [Position(listed[p], float(rng.choice([-1.0, 1.0]) * rng.integers(1, 10)
                                         * (1.0 if listed[p].underlying == "BTC" else 10.0))) for p in picks]
    return make_portfolio(positions, account=f"synthetic-{n_positions}", source="synthetic")


def whatif_latency(n_positions: int = 100, *, repeats: int = 200, methods=FAST_METHODS, market: Market | None = None,
                   config: dict | None = None, dtype=jnp.float64, seed: int = 0) -> float:
    """Median warm latency, seconds, of ``WhatIf.incremental`` of one new listed option (1 coin short) on an
    ``n_positions`` account of the bundled market: resolve, write, one transfer, the jitted unpack and margin
    calls, figures back."""
    market = load_market() if market is None else market
    portfolio = synthetic_account(market, n_positions, seed=seed)
    held = set(portfolio.instruments)
    candidates = [i for i in listed_options(market, ("BTC",)) if i not in held]
    trades = [Position(candidates[len(candidates) // 2], -1.0)]
    w = WhatIf(portfolio, market, config, methods=methods, dtype=dtype)
    for _ in range(3):  # compile and warm
        w.incremental(trades)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        w.incremental(trades)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
