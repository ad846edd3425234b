"""One chunk of the monitor's records, kept as columns over accounts.

``Monitor.update_chunks`` yields a ``RecordChunk`` per chunk of accounts. It is a sequence of record dicts
(built on first use, the keys of ``pmjax.apps.monitor``'s module docstring) and it also encodes itself straight
from its columns: ``lines()`` gives, byte for byte, ``json_line(record)`` of every record (one ``repr`` per
distinct number and one string template per chunk instead of a walk of 1,000 nested dicts; the follower writes
thousands of lines per tick), ``alerts()`` the readable margin-call lines of ``pmjax monitor --follow``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import numpy as np

from pmjax.apps.names import CALL_STATUSES
from pmjax.io.documents import json_line

#: the events of each status, in order
STATUS_EVENTS = {"ok": (), "initial_breach": ("initial_breach",), "margin_call": ("margin_call",),
                 "liquidation_warning": ("margin_call", "liquidation_warning")}

#: per method, the keys of ``margins[method]`` in a record, in order (span adds ``nov``)
MARGIN_KEYS = ("initial", "maintenance", "requirement", "initial_requirement", "excess", "usage", "status")


def _numbers(values: np.ndarray) -> list[str]:
    """Each float as ``json.dumps`` writes it (``float.__repr__``; a non-finite one as null, as ``json_line``)."""
    out = list(map(float.__repr__, values.tolist()))
    if not np.isfinite(values).all():
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            out[i] = "null"
    return out


#: a string as JSON (account names, currencies, statuses: a few distinct values, written on every line)
_string = functools.lru_cache(maxsize=1 << 16)(json.dumps)


class _Numbers:
    """The text of many float columns at once, each distinct float formatted once: a record repeats its figures
    (equity is the positions' value, SPAN's requirement its nov, Deribit's requirement its maintenance, an event's
    threshold a requirement), and formatting a float is most of a line's cost. Distinct means distinct bits, so
    0.0 and -0.0 keep their own text."""

    def __init__(self, columns: list[np.ndarray]):
        columns = list({id(c): c for c in columns}.values())
        self.columns = columns  # kept, so that their ids stay theirs
        self.text: dict[int, list[str]] = {}
        if not columns:
            return
        flat = np.concatenate([np.asarray(c, np.float64).ravel() for c in columns])
        unique, where = np.unique(flat.view(np.int64), return_inverse=True)
        every = np.asarray(_numbers(unique.view(np.float64)), dtype=object)[where.ravel()].tolist()
        start = 0
        for c in columns:
            self.text[id(c)] = every[start:start + c.size]
            start += c.size

    def __call__(self, values: np.ndarray) -> list[str]:
        return self.text[id(values)] if id(values) in self.text else _numbers(values)


def _negated(text: str) -> str:
    """The JSON text of -x from that of x (x finite or null; 0.0 stays 0.0, as b - a is +0 where a - b is)."""
    if text.startswith("-"):
        return text[1:]
    return text if text in ("0.0", "null") else "-" + text


class MethodColumns:
    """One method's figures over the chunk's accounts (margin currency)."""

    def __init__(self, initial, maintenance, requirement, initial_requirement, equity, nov=None):
        self.initial, self.maintenance = initial, maintenance
        self.requirement, self.initial_requirement = requirement, initial_requirement
        self.excess = equity - requirement
        self.usage = np.divide(requirement, equity, out=np.zeros_like(requirement), where=equity > 0)
        self.nov = nov


class RecordChunk(Sequence):
    """The records of accounts ``accounts`` (names) at one update (module docstring).

    ``head``: {"step", "as_of", "market"}; ``currencies``: margin currency per account; ``equity``,
    ``collateral``, ``positions``, ``futures``: arrays over the accounts; ``methods``: method -> ``MethodColumns``;
    ``statuses``: method -> status per account; ``settled``: per account, its settlement dicts."""

    def __init__(self, head: dict, accounts: list[str], currencies: list[str], equity, collateral, positions,
                 futures, methods: dict, statuses: dict, primary: str, fraction: float, settled: list):
        self.head, self.accounts, self.currencies = head, accounts, currencies
        self.equity, self.collateral, self.positions, self.futures = equity, collateral, positions, futures
        self.methods, self.statuses, self.primary, self.fraction = methods, statuses, primary, fraction
        self.settled = settled
        self.changed: list[list] | None = None
        self._moves: list = []
        self._own: dict[int, list] = {}
        self._dicts: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.accounts)

    def __getitem__(self, i):
        return self.records()[i]

    def set_changed(self, moves: list, own: dict[int, list]) -> None:
        """What changed since each account's last line: the market ``moves`` (every account) then the account's
        ``own`` changes (position in the chunk -> list of trade changes); adds ``changed`` to every record."""
        self._moves, self._own = moves, own
        self.changed = [moves + own[i] if i in own else list(moves) for i in range(len(self))]
        if self._dicts is not None:
            for r, c in zip(self._dicts, self.changed):
                r["changed"] = c

    # ------------------------------------------------------------ dicts

    def records(self) -> list[dict]:
        """The record dicts (built once)."""
        if self._dicts is None:
            self._dicts = self._build()
        return self._dicts

    def _build(self) -> list[dict]:
        prim, frac = self.primary, self.fraction
        per_method = {}
        for m, c in self.methods.items():
            col = {"initial": c.initial.tolist(), "maintenance": c.maintenance.tolist(),
                   "requirement": c.requirement.tolist(), "initial_requirement": c.initial_requirement.tolist(),
                   "excess": c.excess.tolist(),
                   "usage": [u if e > 0 else None for u, e in zip(c.usage.tolist(), self.equity.tolist())],
                   "status": self.statuses[m]}
            if c.nov is not None:
                col["nov"] = c.nov.tolist()
            per_method[m] = [dict(zip(col, values)) for values in zip(*col.values())]
        lists = [x.tolist() for x in (self.equity, self.collateral, self.positions, self.futures)]
        step, as_of, source = self.head["step"], self.head["as_of"], self.head["market"]
        out = []
        for i, (e, c, pv, fp) in enumerate(zip(*lists)):
            margins = {m: rows[i] for m, rows in per_method.items()}
            status = margins[prim]["status"]
            r = {"step": step, "as_of": as_of, "market": source, "account": self.accounts[i],
                 "currency": self.currencies[i], "equity": e, "collateral": c, "positions_value": pv,
                 "futures_pnl": fp, "margins": margins, "primary": prim, "status": status,
                 "events": events_of(status, prim, e, margins[prim], frac) if status != "ok" else [],
                 "settled": self.settled[i]}
            if self.changed is not None:
                r["changed"] = self.changed[i]
            out.append(r)
        return out

    # ------------------------------------------------------------ lines

    def lines(self) -> list[str]:
        """``json_line`` of every record, from the columns (same bytes; tested): one template per chunk, filled
        once per line."""
        if self._dicts is not None:  # a caller has built (and may have edited) the dicts
            return [json_line(r) for r in self._dicts]
        n, status = len(self), self.statuses[self.primary]
        positive = np.flatnonzero(self.equity > 0)
        usage = {m: c.usage[positive] for m, c in self.methods.items()}
        events = self._event_columns(status)
        numbers = _Numbers([self.equity, self.collateral, self.positions, self.futures]
                           + [x for c in self.methods.values() for x in (c.initial, c.maintenance, c.requirement,
                                                                        c.initial_requirement, c.excess, c.nov)
                              if x is not None]
                           + list(usage.values()) + [x for x in events.values() if isinstance(x, np.ndarray)])
        slots, cols = [], []

        def fixed(key: str, value) -> None:
            slots.append(f"{json.dumps(key)}: {json.dumps(value).replace('%', '%%')}")

        def slot(key: str, column: list[str]) -> None:
            slots.append(f"{json.dumps(key)}: %s")
            cols.append(column)

        for k in ("step", "as_of", "market"):
            fixed(k, self.head[k])
        slot("account", list(map(_string, self.accounts)))
        slot("currency", list(map(_string, self.currencies)))
        for key, values in (("equity", self.equity), ("collateral", self.collateral),
                            ("positions_value", self.positions), ("futures_pnl", self.futures)):
            slot(key, numbers(values))
        for j, (m, c) in enumerate(self.methods.items()):
            used = ["null"] * n
            for i, u in zip(positive.tolist(), numbers(usage[m])):
                used[i] = u
            cells = [numbers(c.initial), numbers(c.maintenance), numbers(c.requirement),
                     numbers(c.initial_requirement), numbers(c.excess), used, list(map(_string, self.statuses[m]))]
            keys = list(MARGIN_KEYS)
            if c.nov is not None:
                cells.append(numbers(c.nov))
                keys.append("nov")
            open_ = ('"margins": {' if j == 0 else "") + f"{json.dumps(m)}: {{"
            for k, (key, cell) in enumerate(zip(keys, cells)):
                slots.append((open_ if k == 0 else "") + f"{json.dumps(key)}: %s" + ("}" if k == len(keys) - 1 else ""))
                cols.append(cell)
        slots[-1] += "}"
        fixed("primary", self.primary)
        slot("status", list(map(_string, status)))
        slot("events", self._event_lines(status, events, numbers))
        slot("settled", [json_line(x) if x else "[]" for x in self.settled])
        if self.changed is not None:
            shared = json_line(self._moves)
            slot("changed", [json_line(self.changed[i]) if i in self._own else shared for i in range(n)])
        template = "{" + ", ".join(slots) + "}"
        return [template % row for row in zip(*cols)]

    def _event_columns(self, status: list[str]) -> dict:
        """The events' own figures: liquidation thresholds and shortfalls, initial-breach shortfalls, with the rows
        (accounts of the chunk) they belong to."""
        c = self.methods[self.primary]
        liq = [i for i, s in enumerate(status) if s == "liquidation_warning"]
        breach = [i for i, s in enumerate(status) if s == "initial_breach"]
        threshold = self.fraction * c.requirement[liq]
        return {"liquidation_rows": liq, "liquidation_threshold": threshold,
                "liquidation_shortfall": threshold - self.equity[liq], "breach_rows": breach,
                "breach_shortfall": c.initial_requirement[breach] - self.equity[breach]}

    def _event_lines(self, status: list[str], events: dict, numbers: _Numbers) -> list[str]:
        """The ``events`` list of every record, as JSON, one template per status. Thresholds are the requirements'
        own text; the margin call's shortfall, requirement - equity, is the negated excess (IEEE subtraction is
        antisymmetric, so the same bits)."""
        c = self.methods[self.primary]
        out = ["[]"] * len(status)
        method = json.dumps(self.primary).replace("%", "%%")
        event = '{"type": "%s", "method": ' + method + ', "equity": %%s, "threshold": %%s, "shortfall": %%s}'
        template = {s: "[" + ", ".join(event % k for k in kinds) + "]" for s, kinds in STATUS_EVENTS.items() if kinds}
        eq, req, init_req = numbers(self.equity), numbers(c.requirement), numbers(c.initial_requirement)
        excess = numbers(c.excess)
        liq = dict(zip(events["liquidation_rows"], zip(numbers(events["liquidation_threshold"]),
                                                       numbers(events["liquidation_shortfall"]))))
        breach = dict(zip(events["breach_rows"], numbers(events["breach_shortfall"])))
        for i, s in enumerate(status):
            if s == "liquidation_warning":
                out[i] = template[s] % (eq[i], req[i], _negated(excess[i]), eq[i], *liq[i])
            elif s == "margin_call":
                out[i] = template[s] % (eq[i], req[i], _negated(excess[i]))
            elif s == "initial_breach":
                out[i] = template[s] % (eq[i], init_req[i], breach[i])
        return out

    def alerts(self) -> list[str]:
        """One readable line per account in a margin call or liquidation warning (stderr of ``--follow``)."""
        status, c = self.statuses[self.primary], self.methods[self.primary]
        out = []
        for i, s in enumerate(status):
            if s in CALL_STATUSES:
                what = "liquidation warning" if s == "liquidation_warning" else "margin call"
                out.append(f"pmjax: {what}: account {self.accounts[i]} at {self.head['as_of']}: equity "
                           f"{float(self.equity[i]):,.6g} {self.currencies[i]} < {self.primary} requirement "
                           f"{float(c.requirement[i]):,.6g}")
        return out


def events_of(status: str, method: str, equity: float, figures: dict, fraction: float) -> list[dict]:
    """The events of one account's status by ``method`` (its record's ``margins[method]``)."""
    req, init_req = figures["requirement"], figures["initial_requirement"]
    events = []
    for kind in STATUS_EVENTS[status]:
        threshold = {"initial_breach": init_req, "margin_call": req, "liquidation_warning": fraction * req}[kind]
        events.append({"type": kind, "method": method, "equity": equity, "threshold": threshold,
                       "shortfall": threshold - equity})
    return events


def statuses_of(equity: np.ndarray, requirement: np.ndarray, initial_requirement: np.ndarray,
                fraction: float) -> list[str]:
    """The status of each account's equity against a method's maintenance and initial requirements, by
    severity: liquidation_warning, margin_call, initial_breach, ok."""
    status = np.select([equity < fraction * requirement, equity < requirement, equity < initial_requirement],
                       ["liquidation_warning", "margin_call", "initial_breach"], "ok")
    return status.tolist()


__all__ = ["MARGIN_KEYS", "STATUS_EVENTS", "MethodColumns", "RecordChunk", "events_of", "statuses_of"]
