"""Many accounts at once: load them, pad their books to one bucket, stack along a leading accounts
axis and run a margin method over all of them in one jitted, vmapped call.

Both the position axis and the accounts axis are padded to size buckets (powers of two), so a second
batch of the same buckets reuses the compiled code. Padding accounts hold only padding rows (quantity
0) and are dropped from the results. Results do not depend on how accounts are chunked.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from .book import Book, ResolvedPosition, bucket_size, make_book, resolve_portfolio
from .errors import InputError
from .instruments import UNDERLYINGS, finite_number
from .kernel import Shock, position_pnl
from .market import Market
from .portfolio import Portfolio, load_portfolio, portfolio_from_dict, read_document
from .scenarios import VOL_FLOOR
from .span import SpanParams, SpanResult, span_margin_batch, span_section

PORTFOLIO_EXTENSIONS = (".yaml", ".yml", ".json", ".csv")
#: a fixed chunk for callers that want one (``span_batch``, ``stress_pnl`` and ``pmjax stress`` take theirs
#: from the memory at hand: ``pmjax.sharding.span_chunk``, ``stress_chunk``, ``deribit_chunk``)
DEFAULT_CHUNK = 4096


# ---------------------------------------------------------------- loading

def load_accounts(path: str) -> list[Portfolio]:
    """Accounts from a directory of portfolio files (each file one account, in name order), a multi-account
    YAML/JSON file (``accounts: [{account, margin_currency, positions}, ...]``) or a single portfolio file."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if os.path.splitext(f)[1].lower() in PORTFOLIO_EXTENSIONS)
        if not files:
            raise InputError(f"no portfolio files ({', '.join(PORTFOLIO_EXTENSIONS)}) in directory", source=path)
        return [load_portfolio(os.path.join(path, f)) for f in files]
    if not os.path.exists(path):
        raise InputError("no such file or directory", source=path)
    if path.lower().endswith(".csv"):
        return [load_portfolio(path)]
    doc = read_document(path)
    if isinstance(doc, dict) and "accounts" in doc:
        entries = doc["accounts"]
        if not isinstance(entries, list) or not entries:
            raise InputError("accounts must be a non-empty list", source=path, field="accounts")
        out = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise InputError("each account must be a mapping with positions", source=path, field=f"accounts[{i}]")
            entry = dict(entry)
            entry.setdefault("account", f"account-{i + 1}")
            out.append(portfolio_from_dict(entry, source=f"{path} accounts[{i}]"))
        return out
    return [portfolio_from_dict(doc, source=path)]


# ---------------------------------------------------------------- batching

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


def _chunks(batch: AccountBatch, chunk: int):
    """Slices of the stacked books of at most ``chunk`` accounts, each padded to the chunk's bucket."""
    n = batch.n_padded
    if n <= chunk:
        yield batch.books
        return
    for start in range(0, n, chunk):
        part = jax.tree_util.tree_map(lambda x: x[start:start + chunk], batch.books)
        m = part.quantity.shape[0]
        if m < chunk:  # pad the last chunk with copies of its last account (dropped later): one shape
            part = jax.tree_util.tree_map(lambda x: np.concatenate([x, np.repeat(x[-1:], chunk - m, 0)]), part)
        yield part


def span_batch(batch: AccountBatch, params: SpanParams, *, chunk: int | None = None,
               devices=None) -> SpanResult:
    """SPAN of every account, in jitted vmapped calls; a ``SpanResult`` of host (numpy) arrays whose
    leading axis holds the batch's real accounts only (slicing on the host compiles nothing). With
    several ``devices`` (default: every local device) the accounts are sharded over them. ``chunk``:
    accounts per call (default ``sharding.span_chunk`` of the memory at hand, a multiple of the device
    count); the results are the same for any chunk."""
    from .sharding import span_chunk

    devices = list(devices) if devices is not None else jax.local_devices()
    if chunk is None:
        chunk = span_chunk(batch.size, batch.books.quantity.dtype, n_devices=len(devices))
    if len(devices) > 1:
        from .sharding import span_margin_sharded

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

@dataclasses.dataclass(frozen=True)
class StressScenario:
    """A joint move of every underlying at once: spot (fraction) and implied vol (absolute) shifts."""

    name: str
    price_move: tuple[float, ...]  # per underlying in UNDERLYINGS order
    vol_shift: tuple[float, ...]
    days: float = 0.0


def load_scenarios(path: str) -> list[StressScenario]:
    """Named scenarios from YAML/JSON: a list (or ``scenarios:`` list) of
    ``{name, days (default 0), moves: {BTC: {price: -0.30, vol: 0.20}, ...}}``; price is a fractional
    move of spot and every forward (> -1), vol an absolute shift of every implied vol (floored at 1%)."""
    doc = read_document(path)
    if isinstance(doc, dict) and "scenarios" in doc:
        doc = doc["scenarios"]
    if not isinstance(doc, list) or not doc:
        raise InputError("scenarios must be a non-empty list of {name, moves}", source=path)
    out, names = [], set()
    for i, s in enumerate(doc):
        where = f"scenarios[{i}]"
        if not isinstance(s, dict):
            raise InputError("a scenario must be a mapping with name and moves", source=path, field=where)
        name = str(s.get("name", f"scenario-{i + 1}"))
        if name in names:
            raise InputError(f"duplicate scenario name {name!r}", source=path, field=f"{where}.name")
        names.add(name)
        moves = s.get("moves") or {}
        if not isinstance(moves, dict):
            raise InputError("moves must be a mapping of underlying -> {price, vol}", source=path,
                             field=f"{where}.moves")
        price, vol = [0.0] * len(UNDERLYINGS), [0.0] * len(UNDERLYINGS)
        for u, mv in moves.items():
            f = f"{where}.moves.{u}"
            if str(u).upper() not in UNDERLYINGS:
                raise InputError(f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=path, field=f)
            if not isinstance(mv, dict):
                raise InputError("a move must be a mapping {price, vol}", source=path, field=f)
            unknown = set(mv) - {"price", "vol"}
            if unknown:
                raise InputError(f"unknown key {sorted(unknown)[0]!r} (use price, vol)", source=path, field=f)
            j = UNDERLYINGS.index(str(u).upper())
            price[j] = finite_number(mv.get("price", 0.0), source=path, field=f"{f}.price")
            vol[j] = finite_number(mv.get("vol", 0.0), source=path, field=f"{f}.vol")
            if price[j] <= -1.0:
                raise InputError(f"a price move must be > -1 (-100%), got {price[j]:g}", source=path,
                                 field=f"{f}.price")
        days = finite_number(s.get("days", 0.0), source=path, field=f"{where}.days")
        if days < 0:
            raise InputError(f"days must be >= 0, got {days:g}", source=path, field=f"{where}.days")
        out.append(StressScenario(name, tuple(price), tuple(vol), days))
    return out


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
    from .sharding import stress_chunk

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


__all__ = ["AccountBatch", "StressScenario", "build_batch", "load_accounts", "load_scenarios", "span_batch",
           "span_sections", "stack_books", "stress_pnl", "stress_pnl_batch"]
