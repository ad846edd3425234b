"""Real-time margin monitor: many accounts, compiled once, re-margined on every market update.

``Monitor(portfolios, market, config)`` resolves every account against the first market and keeps, on the
host, one table of the contracts held (``pmjax.apps.monitor_kernel.ContractTable``) and each account's rows as
(table row, quantity), padded to a bucket. ``update(market)`` refreshes the table's market fields (spot, forward,
vol, expiry_years; numpy, outside jit), values each contract once and margins every account from its quantities
(SPAN, the Deribit grid, equity) in the same compiled calls, so no update after the first compiles anything. Rules and VaR (``rules``, ``var``) are computed account by account through
``pmjax.apps.margin.compute_margins``. Formulas: docs/methodology.md section 9.

Equity (margin currency) = collateral valued at the update's index prices + position values at the update
(options at their Black-76 mark, spot holdings at the index) + futures and perpetual P&L since the
monitor started (their entry price is the forward at the first market: linear q (F - F0) USD, inverse
q F0 (1/F0 - 1/F) coins at the index).

Each method has a maintenance and an initial level (margin currency); ``requirement`` (what a margin
call compares equity with) is the maintenance level on the equity basis, ``initial_requirement`` the
initial one:

- ``deribit``: maintenance = mm_factor x risk-matrix margin and initial = the risk-matrix margin (plus
  add-ons, 0 here), Deribit's own two figures, compared with an equity that includes options' value;
- ``rules``: maintenance and initial of Deribit standard margin (short-option figures include the mark);
- ``span``: SPAN's ``total`` = max(risk - nov, 0) is the *initial* level (as in ``pmjax margin``), the
  maintenance level max(risk / r - nov, 0), r = ``span_initial_ratio`` (CME-style, 1.1). These are
  requirements on collateral without option value; equity counts the options' value nov, so on equity the
  requirements (and the plotted line) are level + nov: ``requirement`` = max(risk / r, nov), ``nov`` in
  the record. A long option book's requirement is its own value: long options cover risk, not borrowing;
- ``var``: es (expected shortfall of the horizon's loss) for both levels.

Events, for the primary method (``monitor.primary``, Deribit's maintenance by default), level-triggered
on every update that meets them, one status per record (``STATUSES``, by severity):

- ``initial_breach`` when maintenance requirement <= equity < initial requirement: a warning, no call
  (the account may not add risk);
- ``margin_call`` when equity < maintenance requirement;
- ``liquidation_warning`` as well (after the margin call) when equity < ``liquidation_fraction`` x
  maintenance requirement (margin usage requirement / equity above 1 / fraction).

A position whose expiry passes during the replay settles at the first update past its expiry (options to
intrinsic value, futures to the index; the proceeds become collateral, coins for inverse contracts, USD for
linear ones; the position leaves the margin books, quantity 0) at its settlement index, the first of:
``settlements`` (expiry -> index per underlying, ``settlement_source: settlements``); on a spot path
(``interpolate_expiry``), the index interpolated linearly in time between the two path points around the
expiry (``path``); else the index of that first update (``next_market``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import jax.numpy as jnp
import numpy as np

from pmjax.apps.monitor_kernel import (
    DERIBIT_FIGURES, EQUITY_FIGURES, ROW_FIELDS, SPAN_FIGURES, AccountRows, ContractTable, figures_in_chunks,
)
from pmjax.core.book import Book, bucket_size, make_book, margin_coin_check, resolve, resolve_portfolio
from pmjax.io.config import load_config
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import no_shock, position_values
from pmjax.core.market import Market
from pmjax.apps.margin import METHODS, compute_margins
from pmjax.apps.names import CALL_STATUSES  # noqa: F401  (re-exported: statuses that are a margin call)
from pmjax.core.portfolio import Portfolio, Position, make_portfolio
from pmjax.core.validate import finite_number
from pmjax.measures.deribit import deribit_params
from pmjax.apps.monitor_records import MethodColumns, RecordChunk, statuses_of
from pmjax.apps.monitor_sources import (  # noqa: F401  (re-exported: the replay's sources)
    market_at, read_settlements, read_spot_path, replay_markets, replay_settlement,
)

STATUSES = ("ok", "initial_breach", "margin_call", "liquidation_warning")  # in order of severity
BATCH_METHODS = ("span", "deribit")
#: the method's (initial, maintenance) figures, SPEC section 3 names (span: see the module docstring)
MARGIN_FIGURE = {"span": ("total", "total"), "deribit": ("initial", "maintenance"),
                 "rules": ("initial", "maintenance"), "var": ("es", "es")}
#: default primary method when the config names none: the first of these among the methods
PRIMARY_PREFERENCE = ("deribit", "rules", "span", "var")
#: collateral currencies, in the order of the collateral array: USD then UNDERLYINGS
COLLATERAL_ORDER = ("USD",) + UNDERLYINGS


# ---------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    methods: tuple[str, ...]
    primary: str
    liquidation_fraction: float
    span_initial_ratio: float = 1.1
    interval_ms: float = 1000.0  # --follow: re-margin at most this often in feed time, besides mark lines


def monitor_settings(config: dict, *, methods=None, primary=None, liquidation_fraction=None) -> MonitorSettings:
    """The validated ``monitor:`` section of a merged config, with command-line overrides.

    ``primary``: the command line's, else the config's, else the first of ``PRIMARY_PREFERENCE`` among the
    methods. A config primary that is not among methods given on the command line (``--methods span``)
    gives way to that default; a ``--primary`` not among the methods is an error."""
    src = config.get("_source", "configs/monitor.yaml")
    sec = config.get("monitor") or {}
    if not isinstance(sec, dict):
        raise InputError("must be a mapping", source=src, field="monitor")
    methods_from_cli = methods is not None
    where = "--methods" if methods_from_cli else src
    methods = sec.get("methods", ["span", "deribit"]) if methods is None else methods
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, (list, tuple)) or not methods:
        raise InputError("must be a non-empty list of methods", source=where, field="monitor.methods")
    methods = tuple(dict.fromkeys(str(m).lower() for m in methods))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"unknown method(s) {', '.join(bad)} (choose from {', '.join(METHODS)})", source=where,
                         field="monitor.methods")
    default = next((m for m in PRIMARY_PREFERENCE if m in methods), methods[0])
    where = "--primary" if primary is not None else src
    if primary is None:
        primary = sec.get("primary")
        if primary is not None and methods_from_cli and str(primary).lower() not in methods:
            primary = None  # the config's choice is not among the methods asked for
    primary = default if primary is None else str(primary).lower()
    if primary not in methods:
        raise InputError(f"the primary method {primary!r} is not among the methods ({', '.join(methods)})",
                         source=where, field="monitor.primary")
    where = "--liquidation-fraction" if liquidation_fraction is not None else src
    frac = sec.get("liquidation_fraction", 0.8) if liquidation_fraction is None else liquidation_fraction
    frac = finite_number(frac, source=where, field="monitor.liquidation_fraction")
    if not 0.0 < frac <= 1.0:
        raise InputError(f"must be in (0, 1], got {frac:g}", source=where, field="monitor.liquidation_fraction")
    ratio = finite_number(sec.get("span_initial_ratio", 1.1), source=src, field="monitor.span_initial_ratio")
    if not 1.0 <= ratio <= 10.0:
        raise InputError(f"must be in [1, 10], got {ratio:g}", source=src, field="monitor.span_initial_ratio")
    interval = finite_number(sec.get("interval_ms", 1000.0), source=src, field="monitor.interval_ms")
    if interval <= 0:
        raise InputError(f"must be > 0, got {interval:g}", source=src, field="monitor.interval_ms")
    return MonitorSettings(methods, primary, frac, ratio, interval)


# ---------------------------------------------------------------- the monitor

class Monitor:
    """Margin of many accounts, recomputed on each market update (see the module docstring)."""

    def __init__(self, portfolios: list[Portfolio], market: Market, config: dict | None = None, *, methods=None,
                 primary=None, liquidation_fraction=None, dtype=jnp.float64, settlements: dict | None = None,
                 interpolate_expiry: bool = False):
        self.config = load_config() if config is None else config
        self.settings = monitor_settings(self.config, methods=methods, primary=primary,
                                         liquidation_fraction=liquidation_fraction)
        self.dtype = dtype
        if not portfolios:
            raise InputError("no accounts")
        self.portfolios = portfolios
        self.resolved = [resolve_portfolio(p, market) for p in portfolios]  # errors name the file and position
        # every contract once (the table), every real position: (account, row) and its contract's table row
        unique = {}
        for res in self.resolved:
            for p in res:
                unique.setdefault(p.instrument, p)
        self.table = ContractTable(list(unique.values()), market, dtype)
        n_pad = bucket_size(len(portfolios), minimum=1)
        size = bucket_size(max(len(r) for r in self.resolved))
        self.rows = np.full((n_pad, size), self.table.pad_row, np.int32)
        self.quantity = np.zeros((n_pad, size), self.table.fields["spot"].dtype)
        self._acc, self._row, self._inst_of = [], [], []
        for a, res in enumerate(self.resolved):
            for r, p in enumerate(res):
                self.rows[a, r] = self.table.index[p.instrument]
                self.quantity[a, r] = p.quantity
                self._acc.append(a)
                self._row.append(r)
                self._inst_of.append(self.table.index[p.instrument])
        self._acc, self._row, self._inst_of = (np.asarray(x, np.int64) for x in (self._acc, self._row, self._inst_of))
        self.instruments = self.table.instruments
        self.entry_forward = self.table.fields["forward"][self.rows].copy()
        coins = [-1 if p.margin_currency == "USD" else UNDERLYINGS.index(margin_coin_check(p.margin_currency, market))
                 for p in portfolios] + [-1] * (n_pad - len(portfolios))
        self.margin_coins = tuple(sorted({int(c) for c in coins}))  # the table's copies, one per margin currency
        self.currency = np.asarray([self.margin_coins.index(int(c)) for c in coins], np.int32)
        self.underlying_spot = np.asarray([market.underlyings[u].spot if u in market.underlyings else 1.0
                                           for u in UNDERLYINGS], self.quantity.dtype)
        coll = np.zeros((n_pad, len(COLLATERAL_ORDER)))
        for a, p in enumerate(portfolios):
            for cur, amount in (p.collateral or {}).items():
                coll[a, COLLATERAL_ORDER.index(cur)] += amount
        self.collateral = coll
        self.live = np.ones(len(self._acc), bool)  # per position (flat): not yet settled
        need = set(self.settings.methods) & set(BATCH_METHODS)
        self._span = self._deribit = None
        if "span" in need:
            from pmjax.measures.span import span_params

            self._span = span_params(self.config, dtype=dtype)
        if "deribit" in need:
            self._deribit = deribit_params(self.config, dtype=dtype)
        # accounts per compiled call, fixed at construction from the memory free then (pmjax.batch.sharding), so
        # that later updates reuse the same shapes whatever the memory does: no recompilation
        from pmjax.batch.sharding import deribit_chunk, span_chunk

        fdtype = self.quantity.dtype
        # at most a quarter of the accounts per call (at least 64), so that writing one chunk's lines overlaps
        # the next chunks' computation
        n_bucket = bucket_size(len(portfolios), minimum=1)
        cap = max(n_bucket // 4, min(n_bucket, 64))
        self._chunk = min(span_chunk(size, fdtype, n_devices=1), deribit_chunk(size, fdtype, n_devices=1), cap)
        self.step = 0
        self.start = market.as_of
        self.settlements = settlements or {}  # underlying -> {expiry datetime: index}
        self.interpolate_expiry = interpolate_expiry
        self._prev: tuple[dt.datetime, dict[str, float]] | None = None  # the last update's (as_of, index prices)

    @property
    def fields(self) -> dict[str, np.ndarray]:
        """The current stacked books' fields (host arrays, leading accounts axis; a copy)."""
        out = {f: self.table.fields[f][self.rows] for f in ROW_FIELDS}
        n = self.rows.shape[0]
        return out | {"quantity": self.quantity.copy(),
                      "underlying_spot": np.broadcast_to(self.underlying_spot, (n, len(UNDERLYINGS))).copy(),
                      "margin_coin": np.asarray([self.margin_coins[c] for c in self.currency], np.int32)}

    @property
    def books(self) -> Book:
        """The current stacked books (host arrays, leading accounts axis)."""
        return Book(**self.fields)

    # ------------------------------------------------------------ market refresh

    def _refresh(self, market: Market) -> list[list[dict]]:
        """Write ``market`` into the contract table; settle positions that expired. Returns the settlements per
        account."""
        expired = self.table.refresh(market)
        self.underlying_spot = np.asarray([market.underlyings[u].spot if u in market.underlyings else 1.0
                                           for u in UNDERLYINGS], self.quantity.dtype)
        a, r, k = self._acc, self._row, self._inst_of
        settled = [[] for _ in self.portfolios]
        for j in np.flatnonzero(self.live & expired[k]):
            inst = self.instruments[k[j]]
            settled[a[j]].append(self._settle(int(a[j]), int(r[j]), inst, *self._settlement_index(inst, market)))
            self.live[j] = False
        self._prev = (market.as_of, {u: um.spot for u, um in market.underlyings.items()})
        return settled

    def _settlement_index(self, inst, market: Market) -> tuple[float, str]:
        """(index, source) that ``inst``, expired by ``market``, settles at (module docstring)."""
        u, expiry = inst.underlying, inst.expiry
        fixed = self.settlements.get(u, {}).get(expiry)
        if fixed is not None:
            return float(fixed), "settlements"
        now = market.spot(u)
        if self.interpolate_expiry and self._prev is not None and u in self._prev[1] and self._prev[0] < expiry:
            (t0, spots), t1 = self._prev, market.as_of
            w = (expiry - t0) / (t1 - t0)  # 0 < w <= 1: t0 < expiry <= t1
            return spots[u] + w * (now - spots[u]), "path"
        return now, "next_market"

    def _settle(self, a: int, r: int, inst, index: float, source: str) -> dict:
        """Settle row r of account a at ``index``: proceeds to collateral, quantity to 0."""
        q = float(self.quantity[a, r])
        if inst.is_option:
            usd = q * max(index - inst.strike if inst.right == "call" else inst.strike - index, 0.0)
        else:  # a future's P&L against its entry
            f0 = float(self.entry_forward[a, r])
            usd = q * (1.0 - f0 / index) * index if inst.settlement == "inverse" else q * (index - f0)
        cur = inst.underlying if inst.settlement == "inverse" else "USD"
        amount = usd / index if cur != "USD" else usd
        self.collateral[a, COLLATERAL_ORDER.index(cur)] += amount
        self.quantity[a, r] = 0.0
        return {"instrument": inst.name, "quantity": q, "index": index, "amount": amount + 0.0, "currency": cur,
                "expiry": inst.expiry.isoformat(), "settlement_source": source}

    def _live_portfolio(self, a: int) -> Portfolio:
        p = self.portfolios[a]
        alive = {self.resolved[a][r].instrument for r in self._row[(self._acc == a) & self.live]}
        if len(alive) == len(p.positions):
            return p
        # the collateral now held, settlement proceeds included: coins cover short calls under rules
        held = {c: float(self.collateral[a, i]) for i, c in enumerate(COLLATERAL_ORDER) if self.collateral[a, i]}
        return make_portfolio([x for x in p.positions if x.instrument in alive], account=p.account,
                              margin_currency=p.margin_currency, source=p.source, allow_empty=True,
                              merge_notice=False, collateral=held)

    # ------------------------------------------------------------ trades

    def apply_trade(self, account: str, inst, quantity: float, market: Market) -> dict:
        """Trade ``quantity`` coins of ``inst`` in ``account`` at ``market``'s prices (docs/methodology.md section
        9.4): a held contract's row changes; a new one takes a free padding row of the account's book (the same
        shapes: nothing recompiles), or every book grows to the next bucket when none is free (the next update
        compiles once). Futures and perpetuals: the open P&L of the row is realised into collateral at today's
        forward, which becomes the entry; options and coins: their value today is paid from (or received into)
        collateral. Returns what changed."""
        a = [p.account for p in self.portfolios].index(account)
        resolved = resolve([inst], [quantity], market)[0]
        rows = [r for r, p in enumerate(self.resolved[a]) if p.instrument == inst]
        if rows:
            r = rows[0]
            j = int(np.flatnonzero((self._acc == a) & (self._row == r))[0])
            self.live[j] = True
        else:
            r = len(self.resolved[a])
            if r >= self.quantity.shape[1]:
                self._grow()
            self._add_row(a, r, resolved, market)
        q_old = float(self.quantity[a, r])
        cash = self._trade_cash(a, r, inst, q_old, quantity, resolved, market)
        self.quantity[a, r] = q_old + quantity
        self.portfolios[a] = self.portfolios[a].with_trades([Position(inst, quantity)])
        return {"type": "trade", "account": account, "instrument": inst.name, "quantity": quantity,
                "position": q_old + quantity, "cash": cash}

    def _trade_cash(self, a, r, inst, q_old, quantity, resolved, market) -> dict:
        """Collateral moved by a trade: {currency: amount}."""
        if inst.kind in ("future", "perpetual"):
            f0, f1 = float(self.entry_forward[a, r]), resolved.forward
            realised_usd = q_old * (f1 - f0)  # linear q (F - F0); inverse q F0 (1/F0 - 1/F) coins = q (F - F0) USD
            cur = inst.underlying if inst.settlement == "inverse" else "USD"
            amount = realised_usd / f1 if cur != "USD" else realised_usd
            self.entry_forward[a, r] = f1
        else:  # pay today's value: an inverse option in coins, a linear one and coins in USD
            one = make_book([dataclasses.replace(resolved, quantity=1.0)], market, "USD", dtype=jnp.float64, size=1)
            usd = float(np.asarray(position_values(one, no_shock(one)))[0])
            cur = inst.underlying if inst.is_option and inst.settlement == "inverse" else "USD"
            amount = -quantity * usd / (market.spot(inst.underlying) if cur != "USD" else 1.0)
        self.collateral[a, COLLATERAL_ORDER.index(cur)] += amount
        return {cur: amount + 0.0}

    def _add_row(self, a: int, r: int, resolved, market: Market) -> None:
        """Point row r of account a at the new position's contract (quantity 0 until traded); a contract no
        account held enters the table (which grows to the next bucket when full: the next update compiles once)."""
        k, _ = self.table.add(resolved, market)
        self.rows[a, r] = k
        self.entry_forward[a, r] = resolved.forward
        self.resolved[a].append(resolved)
        self._acc = np.append(self._acc, a)
        self._row = np.append(self._row, r)
        self._inst_of = np.append(self._inst_of, k)
        self.live = np.append(self.live, True)

    def _grow(self) -> None:
        """Every book to the next bucket (new rows empty: the table's padding row, quantity 0)."""
        size = self.quantity.shape[1]
        more = ((0, 0), (0, bucket_size(size + 1) - size))
        self.rows = np.pad(self.rows, more, constant_values=self.table.pad_row)
        self.quantity = np.pad(self.quantity, more)
        self.entry_forward = np.pad(self.entry_forward, more, constant_values=1.0)

    # ------------------------------------------------------------ one update

    def _figure_names(self) -> tuple[str, ...]:
        return EQUITY_FIGURES + tuple(f"span_{f}" for f in SPAN_FIGURES if self._span is not None) + \
            tuple(f"deribit_{f}" for f in DERIBIT_FIGURES if self._deribit is not None)

    def _batch_figures(self):
        """Per chunk of accounts, in order: (first account, (chunk, figures) host array of ``_figure_names``).
        Every contract is valued once, then every chunk's call is dispatched before the first is read, so the
        records of one chunk are built and written while the next chunks compute (``pmjax.apps.monitor_kernel``)."""
        dtype = self.quantity.dtype
        tables = self.table.books(self.underlying_spot, self.margin_coins)
        accounts = AccountRows(self.currency, self.rows, self.quantity, self.entry_forward.astype(dtype),
                               self.collateral.astype(dtype))
        n = len(self.portfolios)
        calls = figures_in_chunks(tables, accounts, self._chunk, self._span, self._deribit, limit=n)
        for start, call in calls:
            yield start, np.asarray(call, np.float64)[:n - start]

    def update(self, market: Market) -> list[dict]:
        """Re-margin every account on ``market``; one record per account (see ``record`` keys in the
        module docstring and ``pmjax.cli.commands.monitor``)."""
        return [r for part in self.update_chunks(market) for r in part]

    def update_chunks(self, market: Market):
        """``update`` as a generator of ``RecordChunk`` (sequences of records that also encode themselves as JSON
        lines), one per chunk of accounts (in account order): a caller that writes each chunk as it comes overlaps
        its writing with the next chunks' computation."""
        if market.as_of < self.start:
            raise InputError(f"market as_of {market.as_of.isoformat()} is before the monitor's start "
                             f"{self.start.isoformat()}", source=market.source, field="as_of")
        settled = self._refresh(market)
        for start, figs in self._batch_figures():
            yield self._records(market, start, figs, settled)
        self.step += 1

    def _figures(self, market: Market, start: int, figs: np.ndarray) -> dict:
        """method -> (initial, maintenance, initial requirement, maintenance requirement[, nov]), arrays over the
        accounts start, start + 1, ... of ``figs``."""
        col = dict(zip(self._figure_names(), figs.T))
        figures = {}
        for m in self.settings.methods:
            if m == "span":
                total, nov, risk = (col[f"span_{f}"] for f in SPAN_FIGURES)
                maint = np.maximum(risk / self.settings.span_initial_ratio - nov, 0.0)  # <= total
                figures[m] = (total, maint, total + nov, maint + nov, nov)  # on equity: max(risk / r, nov)
            elif m == "deribit":
                init, maint = (col[f"deribit_{f}"] for f in DERIBIT_FIGURES)
                figures[m] = (init, maint, init, maint)
            else:
                rows = []
                for a in range(start, start + figs.shape[0]):
                    p = self._live_portfolio(a)
                    if not p.positions:
                        rows.append((0.0, 0.0))
                        continue
                    sec = compute_margins(p, market, self.config, [m], dtype=self.dtype)[m]
                    rows.append(tuple(float(sec[k]) for k in MARGIN_FIGURE[m]))
                init, maint = (np.asarray(x, np.float64).reshape(figs.shape[0]) for x in zip(*rows))
                figures[m] = (init, maint, init, maint)
        return figures

    def _records(self, market: Market, start: int, figs: np.ndarray, settled: list) -> RecordChunk:
        """The records of the accounts of ``figs`` (start, start + 1, ...), as columns over accounts
        (``pmjax.apps.monitor_records``): the same float operations, in the same order, as one account at a time."""
        figures = self._figures(market, start, figs)
        collateral, positions, futures = figs[:, 0], figs[:, 1], figs[:, 2]
        equity = collateral + positions + futures
        frac = self.settings.liquidation_fraction
        methods, statuses = {}, {}
        for m, (init, maint, init_req, req, *nov) in figures.items():
            methods[m] = MethodColumns(init, maint, req, init_req, equity, nov[0] if nov else None)
            statuses[m] = statuses_of(equity, req, init_req, frac)
        stop = start + figs.shape[0]
        head = {"step": self.step, "as_of": market.as_of.isoformat(), "market": market.source}
        return RecordChunk(head, [p.account for p in self.portfolios[start:stop]],
                           [p.margin_currency for p in self.portfolios[start:stop]], equity, collateral, positions,
                           futures, methods, statuses, self.settings.primary, frac, settled[start:stop])


