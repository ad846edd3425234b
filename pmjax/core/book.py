"""Positions as a struct-of-arrays pytree, resolved against a market and padded to size buckets."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from pmjax.core.errors import InputError
from pmjax.core.instruments import KINDS, UNDERLYINGS, Instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.core.precision import check_dtype

OPTION, FUTURE, PERPETUAL, SPOT = range(4)
#: a Book's leaves: device arrays, or host (numpy) arrays and scalars for stacked batches sliced before a call
HostOrDevice = Array | np.ndarray | np.generic
MIN_BUCKET = 8
#: what a padding row holds: quantity 0 and harmless market data, so it adds exactly 0 to every figure
PAD_ROW = {"underlying": 0, "kind": SPOT, "inverse": False, "is_call": True, "strike": 1.0, "quantity": 0.0,
           "expiry_years": 0.0, "spot": 1.0, "forward": 1.0, "vol": 0.5}


def bucket_size(n: int, minimum: int = MIN_BUCKET) -> int:
    """Padded length for ``n`` positions: the next power of two, at least ``minimum``."""
    size = minimum
    while size < n:
        size *= 2
    return size


class Book(eqx.Module):
    """Positions of one account with the market data each needs (one row per position).

    Padding rows have quantity 0 and harmless market data, so they add exactly 0 to every figure.
    """

    underlying: Int[HostOrDevice, "*batch n"]  # index into UNDERLYINGS
    kind: Int[HostOrDevice, "*batch n"]  # OPTION, FUTURE, PERPETUAL, SPOT
    inverse: Bool[HostOrDevice, "*batch n"]  # coin-settled
    is_call: Bool[HostOrDevice, "*batch n"]
    strike: Float[HostOrDevice, "*batch n"]  # USD per coin (1 for non-options)
    quantity: Float[HostOrDevice, "*batch n"]  # coins; negative = short; 0 for padding
    expiry_years: Float[HostOrDevice, "*batch n"]  # T = days to expiry / 365 (0 for perpetual and spot)
    spot: Float[HostOrDevice, "*batch n"]  # today's index of the underlying, USD
    forward: Float[HostOrDevice, "*batch n"]  # today's forward for the expiry, USD (spot for perpetual and spot)
    vol: Float[HostOrDevice, "*batch n"]  # implied vol at strike and expiry (decimal; 0.5 placeholder for non-options)
    underlying_spot: Float[HostOrDevice, "*batch u"]  # today's index of every underlying in UNDERLYINGS
    margin_coin: Int[HostOrDevice, "*batch"]  # -1: USD; else index into UNDERLYINGS of the margin coin

    @property
    def size(self) -> int:
        return self.quantity.shape[-1]


@dataclasses.dataclass(frozen=True)
class ResolvedPosition:
    """What the kernel needs of one position, in plain Python (before padding)."""

    instrument: Instrument
    quantity: float
    expiry_years: float
    spot: float
    forward: float
    vol: float


def years_to_expiry(inst: Instrument, market: Market, *, source: str | None = None,
                    field: str | None = None) -> float:
    """T of ``inst`` under ``market`` (0 for perpetuals and spot); raises ``InputError`` if it expired before
    the market's as_of, or if it was given by a Deribit name that the market's chain does not list, naming
    ``source``/``field`` (where the instrument was given) or else the market."""
    if inst.expiry is None:
        return 0.0
    t = market.years_to(inst.expiry)
    if t < 0:
        where = dict(source=source, field=field) if source or field else dict(source=market.source, field="as_of")
        raise InputError(f"{inst.name} expired on {inst.expiry:%Y-%m-%d %H:%M} UTC, before the market's "
                         f"as_of {market.as_of:%Y-%m-%d %H:%M} UTC ({market.source})", **where)
    if inst.named and (why := market.unlisted(inst)) is not None:
        raise InputError(why, source=source, field=field)
    return t


def resolve(instruments: list[Instrument], quantities, market: Market, *,
            origins: list[tuple[str | None, str | None]] | None = None,
            notices: list[str] | None = None) -> list[ResolvedPosition]:
    """Look each instrument up in ``market``; raises ``InputError`` naming what is missing.

    ``origins``: (source, field) per instrument where it was given (a portfolio file and its position), so
    that an expired instrument is reported there; without it the market's as_of is named.
    On a chain market an option given by its Deribit name that the chain does not list is an ``InputError``
    (``years_to_expiry``); one in the explicit form is valued, with a line added to ``notices`` (when given).
    """
    out = []
    vols = _option_vols(instruments, market)
    for i, (inst, q) in enumerate(zip(instruments, quantities)):
        spot = market.spot(inst.underlying)
        source, field = origins[i] if origins is not None else (None, None)
        t = years_to_expiry(inst, market, source=source, field=field)
        if market.unlisted(inst) is not None:  # explicit form (a Deribit name raised in years_to_expiry)
            at = f"{field.rsplit('.', 1)[0]}: " if field else ""
            note = f"{source or 'portfolio'}: {at}{inst.name} is not listed in the chain " \
                   f"{market.source}; valued from the market's smile and forward curve (explicit form)"
            if notices is not None and note not in notices:
                notices.append(note)
        fwd = market.forward(inst.underlying, inst.expiry)
        vol = 0.5
        if inst.is_option:
            vol = vols.get((inst.underlying, inst.expiry, inst.strike))
            vol = market.vol(inst.underlying, inst.expiry, inst.strike) if vol is None else vol
        out.append(ResolvedPosition(inst, float(q), t, spot, fwd, vol))
    return out


def _option_vols(instruments: list[Instrument], market: Market) -> dict:
    """{(underlying, expiry, strike): vol} of the options, one smile lookup per expiry (``Market.vols``: the bits of
    ``Market.vol``); empty when a lookup fails, so that ``resolve``'s loop raises its own error, in order."""
    groups: dict[tuple, set] = {}
    for inst in instruments:
        if inst.is_option and inst.expiry > market.as_of:
            groups.setdefault((inst.underlying, inst.expiry), set()).add(inst.strike)
    out = {}
    try:
        for (u, expiry), strikes in groups.items():
            ks = sorted(strikes)
            out.update(((u, expiry, k), v) for k, v in zip(ks, market.vols(u, expiry, np.asarray(ks, float)).tolist()))
    except InputError:
        return {}
    return out


