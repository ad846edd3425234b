"""Many accounts at once: every account's book resolved, padded to one bucket and stacked along a leading
accounts axis (``build_batch``), ready for ``pmjax.batch.sharding.map_accounts``.

Both the position axis and the accounts axis are padded to size buckets (powers of two), so a second
batch of the same buckets reuses the compiled code. Padding accounts hold only padding rows (quantity
0) and are dropped from the results. Results do not depend on how accounts are chunked.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import Book, ResolvedPosition, bucket_size, make_book, resolve_portfolio
from pmjax.core.errors import InputError
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio


def stack_books(books: list[Book]) -> Book:
    """Books of one size and dtype stacked along a new leading accounts axis, as host (numpy) arrays: slices
    of them cost no compilation, and each jitted call moves its chunk to the device."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *books)


@dataclasses.dataclass


class AccountBatch:
    """Accounts resolved against a market, their books padded to ``size`` rows and stacked."""

    portfolios: list[Portfolio]
    resolved: list[list[ResolvedPosition]]
    books: Book  # host arrays with a leading accounts axis, padded to ``n_padded``
    size: int  # rows per book

    @property
    def n_accounts(self) -> int:
        return len(self.portfolios)

    @property
    def n_padded(self) -> int:
        return self.books.quantity.shape[0]


def build_batch(portfolios: list[Portfolio], market: Market, *, dtype=jnp.float64, size: int | None = None,
                n_padded: int | None = None) -> AccountBatch:
    """Resolve and pad every account's book to one bucket (the largest account's, or ``size``) and pad the
    accounts axis to ``n_padded`` (default: the accounts' bucket size) with empty accounts."""
    if not portfolios:
        raise InputError("no accounts")
    resolved = [resolve_portfolio(p, market) for p in portfolios]  # errors name the account file and position
    size = bucket_size(max(len(r) for r in resolved)) if size is None else size
    n_padded = bucket_size(len(portfolios), minimum=1) if n_padded is None else n_padded
    books = [make_book(r, market, p.margin_currency, dtype=dtype, size=size) for r, p in zip(resolved, portfolios)]
    if n_padded > len(books):
        books += [make_book([], market, "USD", dtype=dtype, size=size)] * (n_padded - len(books))
    return AccountBatch(portfolios, resolved, stack_books(books), size)
