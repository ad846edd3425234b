"""The monitor's SQLite store (pmjax.apps.monitor_store): layout, idempotent writes, restarts, history, plot,
errors. Records are made by hand in ``Monitor.update``'s layout (no jax needed)."""

from __future__ import annotations

import sqlite3

import pytest

from pmjax.apps.monitor_store import TABLES, MarginStore, plot_history
from pmjax.core.errors import InputError

T0, T1, T2 = "2026-01-02T10:00:00+00:00", "2026-01-02T10:05:00+00:00", "2026-01-02T10:10:00+00:00"


def margin(initial, maintenance, requirement, initial_requirement, equity, status, nov=None):
    m = {"initial": initial, "maintenance": maintenance, "requirement": requirement,
         "initial_requirement": initial_requirement, "excess": equity - requirement,
         "usage": requirement / equity if equity > 0 else None, "status": status}
    if nov is not None:
        m["nov"] = nov
    return m


def record(step, as_of, account, equity, deribit, span, events=(), currency="BTC"):
    """One record as Monitor.update makes it; ``deribit``/``span``: (initial, maintenance, status)."""
    d_init, d_maint, d_status = deribit
    s_init, s_maint, s_status = span
    margins = {"span": margin(s_init, s_maint, s_maint + 0.1, s_init + 0.1, equity, s_status, nov=0.1),
               "deribit": margin(d_init, d_maint, d_maint, d_init, equity, d_status)}
    evs = [{"type": kind, "method": "deribit", "equity": equity, "threshold": thr, "shortfall": thr - equity}
           for kind, thr in events]
    return {"step": step, "as_of": as_of, "market": "test market", "account": account, "currency": currency,
            "equity": equity, "collateral": equity, "positions_value": 0.0, "futures_pnl": 0.0, "margins": margins,
            "primary": "deribit", "status": d_status, "events": evs, "settled": []}


def feed(times=(T0, T1)):
    """Two accounts, two methods; ``short`` gets a margin call at the second time."""
    recs = []
    for step, ts in enumerate(times):
        recs.append(record(step, ts, "alpha", 10.0 + step, (2.0, 1.5, "ok"), (2.5, 2.2, "ok")))
        if step == 1:
            recs.append(record(step, ts, "short", 1.0, (1.6, 1.2, "margin_call"), (1.5, 1.3, "margin_call"),
                               events=[("margin_call", 1.2)]))
        else:
            recs.append(record(step, ts, "short", 3.0 - step, (1.6, 1.2, "ok"), (1.5, 1.3, "ok")))
    return recs


def rows(path, table):
    with sqlite3.connect(path) as conn:
        names = [name for name, _ in TABLES[table][0]]
        return [dict(zip(names, r)) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3")]


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "margins.sqlite")


