"""Many accounts at once: SPAN, the Deribit grid and named scenarios over a stacked batch of books,
chunked and sharded over every local device (``pmjax stress``) through ``pmjax.batch.sharding.map_accounts``
and the cached vmapped one-account measures (``sharding.vmapped``)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from pmjax.batch.accounts import AccountBatch, build_batch
from pmjax.batch.sharding import deribit_chunk, map_accounts, span_chunk, stress_chunk, vmapped
from pmjax.core.book import Book
from pmjax.measures.deribit import DeribitParams, DeribitResult, deribit_margin, deribit_section
from pmjax.measures.span import SpanParams, SpanResult, span_margin, span_section
from pmjax.scenarios.base import ScenarioSet
from pmjax.scenarios.named import StressScenario, named_scenarios


def span_batch(batch: AccountBatch, params: SpanParams, *, chunk: int | None = None,
               devices=None) -> SpanResult:
    """SPAN of every account (``span_margin`` vmapped, through ``map_accounts``); a ``SpanResult`` of host
    (numpy) arrays whose leading axis holds the batch's real accounts only. The accounts are sharded over
    ``devices`` (default: every local device). ``chunk``: accounts per call (default ``sharding.span_chunk``
    of the memory at hand, a multiple of the device count); the results are the same for any chunk."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if chunk is None:
        chunk = span_chunk(batch.size, batch.books.quantity.dtype, n_devices=len(devices))
    result = map_accounts(vmapped(span_margin), batch.books, (params,), chunk=chunk, devices=devices)
    return jax.tree_util.tree_map(lambda x: x[:batch.n_accounts], result)


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

def account_total_pnl(book: Book, scenarios: ScenarioSet):
    """Total P&L (margin currency, gain positive) of one account under each scenario of a set."""
    return scenarios.pnl(book).sum(axis=-1)


def stress_pnl(batch: AccountBatch, scenarios: list[StressScenario], *, chunk: int | None = None) -> np.ndarray:
    """(accounts, scenarios) P&L matrix in each account's margin currency (gain positive), on one device.
    ``chunk``: accounts per call (default ``sharding.stress_chunk`` of the memory at hand); the results are
    the same for any."""
    dtype = batch.books.quantity.dtype
    if chunk is None:
        chunk = stress_chunk(batch.size, len(scenarios), dtype, n_devices=1)
    sset = named_scenarios(scenarios, dtype=dtype)
    pnl = map_accounts(vmapped(account_total_pnl), batch.books, (sset,), chunk=chunk, devices=jax.local_devices()[:1])
    return pnl[:batch.n_accounts]


def account_scenario_pnl(portfolio, market, scenarios: list[StressScenario], *, dtype) -> dict[str, float]:
    """One account's P&L under each named scenario, ``{name: P&L}`` in its margin currency (gain positive):
    what ``pmjax margin --scenarios`` and ``pmjax report --scenarios`` report."""
    pnl = stress_pnl(build_batch([portfolio], market, dtype=dtype), scenarios)[0]
    return {s.name: float(x) for s, x in zip(scenarios, pnl)}


def deribit_margin_sharded(books: Book, params: DeribitParams, *, chunk: int | None = None,
                           devices: Sequence | None = None) -> DeribitResult:
    """The Deribit grid (``deribit_margin`` vmapped, through ``map_accounts``) of every account of ``books``
    (stacked host arrays), sharded over ``devices`` (default: every local device): a ``DeribitResult`` of host
    arrays, one row per row of ``books``. ``chunk``: accounts per call (default ``sharding.deribit_chunk``)."""
    if chunk is None:
        n_dev = len(devices) if devices is not None else None
        chunk = deribit_chunk(books.quantity.shape[-1], books.quantity.dtype, n_devices=n_dev)
    return map_accounts(vmapped(deribit_margin), books, (params,), chunk=chunk, devices=devices)


def deribit_sections(batch: AccountBatch, result: DeribitResult, params: DeribitParams) -> list[dict]:
    """The SPEC ``deribit`` section of each account of a batch result (rows beyond the batch's real
    accounts are padding and ignored)."""
    host = jax.tree_util.tree_map(np.asarray, result)
    return [deribit_section(jax.tree_util.tree_map(lambda x: x[a], host), batch.resolved[a], p.margin_currency,
                            params) for a, p in enumerate(batch.portfolios)]
