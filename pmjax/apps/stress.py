"""Many accounts at once: SPAN, the Deribit grid and named scenarios over a stacked batch of books,
chunked and sharded over every local device (``pmjax stress``)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.batch.accounts import AccountBatch, _chunks, build_batch
from pmjax.batch.sharding import deribit_chunk, map_accounts, span_chunk, stress_chunk
from pmjax.core.book import Book
from pmjax.core.kernel import Shock, position_pnl
from pmjax.measures.span import SpanParams, SpanResult, span_margin_batch, span_section
from pmjax.scenarios.grids import VOL_FLOOR
from pmjax.scenarios.named import StressScenario


def span_batch(batch: AccountBatch, params: SpanParams, *, chunk: int | None = None,
               devices=None) -> SpanResult:
    """SPAN of every account, in jitted vmapped calls; a ``SpanResult`` of host (numpy) arrays whose
    leading axis holds the batch's real accounts only (slicing on the host compiles nothing). With
    several ``devices`` (default: every local device) the accounts are sharded over them. ``chunk``:
    accounts per call (default ``sharding.span_chunk`` of the memory at hand, a multiple of the device
    count); the results are the same for any chunk."""
    from pmjax.batch.sharding import span_chunk

    devices = list(devices) if devices is not None else jax.local_devices()
    if chunk is None:
        chunk = span_chunk(batch.size, batch.books.quantity.dtype, n_devices=len(devices))
    if len(devices) > 1:
        from pmjax.apps.stress import span_margin_sharded

        result = span_margin_sharded(batch.books, params, chunk=chunk, devices=devices)
        return jax.tree_util.tree_map(lambda x: x[:batch.n_accounts], result)
    parts = [jax.tree_util.tree_map(np.asarray, span_margin_batch(b, params)) for b in _chunks(batch, chunk)]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:batch.n_accounts], *parts)


def span_sections(batch: AccountBatch, result: SpanResult, *, positions: bool = False,
                  as_of=None) -> list[dict]:
    """The SPEC ``span`` section of each account of a batch result (with ``by_position`` if ``positions``;
    ``as_of``: the market's, for exact days to expiry)."""
    host = jax.tree_util.tree_map(np.asarray, result)
    return [span_section(jax.tree_util.tree_map(lambda x: x[i], host),
                         {x.instrument.underlying for x in p.positions},
                         batch.resolved[i] if positions else None, as_of=as_of)
            for i, p in enumerate(batch.portfolios)]


# ---------------------------------------------------------------- named stress scenarios

def _account_stress_pnl(book: Book, price_move, vol_shift, dt):
    """Total P&L (margin currency, gain positive) of one account under each joint scenario."""
    floor = jnp.asarray(VOL_FLOOR, book.quantity.dtype)

    def one(pm, vs, t):
        shock = Shock(1.0 + pm, vs[book.underlying], t, floor)
        return position_pnl(book, shock).sum()

    return jax.vmap(one)(price_move, vol_shift, dt)


stress_pnl_batch = jax.jit(jax.vmap(_account_stress_pnl, in_axes=(0, None, None, None)))


def stress_pnl(batch: AccountBatch, scenarios: list[StressScenario], *, chunk: int | None = None) -> np.ndarray:
    """(accounts, scenarios) P&L matrix in each account's margin currency (gain positive). ``chunk``: accounts
    per call (default ``sharding.stress_chunk`` of the memory at hand); the results are the same for any."""
    from pmjax.batch.sharding import stress_chunk

    dtype = batch.books.quantity.dtype
    if chunk is None:
        chunk = stress_chunk(batch.size, len(scenarios), dtype, n_devices=1)
    pm = jnp.asarray([s.price_move for s in scenarios], dtype)
    vs = jnp.asarray([s.vol_shift for s in scenarios], dtype)
    dt = jnp.asarray([s.days / 365.0 for s in scenarios], dtype)
    parts = [np.asarray(stress_pnl_batch(b, pm, vs, dt)) for b in _chunks(batch, chunk)]
    return np.concatenate(parts)[:batch.n_accounts]


def account_scenario_pnl(portfolio, market, scenarios: list[StressScenario], *, dtype) -> dict[str, float]:
    """One account's P&L under each named scenario, ``{name: P&L}`` in its margin currency (gain positive):
    what ``pmjax margin --scenarios`` and ``pmjax report --scenarios`` report."""
    pnl = stress_pnl(build_batch([portfolio], market, dtype=dtype), scenarios)[0]
    return {s.name: float(x) for s, x in zip(scenarios, pnl)}


def span_margin_sharded(books, params, *, chunk: int | None = None, devices: Sequence | None = None):
    """SPAN (``span.span_margin_batch``) of every account of ``books`` (a stacked ``Book`` of host arrays),
    accounts sharded over ``devices``: a ``SpanResult`` of host arrays, one row per account.
    ``chunk``: accounts per call (default ``span_chunk`` of the memory at hand)."""
    from pmjax.measures.span import span_margin_batch

    if chunk is None:
        n_dev = len(devices) if devices is not None else None
        chunk = span_chunk(books.quantity.shape[-1], books.quantity.dtype, n_devices=n_dev)
    return map_accounts(span_margin_batch, books, (params,), chunk=chunk, devices=devices)


def deribit_margin_sharded(books, params, initial_addons=None, *, chunk: int | None = None,
                           devices: Sequence | None = None):
    """The Deribit grid (``deribit.deribit_margin_batch``) of every account, sharded as ``span_margin_sharded``.
    ``initial_addons``: (accounts, u) coin amounts (default 0)."""
    from pmjax.measures.deribit import _deribit_margin_batch_jit

    n, rows = books.quantity.shape
    dtype = books.quantity.dtype
    addons = np.zeros((n,) + books.underlying_spot.shape[1:], dtype) if initial_addons is None else \
        np.broadcast_to(np.asarray(initial_addons, dtype), (n,) + books.underlying_spot.shape[1:])
    if chunk is None:
        n_dev = len(devices) if devices is not None else None
        chunk = deribit_chunk(rows, dtype, n_devices=n_dev)
    return map_accounts(_deribit_margin_batch_jit, books, (params,), (addons,), chunk=chunk, devices=devices)


