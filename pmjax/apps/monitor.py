"""Real-time margin monitor: many accounts, compiled once, re-margined on every market update.

``Monitor(portfolios, market, config)`` resolves every account against the first market, pads and stacks
the books once (``pmjax.batch.accounts.build_batch``) and keeps them on the host. ``update(market)`` refreshes
only the market-dependent arrays (spot, forward, vol, expiry_years, underlying_spot; numpy, outside jit)
and runs the same jitted batch functions again (SPAN, the Deribit grid, equity), so no update after the
first compiles anything. Rules and VaR (``rules``, ``var``) are computed account by account through
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

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.batch.accounts import AccountBatch, build_batch
from pmjax.batch.sharding import map_accounts
from pmjax.apps.stress import deribit_margin_sharded, span_batch
from pmjax.core.book import FUTURE, PERPETUAL, Book, bucket_size, make_book, resolve
from pmjax.io.config import load_config
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import futures_pnl_usd, no_shock, position_values
from pmjax.core.market import Market
from pmjax.apps.margin import METHODS, compute_margins
from pmjax.apps.names import CALL_STATUSES  # noqa: F401  (re-exported: statuses that are a margin call)
from pmjax.core.portfolio import Portfolio, Position, make_portfolio
from pmjax.core.validate import finite_number
from pmjax.measures.deribit import deribit_params
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


# ---------------------------------------------------------------- jitted equity

def _equity_core(book: Book, entry_forward, collateral):
    """(collateral, position values, futures P&L since entry) of one account, margin currency."""
    dtype = book.quantity.dtype
    values = position_values(book, no_shock(book))  # options at mark, spot at index, futures 0
    futures = (book.kind == FUTURE) | (book.kind == PERPETUAL)
    pnl_usd = book.quantity * futures_pnl_usd(book.inverse, entry_forward, book.forward, book.spot)
    has_coin = book.margin_coin >= 0
    to_margin = jnp.where(has_coin, 1.0 / book.underlying_spot[jnp.maximum(book.margin_coin, 0)],
                          jnp.ones((), dtype))
    coll_usd = collateral[0] + jnp.sum(collateral[1:] * book.underlying_spot)
    return jnp.stack([coll_usd * to_margin, jnp.sum(jnp.where(futures, 0.0, values)),
                      jnp.sum(jnp.where(futures, pnl_usd, 0.0)) * to_margin])


#: many accounts: (a, 3) = collateral, position values, futures P&L
equity_batch = jax.jit(jax.vmap(_equity_core))


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
        self.batch: AccountBatch = build_batch(portfolios, market, dtype=dtype)
        self.portfolios = portfolios
        self.fields = {f: np.array(getattr(self.batch.books, f)) for f in Book.__dataclass_fields__}
        # every real position: (account, row) and its instrument, instruments deduplicated for lookups
        self._acc, self._row, self._inst_of = [], [], []
        self.instruments = []
        index = {}
        for a, res in enumerate(self.batch.resolved):
            for r, p in enumerate(res):
                if p.instrument not in index:
                    index[p.instrument] = len(self.instruments)
                    self.instruments.append(p.instrument)
                self._acc.append(a)
                self._row.append(r)
                self._inst_of.append(index[p.instrument])
        self._acc, self._row, self._inst_of = (np.asarray(x, np.int64) for x in (self._acc, self._row, self._inst_of))
        self.entry_forward = self.fields["forward"].copy()
        coll = np.zeros((self.batch.n_padded, len(COLLATERAL_ORDER)))
        for a, p in enumerate(portfolios):
            for cur, amount in (p.collateral or {}).items():
                coll[a, COLLATERAL_ORDER.index(cur)] += amount
        self.collateral = coll
        self.live = np.ones(len(self._acc), bool)  # per position (flat): not yet settled
        need = set(self.settings.methods) & set(BATCH_METHODS)
        if "span" in need:
            from pmjax.measures.span import span_params

            self._span = span_params(self.config, dtype=dtype)
        if "deribit" in need:
            self._deribit = deribit_params(self.config, dtype=dtype)
        # accounts per compiled call, fixed at construction from the memory free then (pmjax.batch.sharding), so
        # that later updates reuse the same shapes whatever the memory does: no recompilation
        from pmjax.batch.sharding import deribit_chunk, span_chunk

        self._one = jax.local_devices()[:1]  # equity and the Deribit grid run on one device, as sized here

        rows, fdtype = self.batch.size, self.batch.books.quantity.dtype
        cap = max(bucket_size(self.batch.n_accounts), 1)
        self._span_chunk = min(span_chunk(rows, fdtype), cap)
        self._deribit_chunk = min(deribit_chunk(rows, fdtype, n_devices=1), cap)
        self.step = 0
        self.start = market.as_of
        self.settlements = settlements or {}  # underlying -> {expiry datetime: index}
        self.interpolate_expiry = interpolate_expiry
        self._prev: tuple[dt.datetime, dict[str, float]] | None = None  # the last update's (as_of, index prices)

    @property
    def books(self) -> Book:
        """The current stacked books (host arrays, leading accounts axis)."""
        return Book(**self.fields)

    # ------------------------------------------------------------ market refresh

    def _refresh(self, market: Market) -> list[list[dict]]:
        """Write ``market`` into the market-dependent arrays; settle positions that expired. Returns the
        settlements per account."""
        f = self.fields
        n = len(self.instruments)
        spot, fwd, vol, t = np.empty(n), np.empty(n), np.full(n, 0.5), np.empty(n)
        expired = np.zeros(n, bool)
        for i, inst in enumerate(self.instruments):
            spot[i] = market.spot(inst.underlying)
            if inst.expiry is not None and inst.expiry <= market.as_of:
                expired[i], fwd[i], t[i] = True, spot[i], 0.0
                continue
            t[i] = market.years_to(inst.expiry) if inst.expiry is not None else 0.0
            fwd[i] = market.forward(inst.underlying, inst.expiry)
            if inst.is_option:
                vol[i] = market.vol(inst.underlying, inst.expiry, inst.strike)
        a, r, k = self._acc, self._row, self._inst_of
        dtype = f["spot"].dtype
        f["spot"][a, r] = spot[k].astype(dtype)
        f["forward"][a, r] = fwd[k].astype(dtype)
        f["expiry_years"][a, r] = t[k].astype(dtype)
        f["vol"][a, r] = np.where(self.live, vol[k], f["vol"][a, r]).astype(dtype)
        f["underlying_spot"][:] = np.asarray([market.underlyings[u].spot if u in market.underlyings else 1.0
                                              for u in UNDERLYINGS], dtype)
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
        q = float(self.fields["quantity"][a, r])
        if inst.is_option:
            usd = q * max(index - inst.strike if inst.right == "call" else inst.strike - index, 0.0)
        else:  # a future's P&L against its entry
            f0 = float(self.entry_forward[a, r])
            usd = q * (1.0 - f0 / index) * index if inst.settlement == "inverse" else q * (index - f0)
        cur = inst.underlying if inst.settlement == "inverse" else "USD"
        amount = usd / index if cur != "USD" else usd
        self.collateral[a, COLLATERAL_ORDER.index(cur)] += amount
        self.fields["quantity"][a, r] = 0.0
        return {"instrument": inst.name, "quantity": q, "index": index, "amount": amount + 0.0, "currency": cur,
                "expiry": inst.expiry.isoformat(), "settlement_source": source}

    def _live_portfolio(self, a: int) -> Portfolio:
        p = self.portfolios[a]
        alive = {self.batch.resolved[a][r].instrument for r in self._row[(self._acc == a) & self.live]}
        if len(alive) == len(p.positions):
            return p
        # the collateral now held, settlement proceeds included: coins cover short calls under rules
        held = {c: float(self.collateral[a, i]) for i, c in enumerate(COLLATERAL_ORDER) if self.collateral[a, i]}
        return make_portfolio([x for x in p.positions if x.instrument in alive], account=p.account,
                              margin_currency=p.margin_currency, source=p.source, allow_empty=True,
                              merge_notice=False, collateral=held)

    # ------------------------------------------------------------ trades

    ROW_FIELDS = ("underlying", "kind", "inverse", "is_call", "strike", "quantity", "expiry_years", "spot", "forward",
                  "vol")

    def apply_trade(self, account: str, inst, quantity: float, market: Market) -> dict:
        """Trade ``quantity`` coins of ``inst`` in ``account`` at ``market``'s prices (docs/methodology.md section
        9.4): a held contract's row changes; a new one takes a free padding row of the account's book (the same
        shapes: nothing recompiles), or every book grows to the next bucket when none is free (the next update
        compiles once). Futures and perpetuals: the open P&L of the row is realised into collateral at today's
        forward, which becomes the entry; options and coins: their value today is paid from (or received into)
        collateral. Returns what changed."""
        a = [p.account for p in self.portfolios].index(account)
        resolved = resolve([inst], [quantity], market)[0]
        rows = [r for r, p in enumerate(self.batch.resolved[a]) if p.instrument == inst]
        if rows:
            r = rows[0]
            j = int(np.flatnonzero((self._acc == a) & (self._row == r))[0])
            self.live[j] = True
        else:
            r = len(self.batch.resolved[a])
            if r >= self.fields["quantity"].shape[1]:
                self._grow()
            self._add_row(a, r, resolved, market)
        q_old = float(self.fields["quantity"][a, r])
        cash = self._trade_cash(a, r, inst, q_old, quantity, resolved, market)
        self.fields["quantity"][a, r] = q_old + quantity
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
        """Write a new position's static and market fields into row r of account a (quantity 0 until traded)."""
        p = self.portfolios[a]
        one = make_book([dataclasses.replace(resolved, quantity=0.0)], market, p.margin_currency,
                        dtype=self.fields["quantity"].dtype, size=1)
        for f in self.ROW_FIELDS:
            self.fields[f][a, r] = np.asarray(getattr(one, f))[0]
        self.entry_forward[a, r] = resolved.forward
        self.batch.resolved[a].append(resolved)
        inst = resolved.instrument
        if inst not in self.instruments:
            self.instruments.append(inst)
        self._acc = np.append(self._acc, a)
        self._row = np.append(self._row, r)
        self._inst_of = np.append(self._inst_of, self.instruments.index(inst))
        self.live = np.append(self.live, True)

    def _grow(self) -> None:
        """Every book to the next bucket (new rows copy the last row's market data, quantity 0)."""
        size = self.fields["quantity"].shape[1]
        new = bucket_size(size + 1)
        for f in self.ROW_FIELDS:
            self.fields[f] = np.pad(self.fields[f], ((0, 0), (0, new - size)), mode="edge")
        self.fields["quantity"][:, size:] = 0.0
        self.entry_forward = np.pad(self.entry_forward, ((0, 0), (0, new - size)), mode="edge")
        self.batch = dataclasses.replace(self.batch, size=new)

    # ------------------------------------------------------------ one update

    def update(self, market: Market) -> list[dict]:
        """Re-margin every account on ``market``; one record per account (see ``record`` keys in the
        module docstring and ``pmjax.cli.commands.monitor``)."""
        if market.as_of < self.start:
            raise InputError(f"market as_of {market.as_of.isoformat()} is before the monitor's start "
                             f"{self.start.isoformat()}", source=market.source, field="as_of")
        settled = self._refresh(market)
        batch = dataclasses.replace(self.batch, books=self.books)
        n = batch.n_accounts
        dtype = batch.books.quantity.dtype
        per_account = (self.entry_forward.astype(dtype), self.collateral.astype(dtype))
        eq = map_accounts(equity_batch, batch.books, (), per_account, chunk=self._span_chunk, devices=self._one)
        eq = eq[:n].astype(np.float64)
        figures = {}  # method -> (initial, maintenance, initial requirement, maintenance requirement), (n,) each
        for m in self.settings.methods:
            if m == "span":
                res = span_batch(batch, self._span, chunk=self._span_chunk)
                total, nov = np.asarray(res.total, np.float64), np.asarray(res.nov, np.float64)
                risk = np.asarray(res.risk, np.float64)
                maint = np.maximum(risk / self.settings.span_initial_ratio - nov, 0.0)  # <= total
                figures[m] = (total, maint, total + nov, maint + nov, nov)  # on equity: max(risk / r, nov)
            elif m == "deribit":
                res = deribit_margin_sharded(batch.books, self._deribit, chunk=self._deribit_chunk, devices=self._one)
                init, maint = (np.asarray(getattr(res, f))[:n].astype(np.float64) for f in ("initial", "maintenance"))
                figures[m] = (init, maint, init, maint)
            else:
                figs = []
                for a in range(n):
                    p = self._live_portfolio(a)
                    if not p.positions:
                        figs.append((0.0, 0.0))
                        continue
                    sec = compute_margins(p, market, self.config, [m], dtype=self.dtype)[m]
                    figs.append(tuple(float(sec[k]) for k in MARGIN_FIGURE[m]))
                init, maint = (np.asarray(x, np.float64).reshape(n) for x in zip(*figs))
                figures[m] = (init, maint, init, maint)
        records = [self._record(a, market, eq[a], {m: tuple(x[a] for x in f) for m, f in figures.items()},
                                settled[a]) for a in range(n)]
        self.step += 1
        return records

    def _record(self, a: int, market: Market, eq, figures: dict, settled: list) -> dict:
        p = self.portfolios[a]
        collateral, positions, futures = (float(x) for x in eq)
        equity = collateral + positions + futures
        frac = self.settings.liquidation_fraction
        margins = {}
        for m, (init, maint, init_req, req, *nov) in figures.items():
            init, maint, init_req, req = float(init), float(maint), float(init_req), float(req)
            margins[m] = {"initial": init, "maintenance": maint, "requirement": req,
                          "initial_requirement": init_req, "excess": equity - req,
                          "usage": req / equity if equity > 0 else None,
                          "status": _status(equity, req, init_req, frac)}
            if nov:  # span: requirement = maintenance + nov (module docstring)
                margins[m]["nov"] = float(nov[0])
        prim = self.settings.primary
        req, init_req = margins[prim]["requirement"], margins[prim]["initial_requirement"]
        status = margins[prim]["status"]
        events = []
        kinds = {"ok": [], "initial_breach": ["initial_breach"], "margin_call": ["margin_call"],
                 "liquidation_warning": ["margin_call", "liquidation_warning"]}[status]
        for kind in kinds:
            threshold = {"initial_breach": init_req, "margin_call": req, "liquidation_warning": frac * req}[kind]
            events.append({"type": kind, "method": prim, "equity": equity, "threshold": threshold,
                           "shortfall": threshold - equity})
        return {"step": self.step, "as_of": market.as_of.isoformat(), "market": market.source, "account": p.account,
                "currency": p.margin_currency, "equity": equity, "collateral": collateral,
                "positions_value": positions, "futures_pnl": futures, "margins": margins, "primary": prim,
                "status": status, "events": events, "settled": settled}


def _status(equity: float, requirement: float, initial_requirement: float, fraction: float) -> str:
    """The status of ``equity`` against a method's maintenance and initial requirements (``STATUSES``)."""
    if equity < fraction * requirement:
        return "liquidation_warning"
    if equity < requirement:
        return "margin_call"
    if equity < initial_requirement:
        return "initial_breach"
    return "ok"


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
           "REQUIREMENT_LABEL", "STATUSES", "STATUS_MARKERS", "equity_batch", "market_at", "monitor_settings",
           "plot_equity", "read_settlements", "read_spot_path", "replay", "replay_markets", "replay_settlement",
           "write_log"]
