"""What-if margin, fast: the incremental margin of candidate trades on an account, warm in about a
millisecond on a CPU for SPAN and the Deribit grid.

``WhatIf(portfolio, market, config)`` resolves the account once into a book padded with spare rows and
keeps it on the host as one packed matrix (one row per book field); the figures *before* the trades
are computed once, there. ``incremental(trades)`` resolves only the trades' instruments that the
account does not hold (a market lookup each), writes them into spare rows, raises the quantities of
those it holds, and sends the packed matrix to the device in one transfer: a small jitted call unpacks
it into the book after the trades (casts only), then the regular path's own jitted functions
(``pmjax.measures.span.span_margin``, the Deribit grid ``pmjax.measures.deribit.deribit_margin``) run on it, compiled
ahead of time for the account's shapes (``.lower(...).compile()`` at construction: the same lowering,
hence the same executable, called without jit's per-call dispatch). Figures
are those of ``pmjax margin --what-if`` (SPEC section 3): span ``total``, deribit ``initial`` (margin
currency); rules ``initial`` and var ``es`` go through the regular path (``pmjax.measures``), as
neither is a jitted book function.

Exactness. ``before`` and ``after`` are bitwise the regular margin functions' figures on the same
padded book (the same compiled executable on the same arrays), and ``incremental`` is ``after -
before`` exactly (one float64 subtraction). Book rows are laid out as the regular path lays them out
(``Portfolio.with_trades``: held instruments keep their row, new ones follow in trade order); the
what-if book is padded to ``bucket_size(positions + min_spare)`` rows where ``pmjax margin`` pads to
``bucket_size(positions)``. Padding rows hold quantity 0 and add exact zeros, so the two agree bitwise
wherever XLA reduces the longer axis in the same order, which it does on the CPU for every case in
tests/test_whatif.py; XLA does not promise it, and a reduction reordered by the padding would differ
by a few ulps of the figure (about 1e-16 relative per addition). An earlier version evaluated before
and after in one fused, vmapped call: XLA compiled that differently from the single-book functions
and moved the Deribit figure by up to ~1e-10 relative (a last-bit change in a coin worst case, then
amplified by the rounding to 1e-9 coin and the conversion to the margin currency); SPAN moved by a
few ulps. Evaluating with the regular compiled functions removes that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import Book, bucket_size, make_book, resolve
from pmjax.io.config import load_config
from pmjax.measures.deribit import deribit_margin, deribit_params
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument, parse_instrument
from pmjax.core.market import Market
from pmjax.apps.margin import HEADLINE, METHODS, compute_margins
from pmjax.core.portfolio import Portfolio, Position
from pmjax.core.validate import finite_number
from pmjax.io.portfolio import parse_trades
from pmjax.measures.span import span_margin, span_params

#: methods the jitted fast path computes; the others use the regular path
FAST_METHODS = ("span", "deribit")
#: at least this many spare rows beyond the account's positions (the bucket's padding counts)
MIN_SPARE = 4

# packed host matrix: one row per book field (floats; integer and boolean fields are cast back in the jit)
_FIELDS = ("underlying", "kind", "inverse", "is_call", "strike", "expiry_years", "spot", "forward", "vol",
           "quantity_before", "quantity_after")
_ROW = {f: i for i, f in enumerate(_FIELDS)}


def _unpack(packed, underlying_spot, margin_coin, quantity_row: int) -> Book:
    """The book of the packed matrix with row ``quantity_row``'s quantities, every field cast to the dtype
    ``pmjax.core.book.make_book`` gives it (so the regular path's compiled functions take it as they are)."""
    dtype = underlying_spot.dtype
    return Book(
        underlying=packed[0].astype(jnp.int32), kind=packed[1].astype(jnp.int32), inverse=packed[2] != 0,
        is_call=packed[3] != 0, strike=packed[4].astype(dtype), quantity=packed[quantity_row].astype(dtype),
        expiry_years=packed[5].astype(dtype), spot=packed[6].astype(dtype), forward=packed[7].astype(dtype),
        vol=packed[8].astype(dtype), underlying_spot=underlying_spot, margin_coin=margin_coin,
    )


#: the regular path's one-account functions, jitted (compiled ahead of time per account below)
_JITTED = {"span": jax.jit(span_margin), "deribit": jax.jit(deribit_margin)}


def as_trades(trades) -> list[Position]:
    """Trades as ``Position`` objects, from ``Position`` objects, ``("INSTRUMENT", qty)`` pairs (an
    ``Instrument`` also does for the name), one of either, or ``"INSTRUMENT:QTY,..."`` text."""
    if isinstance(trades, str):
        return parse_trades(trades)
    if isinstance(trades, Position) or (isinstance(trades, tuple) and len(trades) == 2
                                        and isinstance(trades[0], (str, Instrument))):
        trades = [trades]
    out = []
    for i, t in enumerate(trades):
        where = f"trade {i + 1}"
        if isinstance(t, Position):
            out.append(t)
        elif isinstance(t, (tuple, list)) and len(t) == 2 and isinstance(t[0], (str, Instrument)):
            inst = t[0] if isinstance(t[0], Instrument) else parse_instrument(t[0], source="what-if", field=where)
            out.append(Position(inst, finite_number(t[1], source="what-if", field=f"{where} quantity")))
        else:
            raise InputError(f"{t!r} is not a Position, an (instrument, quantity) pair or 'INSTRUMENT:QTY'",
                             source="what-if", field=where)
    if not out:
        raise InputError("no trades given", source="what-if")
    return out


#: the book after the trades, on the device, from the packed host matrix (one transfer, casts only)
_after_book = jax.jit(lambda packed, underlying_spot, margin_coin:
                      _unpack(packed, underlying_spot, margin_coin, _ROW["quantity_after"]))


class WhatIf:
    """Incremental margin of candidate trades on one account, against one market and config.

    Build once per account; then ``incremental(trades)`` any number of times (each relative to the
    account as built). ``methods``: any of rules, span, deribit, var; span and deribit take the fast path.
    """

    def __init__(self, portfolio: Portfolio, market: Market, config: dict | None = None, *,
                 methods=FAST_METHODS, dtype=jnp.float64, min_spare: int = MIN_SPARE):
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise InputError(f"unknown method(s) {', '.join(bad)} (choose from {', '.join(METHODS)})",
                             source="what-if")
        self.portfolio = portfolio
        self.market = market
        self.config = load_config() if config is None else config
        self.methods = tuple(methods)
        self.fast = tuple(m for m in self.methods if m in FAST_METHODS)
        self.dtype = dtype
        n = len(portfolio.positions)
        resolved = resolve(portfolio.instruments, [p.quantity for p in portfolio.positions], market)
        self.size = bucket_size(n + min_spare)
        book = make_book(resolved, market, portfolio.margin_currency, dtype=dtype, size=self.size)
        host = {f: np.asarray(getattr(book, f), np.float64) for f in _FIELDS[:9]}
        host["quantity_before"] = np.asarray(book.quantity, np.float64)
        host["quantity_after"] = host["quantity_before"]
        self._packed = np.stack([host[f] for f in _FIELDS])  # (fields, size), float64 on the host
        self._row_of = {p.instrument: i for i, p in enumerate(portfolio.positions)}
        self._n = n
        self._underlying_spot = jax.device_put(book.underlying_spot)
        self._margin_coin = jax.device_put(book.margin_coin)
        self._span = span_params(self.config, dtype=dtype) if "span" in self.fast else None
        self._deribit = deribit_params(self.config, dtype=dtype) if "deribit" in self.fast else None
        # the regular path's jitted functions, compiled ahead of time for this book's shapes: the same
        # lowering, so the same executable and bitwise the same figures, without the per-call jit dispatch
        params = {"span": self._span, "deribit": self._deribit}
        self._compiled = {m: _JITTED[m].lower(book, params[m]).compile() for m in self.fast}
        self._unpack = _after_book.lower(self._packed, self._underlying_spot, self._margin_coin).compile()
        self._before = self._figures(book)  # the account as built, on its padded book: computed once
        self._slow_before: dict | None = None

    @property
    def spare_rows(self) -> int:
        return self.size - self._n

    def _packed_after(self, trades: list[Position]) -> np.ndarray:
        """The packed matrix with the trades written in: held instruments' quantities raised, new ones in
        spare rows (resolved against the market here: the only market lookups of a what-if)."""
        new: dict[Instrument, float] = {}
        packed = self._packed.copy()
        qa = packed[_ROW["quantity_after"]]
        for t in trades:
            row = self._row_of.get(t.instrument)
            if row is not None:
                qa[row] = qa[row] + t.quantity
            else:
                new[t.instrument] = new.get(t.instrument, 0.0) + t.quantity
        if len(new) > self.spare_rows:
            raise InputError(f"{len(new)} new instruments exceed the {self.spare_rows} spare rows of this what-if "
                             "(build it with a larger min_spare)", source="what-if")
        if new:
            resolved = resolve(list(new), list(new.values()), self.market)
            for j, r in enumerate(resolved):
                c = self._n + j
                inst = r.instrument
                packed[_ROW["underlying"], c] = UNDERLYINGS.index(inst.underlying)
                packed[_ROW["kind"], c] = ("option", "future", "perpetual", "spot").index(inst.kind)
                packed[_ROW["inverse"], c] = inst.settlement == "inverse"
                packed[_ROW["is_call"], c] = inst.right == "call"
                packed[_ROW["strike"], c] = inst.strike or 1.0
                packed[_ROW["expiry_years"], c] = r.expiry_years
                packed[_ROW["spot"], c] = r.spot
                packed[_ROW["forward"], c] = r.forward
                packed[_ROW["vol"], c] = r.vol
                qa[c] = r.quantity
        return packed

    def _figures(self, book: Book) -> np.ndarray:
        """(len(fast methods),) figures of ``book`` by the regular path's compiled functions: span total
        (``span_margin``), deribit initial (``deribit_margin``, no add-ons), dispatched together."""
        outs = [self._compiled["span"](book, self._span).total if m == "span"
                else self._compiled["deribit"](book, self._deribit).initial for m in self.fast]
        return np.array([float(o) for o in outs], np.float64)

    def fast_figures(self, trades) -> np.ndarray:
        """(len(fast methods), 2) figures before and after the trades (before: computed at construction);
        ``trades`` as ``incremental`` takes them."""
        packed = self._packed_after(as_trades(trades))
        if not self.fast:
            return np.zeros((0, 2))
        after = self._figures(self._unpack(packed, self._underlying_spot, self._margin_coin))
        return np.stack([self._before, after], axis=1)

    def incremental(self, trades) -> dict:
        """SPEC's ``what_if`` section: {"trades", "before", "after", "incremental"} by method.

        ``trades``: anything ``as_trades`` takes: ``Position`` objects, ``("INSTRUMENT", qty)`` pairs, one of
        either, or the ``"INSTRUMENT:QTY,..."`` text of ``--what-if``.
        """
        trades = as_trades(trades)
        before, after = {}, {}
        if self.fast:
            figs = self.fast_figures(trades)
            for k, m in enumerate(self.fast):
                before[m], after[m] = float(figs[k, 0]), float(figs[k, 1])
        slow = [m for m in self.methods if m not in FAST_METHODS]
        if slow:
            if self._slow_before is None:  # the account as built: computed once
                self._slow_before = compute_margins(self.portfolio, self.market, self.config, slow, dtype=self.dtype)
            done = compute_margins(self.portfolio.with_trades(trades), self.market, self.config, slow,
                                   dtype=self.dtype)
            for m in slow:
                before[m], after[m] = HEADLINE[m](self._slow_before[m]), HEADLINE[m](done[m])
        order = list(self.methods)
        return {"trades": [{"instrument": t.instrument.name, "quantity": t.quantity} for t in trades],
                "before": {m: before[m] for m in order}, "after": {m: after[m] for m in order},
                "incremental": {m: after[m] - before[m] for m in order}}


__all__ = ["FAST_METHODS", "WhatIf", "as_trades"]