def test_rows_and_columns_as_written(store_path):
    with MarginStore(store_path) as store:
        assert store.write_records(feed()) == 4 * 2 + 1
    with sqlite3.connect(store_path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(margins)")]
    # SPEC section 8's columns first, then the extras
    assert cols[:7] == ["timestamp", "account", "method", "initial", "maintenance", "equity", "status"]
    assert cols[7:] == ["requirement", "initial_requirement", "currency"]
    m = rows(store_path, "margins")
    assert len(m) == 8
    short_call = [r for r in m if r["account"] == "short" and r["timestamp"] == T1]
    assert {r["method"]: (r["initial"], r["maintenance"], r["equity"], r["status"]) for r in short_call} == {
        "deribit": (1.6, 1.2, 1.0, "margin_call"), "span": (1.5, 1.3, 1.0, "margin_call")}
    span = next(r for r in short_call if r["method"] == "span")
    assert span["requirement"] == pytest.approx(1.4) and span["initial_requirement"] == pytest.approx(1.6)
    assert span["currency"] == "BTC"
    ev = rows(store_path, "events")
    assert ev == [{"timestamp": T1, "account": "short", "kind": "margin_call", "method": "deribit", "equity": 1.0,
                   "threshold": 1.2, "shortfall": pytest.approx(0.2), "detail": None}]


def test_the_same_records_twice_leave_one_copy(store_path):
    with MarginStore(store_path) as store:
        store.write_records(feed())
        assert store.write_records(feed()) == 0
        assert store.write_records(feed() + feed()) == 0
        assert (store.count("margins"), store.count("events"), store.count("trades")) == (8, 1, 0)


def test_trades_are_idempotent(store_path):
    with MarginStore(store_path) as store:
        assert store.write_trade("2026-01-02T10:01:00Z", "alpha", "BTC-PERPETUAL", 0.5, 3) == 1
        assert store.write_trade("2026-01-02T10:01:00Z", "alpha", "BTC-PERPETUAL", 0.5, 3) == 0
        assert store.write_trade("2026-01-02T10:01:00Z", "alpha", "BTC-PERPETUAL", -0.5, None) == 1
        assert store.count("trades") == 2
    first = max(rows(store_path, "trades"), key=lambda r: r["quantity"])
    assert first == {"timestamp": "2026-01-02T10:01:00Z", "account": "alpha", "instrument": "BTC-PERPETUAL",
                     "quantity": 0.5, "line": 3}


def test_a_restart_appends_new_timestamps_only(store_path):
    with MarginStore(store_path) as store:
        store.write_records(feed((T0, T1)))
    # the monitor restarts on the same store and replays the feed from the start, now one step longer
    with MarginStore(store_path) as store:
        assert store.write_records(feed((T0, T1, T2))) == 4  # T2: two accounts x two methods, no event
        assert store.count("margins") == 12 and store.count("events") == 1
        assert [e["timestamp"] for e in store.history("alpha")] == [T0, T1, T2]


def test_wal_mode_and_synchronous_normal(store_path):
    with MarginStore(store_path) as store:
        assert store.journal_mode == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with sqlite3.connect(store_path) as conn:  # WAL is persistent: a plain reader sees it
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_history_order_and_values(store_path):
    recs = feed((T0, T1, T2))
    with MarginStore(store_path) as store:
        store.write_records(recs[4:] + recs[:4])  # written out of order
        assert store.accounts() == ["alpha", "short"]
        hist = store.history("short")
        assert [h["timestamp"] for h in hist] == [T0, T1, T2]
        assert [h["equity"] for h in hist] == [3.0, 1.0, 1.0]
        assert hist[1]["margins"]["deribit"] == {"initial": 1.6, "maintenance": 1.2, "requirement": 1.2,
                                                 "initial_requirement": 1.6, "status": "margin_call"}
        assert set(hist[0]["margins"]) == {"deribit", "span"} and hist[0]["currency"] == "BTC"
        assert store.history("nobody") == []
        assert [e["kind"] for e in store.events("short")] == ["margin_call"]


def test_history_orders_timestamps_as_times(store_path):
    with MarginStore(store_path) as store:
        # 09:30Z is earlier than 10:00+00:00 though it sorts later as text in another offset
        store.write_records([record(0, "2026-01-02T10:30:00+01:00", "alpha", 5.0, (1, 1, "ok"), (1, 1, "ok")),
                             record(1, T0, "alpha", 6.0, (1, 1, "ok"), (1, 1, "ok"))])
        assert [h["equity"] for h in store.history("alpha")] == [5.0, 6.0]


def test_event_extras_go_to_detail(store_path):
    rec = record(0, T0, "alpha", 1.0, (2.0, 1.5, "margin_call"), (1, 1, "ok"), events=[("margin_call", 1.5)])
    rec["events"][0]["note"] = "x"
    with MarginStore(store_path) as store:
        store.write_records([rec])
        assert store.events()[0]["detail"] == {"note": "x"}


def test_plot_is_a_png(store_path, tmp_path):
    with MarginStore(store_path) as store:
        store.write_records(feed((T0, T1, T2)))
    out = str(tmp_path / "short.png")
    assert plot_history(store_path, "short", out) == out
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_name_the_account_and_file(store_path, tmp_path):
    with MarginStore(store_path) as store:
        store.write_records(feed())
    with pytest.raises(InputError, match="'nobody'.*alpha, short"):
        plot_history(store_path, "nobody", str(tmp_path / "x.png"))
    missing = str(tmp_path / "missing.sqlite")
    with pytest.raises(InputError, match="missing.sqlite"):
        plot_history(missing, "alpha", str(tmp_path / "x.png"))
    assert not (tmp_path / "missing.sqlite").exists()  # a reader creates nothing
    other = str(tmp_path / "other.sqlite")
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE prices (t TEXT, p REAL)")
    with pytest.raises(InputError, match="other.sqlite.*not a pmjax margin store"):
        plot_history(other, "alpha", str(tmp_path / "x.png"))


def test_open_errors_name_the_file(tmp_path):
    bad_folder = str(tmp_path / "no" / "such" / "m.sqlite")
    with pytest.raises(InputError, match="m.sqlite.*no such folder") as e:
        MarginStore(bad_folder)
    assert "\n" not in str(e.value)
    text = tmp_path / "notes.sqlite"
    text.write_text("this is not a database, just text that is long enough to have a header" * 3)
    with pytest.raises(InputError, match="notes.sqlite.*not an SQLite margin store") as e:
        MarginStore(str(text))
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="is a directory"):
        MarginStore(str(tmp_path))


def test_a_store_of_another_schema_is_refused(tmp_path):
    path = str(tmp_path / "old.sqlite")
    with sqlite3.connect(path) as conn:  # SPEC's seven columns only, no key
        conn.execute("CREATE TABLE margins (timestamp TEXT, account TEXT, method TEXT, initial REAL, "
                     "maintenance REAL, equity REAL, status TEXT)")
    with pytest.raises(InputError, match="old.sqlite.*table margins") as e:
        MarginStore(path)
    assert "\n" not in str(e.value)
    unrelated = str(tmp_path / "app.sqlite")
    with sqlite3.connect(unrelated) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(InputError, match="app.sqlite.*users"):
        MarginStore(unrelated)


def test_malformed_records_are_refused_in_one_transaction(store_path):
    recs = feed()
    broken = dict(recs[1])
    del broken["margins"]
    with MarginStore(store_path) as store:
        with pytest.raises(InputError, match="record 2"):
            store.write_records([recs[0], broken])
        assert store.count("margins") == 0  # nothing of the batch went in
