"""The monitor's compiled update: every contract the accounts hold is valued once per market, each account's
figures follow from its quantities.

Accounts held by one desk share their contracts (1,000 accounts of 20 options drawn from one chain hold about 770
contracts, not 20,000). ``ContractTable`` keeps one row per contract (host arrays, padded to a bucket, the last row
always padding). On each update ``contract_terms`` values every row once, quantity 1, in every margin currency the
accounts use: SPAN's 16 losses, composite delta and value (``span_terms``), the Deribit grid's 35 P&Ls and delta
(``deribit_terms``). Those figures are proportional to the quantity, so an account's row i of contract c and quantity
q has q times contract c's figures; ``account_figures`` gathers them and applies each measure's own rules to them
(``span_from_terms``, ``deribit_from_terms``: the same code as ``span_margin`` and ``deribit_margin``), with the
equity, for every account in one compiled call. The figures equal ``pmjax margin``'s to rounding (q x f(1) against
f(q): a few ulps). Formulas: docs/methodology.md section 9.4.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from pmjax.batch.sharding import pad_accounts
from pmjax.core.book import FUTURE, PERPETUAL, Book, HostOrDevice, ResolvedPosition, bucket_size, make_book
from pmjax.core.instruments import UNDERLYINGS, Instrument
from pmjax.core.kernel import futures_pnl_usd, no_shock, position_values
from pmjax.core.market import Market
from pmjax.measures.deribit import DeribitParams, DeribitTerms, deribit_from_terms, deribit_terms
from pmjax.measures.span import SpanParams, SpanTerms, span_from_terms, span_terms

#: a contract row's fields (the Book's per-row fields other than the quantity)
ROW_FIELDS = ("underlying", "kind", "inverse", "is_call", "strike", "expiry_years", "spot", "forward", "vol")
#: the columns of ``account_figures``: equity's three parts, then SPAN's and the Deribit grid's figures
EQUITY_FIGURES = ("collateral", "positions_value", "futures_pnl")
SPAN_FIGURES = ("total", "nov", "risk")
DERIBIT_FIGURES = ("initial", "maintenance")


class ContractTable:
    """One row per contract held (host arrays of ``ROW_FIELDS``), padded to a bucket that always keeps a spare
    row: the last row is padding, where the accounts' empty rows point."""

    def __init__(self, resolved: list[ResolvedPosition], market: Market, dtype):
        self.dtype = dtype
        self.instruments: list[Instrument] = []
        self.index: dict[Instrument, int] = {}
        self.groups: dict[tuple, list[int]] = {}  # (underlying, expiry) -> rows: one forward and smile each
        self._group_rows: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # -> (rows, option rows) arrays
        self.fields = self._rows(resolved, market, bucket_size(len(resolved) + 1))
        for r in resolved:
            self._register(r.instrument)

    def _rows(self, resolved, market, size) -> dict[str, np.ndarray]:
        book = make_book([dataclasses.replace(r, quantity=1.0) for r in resolved], market, dtype=self.dtype,
                         size=size)
        return {f: np.array(getattr(book, f)) for f in ROW_FIELDS}

    def _register(self, inst: Instrument) -> None:
        row = len(self.instruments)
        self.instruments.append(inst)
        self.index[inst] = row
        self.groups.setdefault((inst.underlying, inst.expiry), []).append(row)
        self._group_rows.pop((inst.underlying, inst.expiry), None)

    def group_rows(self, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(rows, option rows) of one (underlying, expiry) group, as index arrays (kept until the group grows)."""
        if key not in self._group_rows:
            rows = np.asarray(self.groups[key])
            self._group_rows[key] = rows, rows[[self.instruments[i].is_option for i in rows]]
        return self._group_rows[key]

    @property
    def size(self) -> int:
        return self.fields["strike"].shape[0]

    @property
    def pad_row(self) -> int:
        return self.size - 1

    def add(self, resolved: ResolvedPosition, market: Market) -> tuple[int, bool]:
        """(row of ``resolved``'s contract, whether the table grew: the next update compiles once)."""
        inst = resolved.instrument
        if inst in self.index:
            return self.index[inst], False
        row = len(self.instruments)
        grew = row + 1 >= self.size
        if grew:  # the next bucket; the padding row moves to the new end
            new = bucket_size(self.size + 1)
            pad = self._rows([], market, new - self.size)
            self.fields = {f: np.concatenate([v, pad[f]]) for f, v in self.fields.items()}
        one = self._rows([resolved], market, 1)
        for f in ROW_FIELDS:
            self.fields[f][row] = one[f][0]
        self._register(inst)
        return row, grew

    def refresh(self, market: Market) -> np.ndarray:
        """Write ``market`` into the market fields, one forward and one smile lookup per expiry. Returns which
        contracts expired at or before it (their rows get the index as forward and T = 0)."""
        f, dtype = self.fields, self.fields["spot"].dtype
        expired = np.zeros(len(self.instruments), bool)
        for (u, expiry) in self.groups:
            rows, options = self.group_rows((u, expiry))
            spot = market.spot(u)
            f["spot"][rows] = spot
            if expiry is None or expiry <= market.as_of:
                f["forward"][rows], f["expiry_years"][rows] = spot, 0.0
                expired[rows] = expiry is not None
                continue
            f["forward"][rows] = market.forward(u, expiry)
            f["expiry_years"][rows] = market.years_to(expiry)
            if options.size:
                f["vol"][options] = market.vols(u, expiry, f["strike"][options].astype(float)).astype(dtype)
        return expired

    def books(self, underlying_spot: np.ndarray, margin_coins: tuple[int, ...]) -> Book:
        """The table once per margin currency (leading axis), quantity 1 on every row."""
        c, m = len(margin_coins), self.size
        rows = {f: np.broadcast_to(v, (c, m)) for f, v in self.fields.items()}
        return Book(**rows, quantity=np.ones((c, m), self.fields["spot"].dtype),
                    underlying_spot=np.broadcast_to(underlying_spot, (c, len(UNDERLYINGS))),
                    margin_coin=np.asarray(margin_coins, np.int32))


class ContractTerms(eqx.Module):
    """Every contract's figures per coin, per margin currency (leading axis c). Scenario figures are stored
    contract-major, (c, m, s), so that an account's gather reads each contract's scenarios contiguously."""

    value: Float[Array, "c m"]  # today's value, margin currency
    span_losses: Float[Array, "c m 16"] | None
    span_delta: Float[Array, "c m"] | None  # composite delta, coins
    deribit_pnl: Float[Array, "c m se"] | None  # pool currency
    deribit_delta: Float[Array, "c m"] | None


@jax.jit
def contract_terms(tables: Book, span_params: SpanParams | None, deribit_params: DeribitParams | None
                   ) -> ContractTerms:
    """Value, SPAN terms and Deribit terms of every row of ``tables`` (c, m); a None parameter skips its measure."""
    value = jax.vmap(lambda b: position_values(b, no_shock(b)))(tables)
    span = deribit = None
    if span_params is not None:
        st = jax.vmap(span_terms, in_axes=(0, None))(tables, span_params)
        span = (jnp.swapaxes(st.losses, 1, 2), st.composite_delta)
    if deribit_params is not None:
        dt = jax.vmap(deribit_terms, in_axes=(0, None))(tables, deribit_params)
        deribit = (jnp.swapaxes(dt.pnl, 1, 2), dt.delta)
    return ContractTerms(value, *(span or (None, None)), *(deribit or (None, None)))


class AccountRows(eqx.Module):
    """The accounts as rows of the contract table (leading axis a)."""

    currency: Int[HostOrDevice, " a"]  # which copy of the table (margin currency)
    row: Int[HostOrDevice, "a n"]  # table row of each position (the table's padding row for empty rows)
    quantity: Float[HostOrDevice, "a n"]  # coins
    entry_forward: Float[HostOrDevice, "a n"]  # futures' entry price, USD
    collateral: Float[HostOrDevice, "a k"]  # USD, then coins of UNDERLYINGS


def _account_book(tables: Book, c, row, quantity) -> Book:
    take = lambda x: x[c, row]  # noqa: E731
    return Book(**{f: take(getattr(tables, f)) for f in ROW_FIELDS}, quantity=quantity,
                underlying_spot=tables.underlying_spot[c], margin_coin=tables.margin_coin[c])


def _equity(book: Book, values, entry_forward, collateral):
    """(collateral, position values, futures P&L since entry), margin currency (``pmjax.apps.monitor``)."""
    futures = (book.kind == FUTURE) | (book.kind == PERPETUAL)
    pnl_usd = book.quantity * futures_pnl_usd(book.inverse, entry_forward, book.forward, book.spot)
    has_coin = book.margin_coin >= 0
    to_margin = jnp.where(has_coin, 1.0 / book.underlying_spot[jnp.maximum(book.margin_coin, 0)],
                          jnp.ones((), values.dtype))
    coll_usd = collateral[0] + jnp.sum(collateral[1:] * book.underlying_spot)
    return jnp.stack([coll_usd * to_margin, jnp.sum(jnp.where(futures, 0.0, values)),
                      jnp.sum(jnp.where(futures, pnl_usd, 0.0)) * to_margin])


def _one_account(tables: Book, terms: ContractTerms, acc: AccountRows, span_params, deribit_params):
    c, row, q = acc.currency, acc.row, acc.quantity
    book = _account_book(tables, c, row, q)
    value = terms.value[c, row] * q
    out = [_equity(book, value, acc.entry_forward, acc.collateral)]
    if terms.span_losses is not None:
        st = SpanTerms((terms.span_losses[c, row] * q[:, None]).T, terms.span_delta[c, row] * q, value)
        r = span_from_terms(book, span_params, st)
        out.append(jnp.stack([r.total, r.nov, r.risk]))
    if terms.deribit_pnl is not None:
        dt = DeribitTerms((terms.deribit_pnl[c, row] * q[:, None]).T, terms.deribit_delta[c, row] * q)
        r = deribit_from_terms(book, deribit_params, dt)
        out.append(jnp.stack([r.initial, r.maintenance]))
    return jnp.concatenate(out)


@jax.jit
def account_figures(tables: Book, terms: ContractTerms, accounts: AccountRows, span_params: SpanParams | None,
                    deribit_params: DeribitParams | None) -> Float[Array, "a f"]:
    """Per account: ``EQUITY_FIGURES``, then ``SPAN_FIGURES`` and ``DERIBIT_FIGURES`` for the measures given."""
    return jax.vmap(_one_account, in_axes=(None, None, 0, None, None))(tables, terms, accounts, span_params,
                                                                        deribit_params)


@jax.jit
def terms_and_figures(tables: Book, accounts: AccountRows, span_params: SpanParams | None,
                      deribit_params: DeribitParams | None) -> Float[Array, "a f"]:
    """``account_figures`` of ``contract_terms``, in one compiled call: when every account fits one chunk, one
    dispatch per update instead of two."""
    return account_figures(tables, contract_terms(tables, span_params, deribit_params), accounts, span_params,
                           deribit_params)


def figures_in_chunks(tables: Book, accounts: AccountRows, chunk: int, span_params, deribit_params, *,
                      limit: int | None = None) -> list[tuple[int, Array]]:
    """Every contract's terms, then ``account_figures`` ``chunk`` accounts per call (a fixed shape: the last chunk
    padded by ``pad_accounts``) for the first ``limit`` accounts (default all): [(first account, figures)], every
    call dispatched before any is read. When they fit one chunk, terms and figures are one call
    (``terms_and_figures``)."""
    n = accounts.row.shape[0] if limit is None else limit
    padded, _ = pad_accounts(jax.tree_util.tree_map(lambda x: x[:n], accounts), chunk)  # padding rows: dropped
    if n <= chunk:
        return [(0, terms_and_figures(tables, padded, span_params, deribit_params))]
    terms = contract_terms(tables, span_params, deribit_params)
    return [(start, account_figures(tables, terms, jax.tree_util.tree_map(lambda x: x[start:start + chunk], padded),
                                    span_params, deribit_params)) for start in range(0, n, chunk)]


__all__ = ["AccountRows", "ContractTable", "ContractTerms", "DERIBIT_FIGURES", "EQUITY_FIGURES", "ROW_FIELDS",
           "SPAN_FIGURES", "account_figures", "contract_terms", "figures_in_chunks", "terms_and_figures"]