# ---------------------------------------------------------------- replay and outputs

def replay(portfolios: list[Portfolio], markets: list[Market], config: dict | None = None, **kw) -> list[dict]:
    """Every account's record at every market, in (step, account) order."""
    if not markets:
        raise InputError("no markets to replay")
    mon = Monitor(portfolios, markets[0], config, **kw)
    return [r for m in markets for r in mon.update(m)]


def write_log(records: list[dict], path: str) -> None:
    """JSON lines, one record per account per step (no wall-clock content: same inputs, same bytes)."""
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, sort_keys=False, allow_nan=False) + "\n")


#: the plotted requirement line of each method (what ``requirement`` is) and each status marker's style
REQUIREMENT_LABEL = {"span": "span maintenance + NOV", "deribit": "deribit maintenance",
                     "rules": "rules maintenance", "var": "var ES"}
STATUS_MARKERS = {"initial_breach": ("orange", "initial breach"), "margin_call": ("red", "margin call"),
                  "liquidation_warning": ("darkred", "liquidation warning")}


def plot_equity(records: list[dict], path: str, methods) -> dict[str, list[str]]:
    """PNG: per account, equity and each method's ``requirement`` against time, each status marked by its
    own label. Returns the legend labels per account."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accounts = list(dict.fromkeys(r["account"] for r in records))
    cols = min(3, len(accounts))
    rows = -(-len(accounts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    legends = {}
    for ax, name in zip(axes.flat, accounts):
        rs = [r for r in records if r["account"] == name]
        t = [dt.datetime.fromisoformat(r["as_of"]) for r in rs]
        ax.plot(t, [r["equity"] for r in rs], "k-o", lw=2, ms=3, label="equity")
        for m in methods:
            ax.plot(t, [r["margins"][m]["requirement"] for r in rs], "--", marker=".", label=REQUIREMENT_LABEL[m])
        for status, (color, label) in STATUS_MARKERS.items():
            pts = [(x, r["equity"]) for x, r in zip(t, rs) if r["status"] == status]
            if pts:
                ax.scatter(*zip(*pts), color=color, zorder=5, s=40, label=f"{label} ({rs[0]['primary']})")
        ax.set_title(f"{name} ({rs[0]['currency']})", fontsize=9)
        ax.tick_params(labelsize=7)
        legends[name] = [x.get_text() for x in ax.legend(fontsize=6).get_texts()]
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
    for ax in list(axes.flat)[len(accounts):]:
        ax.axis("off")
    fig.suptitle("Equity against each method's requirement (markers: status by the primary method)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return legends


__all__ = ["CALL_STATUSES", "COLLATERAL_ORDER", "MARGIN_FIGURE", "Monitor", "MonitorSettings", "PRIMARY_PREFERENCE",
           "REQUIREMENT_LABEL", "STATUSES", "STATUS_MARKERS", "market_at", "monitor_settings",
           "plot_equity", "read_settlements", "read_spot_path", "replay", "replay_markets", "replay_settlement",
           "write_log"]