def resolve_portfolio(portfolio: Portfolio, market: Market) -> list[ResolvedPosition]:
    """``resolve`` for a portfolio's positions, errors naming the portfolio file and position."""
    return resolve(portfolio.instruments, [p.quantity for p in portfolio.positions], market,
                   origins=[portfolio.origin(i) for i in portfolio.instruments], notices=portfolio.notices)


def make_book(resolved: list[ResolvedPosition], market: Market, margin_currency: str = "USD", *,
              dtype=jnp.float64, size: int | None = None) -> Book:
    """Pack resolved positions into a padded ``Book`` (size: a bucket from ``bucket_size`` by default)."""
    check_dtype(dtype)
    n = len(resolved)
    size = bucket_size(n) if size is None else size
    if size < n:
        raise ValueError(f"size {size} < {n} positions")
    pad = size - n
    col = lambda f, name: np.array([f(r) for r in resolved] + [PAD_ROW[name]] * pad)  # noqa: E731
    und_spot = [market.underlyings[u].spot if u in market.underlyings else 1.0 for u in UNDERLYINGS]
    mc = -1 if margin_currency == "USD" else UNDERLYINGS.index(margin_coin_check(margin_currency, market))
    f = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    return Book(
        underlying=jnp.asarray(col(lambda r: UNDERLYINGS.index(r.instrument.underlying), "underlying"), jnp.int32),
        kind=jnp.asarray(col(lambda r: KINDS.index(r.instrument.kind), "kind"), jnp.int32),
        inverse=jnp.asarray(col(lambda r: r.instrument.settlement == "inverse", "inverse"), bool),
        is_call=jnp.asarray(col(lambda r: r.instrument.right == "call", "is_call"), bool),
        strike=f(col(lambda r: r.instrument.strike or 1.0, "strike")),
        quantity=f(col(lambda r: r.quantity, "quantity")),
        expiry_years=f(col(lambda r: r.expiry_years, "expiry_years")),
        spot=f(col(lambda r: r.spot, "spot")),
        forward=f(col(lambda r: r.forward, "forward")),
        vol=f(col(lambda r: r.vol, "vol")),
        underlying_spot=f(und_spot),
        margin_coin=jnp.asarray(mc, jnp.int32),
    )


def pad_book(book: Book, size: int) -> Book:
    """``book`` padded along its positions axis (the last; leading accounts or days axes allowed) to ``size``
    rows of ``PAD_ROW``; numpy fields stay numpy, device arrays stay device arrays."""
    n = book.size
    if size < n:
        raise ValueError(f"size {size} < {n} positions")
    if size == n:
        return book

    def pad(name, x):
        xp = np if isinstance(x, np.ndarray) else jnp
        fill = xp.full(x.shape[:-1] + (size - n,), PAD_ROW[name], x.dtype)
        return xp.concatenate([x, fill], axis=-1)

    return dataclasses.replace(book, **{name: pad(name, getattr(book, name)) for name in PAD_ROW})


def margin_coin_check(margin_currency: str, market: Market) -> str:
    market.spot(margin_currency)  # raises if the market lacks the margin coin
    return margin_currency


def book_from_portfolio(portfolio: Portfolio, market: Market, *, dtype=jnp.float64, size: int | None = None):
    """(Book, resolved positions) for a portfolio under a market."""
    resolved = resolve_portfolio(portfolio, market)
    return make_book(resolved, market, portfolio.margin_currency, dtype=dtype, size=size), resolved
