"""Following a live feed (``pmjax monitor ACCOUNTS --follow FILE|-``, SPEC section 8): index and ticker lines move
the market incrementally, trade lines change accounts, and every account is re-margined on ``mark`` lines and at
most every ``monitor.interval_ms`` of feed time (and at the end of the input), through the same compiled
functions as the replay (``pmjax.apps.monitor.Monitor``).

The market is the base market (``--market``) moved as the feed says: an index line sets that underlying's index,
and every forward moves in proportion (exactly ``market_at`` of the replay, so a feed of index lines re-margins to
the figures ``--replay`` of the same spot path gives); a ticker line sets its expiry's forward (kept as a ratio to
the index, so later index lines move it) and, for an option, its implied vol at that strike (``mark_iv``). Formulas:
docs/methodology.md section 9.4.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
from collections.abc import Callable, Iterable

import numpy as np

from pmjax.apps.monitor import Monitor, market_at
from pmjax.core.errors import InputError
from pmjax.core.market import Market, Smile
from pmjax.io.feed import FeedEvent, FeedNotice


class FeedMarket:
    """The market as the feed has moved it (module docstring)."""

    def __init__(self, base: Market):
        self.base = base
        self.spots: dict[str, float] = {}
        self.basis: dict[tuple[str, dt.datetime], float] = {}  # forward / index, from the last ticker
        self.vols: dict[tuple[str, dt.datetime, float], float] = {}  # (underlying, expiry, strike) -> vol

    def index(self, underlying: str, price: float) -> None:
        self.spots[underlying] = price

    def ticker(self, ev: FeedEvent) -> None:
        inst = ev.instrument
        u = inst.underlying
        index = ev.index_price or self.spots.get(u) or self.base.spot(u)
        if inst.expiry is not None and ev.underlying_price:
            self.basis[(u, inst.expiry)] = ev.underlying_price / index
        if inst.is_option and ev.mark_iv:
            self.vols[(u, inst.expiry, float(inst.strike))] = ev.mark_iv

    def market(self, as_of: dt.datetime) -> Market:
        """The market at ``as_of``: the replay's ``market_at(base, as_of, spots)``, then the tickers."""
        m = market_at(self.base, as_of, self.spots)
        for (u, e), ratio in self.basis.items():
            if e >= as_of:
                m.underlyings[u].forwards[e] = ratio * m.underlyings[u].spot
        for (u, e, k), vol in self.vols.items():
            if e >= as_of:
                smiles = m.underlyings[u].smiles
                smiles[e] = _with_vol(smiles.get(e), k, vol)
        return m


def _with_vol(smile: Smile | None, strike: float, vol: float) -> Smile:
    """A copy of ``smile`` with ``vol`` at ``strike`` (inserted in strike order when the smile lacks it)."""
    if smile is None:
        return Smile(np.array([strike]), np.array([vol]))
    strikes, vols = np.asarray(smile.strikes, float), np.asarray(smile.vols, float).copy()
    i = int(np.searchsorted(strikes, strike))
    if i < strikes.size and strikes[i] == strike:
        vols[i] = vol
        return Smile(strikes, vols)
    return Smile(np.insert(strikes, i, strike), np.insert(vols, i, vol))


@dataclasses.dataclass
class FollowSummary:
    """What a follow did: lines by kind, notices, re-margins and trades."""

    events: dict[str, int] = dataclasses.field(default_factory=dict)
    notices: int = 0
    remargins: int = 0
    trades: int = 0
    last: str | None = None


