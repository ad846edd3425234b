"""Synthetic books the bench times: random options, random accounts of every instrument kind (host arrays),
and an option book split over the local devices. Prices in USD, expiries in years."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book, bucket_size
from pmjax.core.units import DAY, DAYS_PER_YEAR


def market_spots() -> tuple[float, float]:
    """BTC and ETH index prices of the bundled default market."""
    from pmjax.io.market import load_market

    m = load_market()
    return m.spot("BTC"), m.spot("ETH")


def random_option_book(n: int, dtype=jnp.float64, *, seed: int = 0, size: int | None = None,
                       spots=None) -> Book:
    """``n`` random BTC/ETH options (inverse and linear, calls and puts, strikes within +-30% of the
    forward, 1 day to 1 year, vols 30-100%), padded to ``size`` rows, USD margin; host arrays."""
    spots = market_spots() if spots is None else spots
    size = n if size is None else size
    rng = np.random.default_rng(seed)
    und = rng.integers(0, 2, n)
    spot = np.asarray(spots, np.float64)[und]
    T = rng.uniform(DAY, 1.0, n)
    fwd = spot * np.exp(0.05 * T)
    pad = size - n
    col = lambda a, fill: np.concatenate([np.asarray(a), np.full(pad, fill, np.asarray(a).dtype)])  # noqa: E731
    f = lambda a, fill: col(np.asarray(a, np.float64), fill).astype(dtype)  # noqa: E731
    return Book(underlying=col(und.astype(np.int32), 0), kind=col(np.full(n, OPTION, np.int32), SPOT),
                inverse=col(rng.integers(0, 2, n) == 1, False), is_call=col(rng.integers(0, 2, n) == 1, True),
                strike=f(fwd * np.exp(rng.uniform(-0.3, 0.3, n)), 1.0),
                quantity=f(rng.choice([-1.0, 1.0], n) * rng.integers(1, 10, n), 0.0),
                expiry_years=f(T, 0.0), spot=f(spot, 1.0), forward=f(fwd, 1.0), vol=f(rng.uniform(0.3, 1.0, n), 0.5),
                underlying_spot=np.asarray(spots, dtype), margin_coin=np.asarray(-1, np.int32))


def random_account_books(accounts: int, positions: int = 20, dtype=jnp.float64, *, seed: int = 0,
                         size: int | None = None, spots=None) -> Book:
    """``accounts`` random accounts of ``positions`` positions each (options 70%, futures 15%, perpetuals
    10%, spot 5%; inverse and linear; margin currency USD, BTC or ETH), books padded to ``size`` rows
    (default ``bucket_size(positions)``) and stacked (host arrays, leading accounts axis)."""
    spots = market_spots() if spots is None else spots
    size = bucket_size(positions) if size is None else size
    rng = np.random.default_rng(seed)
    sh = (accounts, positions)
    und = rng.integers(0, 2, sh)
    kind = rng.choice([OPTION, FUTURE, PERPETUAL, SPOT], sh, p=[0.7, 0.15, 0.1, 0.05])
    spot = np.asarray(spots, np.float64)[und]
    dated = (kind == OPTION) | (kind == FUTURE)
    T = np.where(dated, rng.uniform(0.5 / DAYS_PER_YEAR, 1.0, sh), 0.0)
    fwd = np.where(dated, spot * np.exp(0.05 * T), spot)
    is_opt = kind == OPTION
    pad = ((0, 0), (0, size - positions))
    col = lambda a, fill: np.pad(np.asarray(a), pad, constant_values=fill)  # noqa: E731
    f = lambda a, fill: col(np.asarray(a, np.float64), fill).astype(dtype)  # noqa: E731
    return Book(underlying=col(und.astype(np.int32), 0), kind=col(kind.astype(np.int32), SPOT),
                inverse=col(rng.integers(0, 2, sh) == 1, False), is_call=col(rng.integers(0, 2, sh) == 1, True),
                strike=f(np.where(is_opt, fwd * np.exp(rng.uniform(-0.3, 0.3, sh)), 1.0), 1.0),
                quantity=f(rng.normal(0.0, 3.0, sh), 0.0), expiry_years=f(T, 0.0), spot=f(spot, 1.0),
                forward=f(fwd, 1.0), vol=f(np.where(is_opt, rng.uniform(0.3, 1.0, sh), 0.5), 0.5),
                underlying_spot=np.tile(np.asarray(spots, dtype), (accounts, 1)),
                margin_coin=rng.integers(-1, 2, accounts).astype(np.int32))


def random_rules_portfolio(n: int, market=None, *, seed: int = 0):
    """A market maker's account of ``n`` distinct positions on ``market`` (default: the bundled chain): the
    perpetual and three futures of BTC and ETH, then options drawn at random from the listed (expiry, strike)
    points, calls and puts, coin- and USDC-settled, with strikes between listed ones added until there are
    enough; +-0.1 to 5 coins each (steps of 0.1), USD margin. A ``Portfolio``, not a ``Book``: rules margin
    pairs instruments."""
    from pmjax.core.instruments import Instrument
    from pmjax.core.portfolio import Position, make_portfolio
    from pmjax.io.market import load_market

    market = load_market() if market is None else market
    rng = np.random.default_rng(seed)
    insts = []
    for u in ("BTC", "ETH"):
        expiries = sorted({e for e, _ in market.listed_strikes(u)})
        insts.append(Instrument(u, "perpetual"))
        insts += [Instrument(u, "future", expiry=e) for e in expiries[-3:]]
    points = [(u, e, k) for u in ("BTC", "ETH") for e, k in market.listed_strikes(u)]
    step = 1
    while 4 * len(points) * step < 1.25 * n:  # (call, put) x (inverse, linear) per point, ``step`` points per gap
        step += 1
    pool = []
    for j, (u, e, k) in enumerate(points):
        nxt = points[j + 1] if j + 1 < len(points) else None
        gap = nxt[2] - k if nxt is not None and nxt[:2] == (u, e) else 0.0
        pool += [(u, e, k + gap * s / step) for s in range(step if gap > 0 else 1)]
    pick = rng.permutation(len(pool) * 4)[:max(n - len(insts), 0)]
    for c in pick:
        u, e, k = pool[c // 4]
        insts.append(Instrument(u, "option", "inverse" if c % 2 == 0 else "linear", e, float(round(k, 2)),
                                "call" if (c // 2) % 2 == 0 else "put"))
    insts = insts[:n]
    q = rng.choice([-1.0, 1.0], len(insts)) * rng.integers(1, 51, len(insts)) / 10.0
    return make_portfolio([Position(i, float(x)) for i, x in zip(insts, q)], account=f"random-{n}")


def sharded_option_book(n: int, dtype, seed: int) -> Book:
    """``random_option_book`` placed on the devices the way the pricing rows compute it: split over every
    local device (``fast_greeks.place_options``), so no row moves data between devices while it is timed."""
    from pmjax.core.fast_greeks import place_options

    return place_options(random_option_book(n, dtype, seed=seed))


__all__ = ["market_spots", "random_account_books", "random_option_book", "random_rules_portfolio",
           "sharded_option_book"]
