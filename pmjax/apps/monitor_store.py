"""The monitor's SQLite store (``pmjax monitor ... --store FILE.sqlite``, SPEC section 8).

``MarginStore(path)`` opens (creating if missing) a store of three tables, in WAL journal mode with
``synchronous=NORMAL`` (a reader, such as ``plot_history``, can read while the monitor writes):

- ``margins``: one row per record and method: SPEC's columns (timestamp, account, method, initial,
  maintenance, equity, status) then ``requirement``, ``initial_requirement`` (the levels on the equity basis
  that the status compares equity with; ``pmjax.apps.monitor``) and ``currency``;
- ``events``: one row per record event (``margin_call``, ``initial_breach``, ``liquidation_warning``);
  ``detail`` holds the event's other keys as JSON (NULL when none);
- ``trades``: the feed's trades as applied (``line``: the feed line, when known).

Every table has a primary key on what identifies a row (time, account and method, kind or trade); a row whose key
is stored already updates it only where a value differs (a later re-margin at the same feed time supersedes an
earlier one), so replaying the same feed into the same store, or restarting the monitor on it, leaves one copy of
each row and changes nothing. ``write_records`` writes a batch of records in one transaction.

Timestamps are stored as given (the records' ``as_of``, ISO 8601); ``history`` orders them as times.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Sequence

from pmjax.core.errors import InputError

#: table -> its columns (name, SQLite type), in order, and its primary key
TABLES = {
    "margins": ((("timestamp", "TEXT"), ("account", "TEXT"), ("method", "TEXT"), ("initial", "REAL"),
                 ("maintenance", "REAL"), ("equity", "REAL"), ("status", "TEXT"), ("requirement", "REAL"),
                 ("initial_requirement", "REAL"), ("currency", "TEXT")),
                ("timestamp", "account", "method")),
    "events": ((("timestamp", "TEXT"), ("account", "TEXT"), ("kind", "TEXT"), ("method", "TEXT"),
                ("equity", "REAL"), ("threshold", "REAL"), ("shortfall", "REAL"), ("detail", "TEXT")),
               ("timestamp", "account", "kind")),
    "trades": ((("timestamp", "TEXT"), ("account", "TEXT"), ("instrument", "TEXT"), ("quantity", "REAL"),
                ("line", "INTEGER")),
               ("timestamp", "account", "instrument", "quantity")),
}
#: the event keys that have their own column (the rest go to ``detail``)
EVENT_COLUMNS = ("type", "method", "equity", "threshold", "shortfall")
#: the figures of each method that ``history`` returns
HISTORY_FIGURES = ("initial", "maintenance", "requirement", "initial_requirement", "status")


def _create_sql(table: str) -> str:
    columns, key = TABLES[table]
    cols = ", ".join(f"{name} {kind}" for name, kind in columns)
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({', '.join(key)}))"


def _insert_sql(table: str) -> str:
    """Insert, or update the row of the same key when a value differs (a later re-margin at the same feed time
    supersedes the earlier one); the same row again changes nothing."""
    columns, key = TABLES[table]
    names = [name for name, _ in columns]
    rest = [n for n in names if n not in key]
    head = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    if not rest:
        return head + " ON CONFLICT DO NOTHING"
    return (head + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in rest)
            + " WHERE " + " OR ".join(f"{table}.{n} IS NOT excluded.{n}" for n in rest))


def _check_path(path: str, create: bool) -> None:
    """An ``InputError`` naming ``path`` when it cannot be a store file."""
    if path == ":memory:":
        return
    if os.path.isdir(path):
        raise InputError("is a directory, not an SQLite margin store", source=path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"cannot create the margin store: no such folder {folder}", source=path)
    if not create and not os.path.exists(path):
        raise InputError("no such margin store (SQLite file)", source=path)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class MarginStore:
    """The monitor's SQLite store at ``path`` (module docstring). ``create=False``: the file must exist and
    already be a store (for readers). A context manager; ``close()`` closes it."""

    def __init__(self, path: str, *, create: bool = True, timeout: float = 10.0):
        path = os.fspath(path)
        self.path = path
        _check_path(path, create)
        try:
            self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise InputError(f"cannot open the margin store: {_one_line(e)}", source=path) from None
        try:
            self.journal_mode = str(self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._check_layout(create)
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise InputError(f"not an SQLite margin store: {_one_line(e)}", source=path) from None
        except InputError:
            self.conn.close()
            raise

    def _check_layout(self, create: bool) -> None:
        """The tables that exist have this module's columns and keys; missing ones are created (``create``)
        or, without ``margins``, the file is not a store."""
        found = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "margins" not in found and (found or not create):
            what = f"tables {', '.join(sorted(found))}" if found else "no tables"
            raise InputError(f"not a pmjax margin store (it has {what}, no margins table)", source=self.path)
        for table, (columns, key) in TABLES.items():
            if table not in found:
                if create:
                    self.conn.execute(_create_sql(table))
                continue
            info = self.conn.execute(f"PRAGMA table_info({table})").fetchall()
            have = [(r[1], str(r[2]).upper()) for r in info]
            have_key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            if have != list(columns) or have_key != key:
                want = ", ".join(f"{n} {t}" for n, t in columns)
                got = ", ".join(f"{n} {t}" for n, t in have)
                raise InputError(f"not a pmjax margin store of this layout: table {table} has ({got}) key "
                                 f"({', '.join(have_key)}), expected ({want}) key ({', '.join(key)})",
                                 source=self.path)

    # ------------------------------------------------------------ context manager

    def close(self) -> None:
        """Close the connection (again: nothing)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> MarginStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def _write(self, table_rows: dict[str, list[tuple]]) -> int:
        """Insert rows (table -> rows) in one transaction; the number of rows actually inserted."""
        before = self.conn.total_changes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for table, rows in table_rows.items():
                if rows:
                    self.conn.executemany(_insert_sql(table), rows)
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise InputError(f"cannot write to the margin store: {_one_line(e)}", source=self.path) from None
        return self.conn.total_changes - before

    def write_records(self, records: Sequence[dict]) -> int:
        """The monitor's records (``Monitor.update``): a ``margins`` row per record and method, an ``events``
        row per event, all in one transaction; rows already there are left as they are. Returns the number
        of rows inserted."""
        margins, events = [], []
        for i, rec in enumerate(records):
            try:
                margins.extend(margin_rows(rec))
                events.extend(event_rows(rec))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise InputError(f"record {i + 1} is not a monitor record ({type(e).__name__}: "
                                 f"{_one_line(e)})", source=self.path) from None
        return self._write({"margins": margins, "events": events})

    def write_trade(self, timestamp: str, account: str, instrument: str, quantity: float,
                    line: int | None = None) -> int:
        """One trade of the feed (1 when inserted, 0 when the store already had it)."""
        row = (str(timestamp), str(account), str(instrument), float(quantity), None if line is None else int(line))
        return self._write({"trades": [row]})

    # ------------------------------------------------------------ reading

    def accounts(self) -> list[str]:
        """The accounts with margin rows, sorted."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT account FROM margins ORDER BY account")]

    def count(self, table: str) -> int:
        """Rows in ``table`` (one of ``TABLES``)."""
        if table not in TABLES:
            raise InputError(f"unknown table {table!r} (choose from {', '.join(TABLES)})", source=self.path)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def history(self, account: str) -> list[dict]:
        """One entry per timestamp of ``account``'s margin rows, in time order: ``timestamp``, ``equity``,
        ``currency`` and ``margins`` {method: {initial, maintenance, requirement, initial_requirement,
        status}}, methods in name order. Empty when the store has no rows for the account."""
        rows = self.conn.execute(
            "SELECT timestamp, method, equity, currency, " + ", ".join(HISTORY_FIGURES)
            + " FROM margins WHERE account = ? ORDER BY timestamp, method", (str(account),)).fetchall()
        by_time: dict[str, dict] = {}
        for ts, method, equity, currency, *figures in rows:
            entry = by_time.setdefault(ts, {"timestamp": ts, "equity": equity, "currency": currency, "margins": {}})
            entry["margins"][method] = dict(zip(HISTORY_FIGURES, figures))
        return sorted(by_time.values(), key=lambda e: _time_key(e["timestamp"]))

    def events(self, account: str | None = None) -> list[dict]:
        """The ``events`` rows (of ``account``, or all), in time order, ``detail`` decoded."""
        sql, args = "SELECT * FROM events", ()
        if account is not None:
            sql, args = sql + " WHERE account = ?", (str(account),)
        names = [name for name, _ in TABLES["events"][0]]
        out = [dict(zip(names, r)) for r in self.conn.execute(sql + " ORDER BY timestamp, account, kind", args)]
        for e in out:
            e["detail"] = json.loads(e["detail"]) if e["detail"] else None
        return sorted(out, key=lambda e: _time_key(e["timestamp"]))


def _time_key(ts: str):
    """Sort key of a stored timestamp: the instant when it parses (naive read as UTC), else the text."""
    try:
        t = dt.datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return (1, dt.datetime.min.replace(tzinfo=dt.timezone.utc), str(ts))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return (0, t, str(ts))


def _number(x) -> float | None:
    return None if x is None else float(x)


def margin_rows(record: dict) -> list[tuple]:
    """The ``margins`` rows of one monitor record, one per method, in ``TABLES`` column order."""
    ts, account, equity = str(record["as_of"]), str(record["account"]), float(record["equity"])
    currency = record.get("currency")
    out = []
    for method, m in record["margins"].items():
        out.append((ts, account, str(method), _number(m["initial"]), _number(m["maintenance"]), equity,
                    str(m["status"]), _number(m.get("requirement")), _number(m.get("initial_requirement")),
                    None if currency is None else str(currency)))
    return out


def event_rows(record: dict) -> list[tuple]:
    """The ``events`` rows of one monitor record, one per event, in ``TABLES`` column order."""
    ts, account = str(record["as_of"]), str(record["account"])
    out = []
    for ev in record.get("events") or ():
        extra = {k: v for k, v in ev.items() if k not in EVENT_COLUMNS}
        out.append((ts, account, str(ev["type"]), ev.get("method"), _number(ev.get("equity")),
                    _number(ev.get("threshold")), _number(ev.get("shortfall")),
                    json.dumps(extra, sort_keys=True, default=str) if extra else None))
    return out


# ---------------------------------------------------------------- plot

#: marker colour and label of each event kind on the plot
EVENT_MARKERS = {"initial_breach": ("orange", "initial breach"), "margin_call": ("red", "margin call"),
                 "liquidation_warning": ("darkred", "liquidation warning")}


def plot_history(store_path: str, account: str, out_png: str) -> str:
    """PNG at ``out_png``: ``account``'s equity against each method's requirement (maintenance, solid) and
    initial requirement (dashed) over time, its events marked on the equity line. Returns ``out_png``."""
    with MarginStore(store_path, create=False) as store:
        hist = store.history(account)
        events = store.events(account)
        if not hist:
            known = store.accounts()
            listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "") if known else "none"
            raise InputError(f"no margin rows for account {account!r} (accounts in the store: {listed})",
                             source=store_path)
    folder = os.path.dirname(os.path.abspath(out_png))
    if not os.path.isdir(folder):
        raise InputError(f"cannot write the plot: no such folder {folder}", source=out_png)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [_plot_time(e["timestamp"], store_path) for e in hist]
    methods = list(dict.fromkeys(m for e in hist for m in e["margins"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(times, [e["equity"] for e in hist], "k-o", lw=2, ms=3, label="equity")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        color = colors[i % len(colors)]
        pts = [(t, e["margins"][m]) for t, e in zip(times, hist) if m in e["margins"]]
        t = [p[0] for p in pts]
        ax.plot(t, [_nan(p[1]["requirement"]) for p in pts], "-", color=color, marker=".",
                label=f"{m} requirement (maintenance)")
        ax.plot(t, [_nan(p[1]["initial_requirement"]) for p in pts], "--", color=color,
                label=f"{m} initial requirement")
    for kind, (color, label) in EVENT_MARKERS.items():
        pts = [(_plot_time(e["timestamp"], store_path), e["equity"]) for e in events if e["kind"] == kind]
        if pts:
            method = next(e["method"] for e in events if e["kind"] == kind)
            ax.scatter(*zip(*pts), color=color, zorder=5, s=40, label=f"{label} ({method})")
    ax.set_title(f"{account} ({hist[0]['currency'] or '?'}): equity against margin requirements", fontsize=10)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(hist[0]["currency"] or "margin currency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(out_png, dpi=110, format="png", metadata={"Software": None})
    except OSError as e:
        raise InputError(f"cannot write the plot: {e.strerror or _one_line(e)}", source=out_png) from None
    finally:
        plt.close(fig)
    return out_png


def _plot_time(ts: str, source: str) -> dt.datetime:
    """A stored timestamp as a naive UTC datetime (matplotlib's time axis)."""
    key = _time_key(ts)
    if key[0]:
        raise InputError(f"timestamp {ts!r} is not ISO 8601", source=source, field="timestamp")
    return key[1].astimezone(dt.timezone.utc).replace(tzinfo=None)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


__all__ = ["EVENT_COLUMNS", "EVENT_MARKERS", "HISTORY_FIGURES", "MarginStore", "TABLES", "event_rows",
           "margin_rows", "plot_history"]