class Follower:
    """Feed events -> a ``Monitor`` (created at the first re-margin or trade, so the entry prices of futures are
    those of the feed's first market, as in the replay) -> records, through the callbacks ``on_records(records)``,
    ``on_trade(event, change)`` and ``on_notice(text)``.

    ``freeze_gc``: after the first re-margin (the compiled programs, the market and the accounts are built by then)
    collect garbage once and move every object alive into the collector's permanent generation (``gc.freeze``), so
    that the full collections that would otherwise scan them every few ticks (about 100 ms each for 1,000 accounts)
    no longer stall a tick, and pause automatic collection while a re-margin runs (it resumes after, between feed
    lines); process-wide settings, for a process that follows a feed."""

    def __init__(self, portfolios, base: Market, config: dict, *, interval_ms: float, monitor_kwargs: dict,
                 on_records: Callable, on_notice: Callable, on_trade: Callable | None = None, freeze_gc: bool = True):
        self.portfolios, self.config, self.kw = portfolios, config, monitor_kwargs
        self.market = FeedMarket(base)
        self.interval = dt.timedelta(milliseconds=interval_ms)
        self.on_records, self.on_notice, self.on_trade = on_records, on_notice, on_trade
        self.monitor: Monitor | None = None
        self.last_margin: dt.datetime | None = None
        self.first: dt.datetime | None = None
        self.pending: dict[str, list[dict]] = {}  # account -> changes since its last line ("*": market moves)
        self.now: dt.datetime | None = None
        self.summary = FollowSummary()
        self.accounts = {p.account for p in portfolios}
        self.freeze_gc = freeze_gc

    def _monitor(self, at: dt.datetime) -> Monitor:
        if self.monitor is None:
            self.monitor = Monitor(self.portfolios, self.market.market(at), self.config, **self.kw)
        return self.monitor

    def feed(self, items: Iterable) -> FollowSummary:
        """Consume events and notices until the input ends (or KeyboardInterrupt propagates)."""
        for item in items:
            if isinstance(item, FeedNotice):
                self.summary.notices += 1
                self.on_notice(item.message)
                continue
            self.step(item)
        self.finish()
        return self.summary

    def step(self, ev: FeedEvent) -> None:
        self.summary.events[ev.kind] = self.summary.events.get(ev.kind, 0) + 1
        self.now = ev.time
        self.first = self.first or ev.time
        if ev.kind == "index":
            self.market.index(ev.underlying, ev.price)
            self.pending.setdefault("*", []).append({"type": "index", "underlying": ev.underlying, "price": ev.price,
                                                     "line": ev.line})
        elif ev.kind == "ticker":
            self.market.ticker(ev)
            self.pending.setdefault("*", []).append({"type": "ticker", "instrument": ev.instrument.name,
                                                     "mark_iv": ev.mark_iv, "line": ev.line})
        elif ev.kind == "trade":
            if not self._trade(ev):
                return
        due = ev.kind == "mark" or (self.last_margin is not None and ev.time - self.last_margin >= self.interval) \
            or (self.last_margin is None and ev.time - self.first >= self.interval)
        if due:
            self.remargin(ev.time)

    def _trade(self, ev: FeedEvent) -> bool:
        if ev.account not in self.accounts:
            self.summary.notices += 1
            self.on_notice(f"line {ev.line}: trade for unknown account {ev.account!r} skipped (accounts: "
                           f"{', '.join(sorted(self.accounts))})")
            return False
        mon = self._monitor(ev.time)
        try:
            change = mon.apply_trade(ev.account, ev.instrument, ev.quantity, self.market.market(ev.time))
        except InputError as e:
            self.summary.notices += 1
            self.on_notice(f"line {ev.line}: trade skipped: {e}")
            return False
        change["line"] = ev.line
        self.pending.setdefault(ev.account, []).append(change)
        self.summary.trades += 1
        if self.on_trade is not None:
            self.on_trade(ev, change)
        return True

    def remargin(self, at: dt.datetime) -> None:
        """Re-margin every account at ``at``; ``on_records`` gets each chunk of accounts' records (a
        ``pmjax.apps.monitor_records.RecordChunk``) as soon as it is computed (the next chunks compute meanwhile).
        """
        moves = self.pending.pop("*", [])
        collecting = gc.isenabled() and self.freeze_gc
        if collecting:  # no collection in the middle of a re-margin: they were the slow ticks (methodology 9.5)
            gc.disable()
        try:
            for part in self._monitor(at).update_chunks(self.market.market(at)):
                own = {i: self.pending.pop(a) for i, a in enumerate(part.accounts) if a in self.pending}
                part.set_changed(moves, own)
                self.on_records(part)
        finally:
            if collecting:
                gc.enable()
        self.last_margin = at
        self.summary.remargins += 1
        self.summary.last = at.isoformat()
        if self.freeze_gc and self.summary.remargins == 1:
            gc.collect()
            gc.freeze()

    def finish(self) -> None:
        """At the end of input: a last re-margin when anything changed since the last one (or none was made)."""
        if self.now is not None and (self.pending or self.last_margin is None):
            self.remargin(self.now)
