"""pmjax monitor --follow (SPEC section 8; pmjax.apps.follow): a feed of index lines re-margins to exactly the
figures --replay of the same spot path gives; a trade changes that account only, to pmjax margin of its new book;
bad lines are skipped with a notice and nothing is lost from the store; replaying a feed twice into one store
leaves one copy of each row."""

import datetime as dt
import json
import sqlite3

import jax.numpy as jnp
import pytest
import yaml

import pmjax
from pmjax.apps.follow import Follower
from pmjax.apps.monitor import Monitor, market_at
from pmjax.cli.app import main
from pmjax.io.feed import read_feed

T0 = dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.timezone.utc)
PATH = [(0, 89000.0, 3030.0), (1, 86500.0, 2890.0), (2, 83000.0, 2700.0), (3, 87500.0, 2950.0)]  # hours, BTC, ETH


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def index_line(t, name, price):
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": f"deribit_price_index.{name}", "data": {"index_name": name, "price": price, "timestamp": ms(t)}}})


def mark_line(t):
    return json.dumps({"type": "mark", "timestamp": t.isoformat().replace("+00:00", "Z")})


def trade_line(t, account, instrument, q):
    return json.dumps({"type": "trade", "timestamp": t.isoformat(), "account": account, "instrument": instrument,
                       "quantity": q})


def path_feed():
    lines = []
    for h, btc, eth in PATH:
        t = T0 + dt.timedelta(hours=h)
        lines += [index_line(t, "btc_usd", btc), index_line(t, "eth_usd", eth), mark_line(t)]
    return lines


@pytest.fixture(scope="module")
def market():
    return pmjax.load_market("deribit-20260102")


@pytest.fixture(scope="module")
def accounts():
    return pmjax.load_accounts("examples/accounts.yaml")


def run_follow(portfolios, market, lines, interval_ms=3.6e9):
    records, notices = [], []
    f = Follower(portfolios, market, pmjax.load_config(), interval_ms=interval_ms, on_records=records.append,
                 on_notice=notices.append, monitor_kwargs={})
    f.feed(read_feed(lines))
    return records, notices, f


def test_index_feed_equals_replay_of_the_spot_path(market, accounts):
    """Update by update, the same statuses and figures as --replay of the spot path (bit for bit)."""
    got, notices, _ = run_follow([p for p in accounts], market, path_feed())
    assert not notices and len(got) == len(PATH)
    markets = [market_at(market, T0 + dt.timedelta(hours=h), {"BTC": b, "ETH": e}) for h, b, e in PATH]
    mon = Monitor(pmjax.load_accounts("examples/accounts.yaml"), markets[0], pmjax.load_config())
    for step, m in zip(got, markets):
        want = mon.update(m)
        for g, w in zip(step, want):
            assert g["account"] == w["account"] and g["status"] == w["status"]
            assert g["equity"] == w["equity"]
            assert g["margins"] == w["margins"]
            assert [c["type"] for c in g["changed"]] == ["index", "index"]


def test_trade_changes_that_account_only(market):
    """A trade in a new contract (it takes a spare row: nothing recompiles) and one in a held contract: the trading
    account's margins equal pmjax margin of its new book on the same market; the others are unchanged."""
    lines = path_feed()[:3]
    t = T0 + dt.timedelta(minutes=30)
    trades = [trade_line(t, "treasury-btc-collar", "BTC-27MAR26-100000-C", -1.5), trade_line(t, "treasury-btc-collar", "BTC-PERPETUAL", 0.4)]
    base, _, _ = run_follow(pmjax.load_accounts("examples/accounts.yaml"), market, lines + [mark_line(t)])
    moved, notices, f = run_follow(pmjax.load_accounts("examples/accounts.yaml"), market, lines + trades
                                   + [mark_line(t)])
    assert not notices and f.summary.trades == 2
    names = [r["account"] for r in moved[-1]]
    a = names.index("treasury-btc-collar")
    for i, (x, y) in enumerate(zip(base[-1], moved[-1])):
        if i != a:
            assert x["margins"] == y["margins"] and x["equity"] == y["equity"]
    assert [c["type"] for c in moved[-1][a]["changed"]] == ["trade", "trade"]
    new_book = f.monitor.portfolios[a]
    m = f.market.market(t)
    want = pmjax.compute_margins(new_book, m, pmjax.load_config(), ["span", "deribit"], dtype=jnp.float64)
    got = moved[-1][a]["margins"]
    assert got["deribit"]["initial"] == pytest.approx(want["deribit"]["initial"], rel=1e-10)
    assert got["span"]["initial"] == pytest.approx(want["span"]["total"], rel=1e-10)
    # the option's premium came into collateral: equity is unchanged by the trade itself (at mark)
    assert moved[-1][a]["equity"] == pytest.approx(base[-1][a]["equity"], rel=1e-9)


def test_bad_lines_are_skipped_with_a_notice(market, tmp_path):
    t = T0 + dt.timedelta(minutes=5)
    lines = path_feed()[:3] + [
        "not json",
        json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "book.BTC-PERPETUAL.100ms",
                                                                          "data": {}}}),
        trade_line(t, "nobody", "BTC-PERPETUAL", 1.0),
        trade_line(t, "treasury-btc-collar", "BTC-1JAN30-100000-C", 1.0),
        index_line(T0 - dt.timedelta(hours=1), "btc_usd", 80000.0),  # out of order
        mark_line(t),
    ]
    records, notices, f = run_follow(pmjax.load_accounts("examples/accounts.yaml"), market, lines)
    assert len(notices) == 5
    for n, line in zip(notices, (4, 5, 6, 7, 8)):
        assert f"line {line}" in n
    assert len(records) == 2 and f.summary.remargins == 2


def _store_rows(path):
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"select count(*) from {t}").fetchone()[0] for t in ("margins", "events", "trades")}


def test_cli_follow_store_and_replay_twice(tmp_path, capsys):
    """The command: JSON lines on stdout, the store holds every row once even when the same feed is followed
    twice, and --history plots an account from it."""
    feed = tmp_path / "feed.jsonl"
    t = T0 + dt.timedelta(hours=3, minutes=30)
    feed.write_text("\n".join(path_feed() + [trade_line(t, "treasury-btc-collar", "BTC-PERPETUAL", 0.5), mark_line(t),
                                             "garbage"]) + "\n")
    store = tmp_path / "margins.sqlite"
    args = ["monitor", "examples/accounts.yaml", "--follow", str(feed), "--store", str(store)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.strip().splitlines()]
    # interval_ms 1000: the first index line of each new hour re-margins too (an hour has passed), then the mark
    assert len(lines) % 3 == 0 and {"account", "margins", "equity", "status", "changed"} <= set(lines[0])
    stamps = {x["as_of"] for x in lines}
    assert len(stamps) == len(PATH) + 1
    assert "line 15" in err and "followed" in err
    first = _store_rows(store)
    assert main(args) == 0
    capsys.readouterr()
    assert _store_rows(store) == first and first["margins"] == 3 * 2 * len(stamps) and first["trades"] == 1
    with sqlite3.connect(store) as c:  # the later re-margin at a feed time is the one kept: the mark's
        last = {r["account"]: r for r in lines if r["as_of"] == lines[-1]["as_of"]}
        eq = dict(c.execute("select account, equity from margins where timestamp = ? and method = 'span'",
                            (lines[-1]["as_of"],)).fetchall())
    assert eq == {a: r["equity"] for a, r in last.items()}
    assert main(["monitor", "--history", str(store), "--account", "treasury-btc-collar", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "history_treasury-btc-collar.png").read_bytes()[:4] == b"\x89PNG"


def test_follow_from_stdin(tmp_path, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(path_feed()[:3]) + "\n"))
    assert main(["monitor", "examples/accounts.yaml", "--follow", "-"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(json.loads(x)["as_of"].startswith("2026-01-02T10:00") for x in out)


def test_one_mode_and_accounts_required(capsys):
    assert main(["monitor", "examples/accounts.yaml"]) == 2
    assert "--replay" in capsys.readouterr().err
    assert main(["monitor", "--follow", "-"]) == 2
    assert "ACCOUNTS" in capsys.readouterr().err
    assert main(["monitor", "--history", "x.sqlite"]) == 2
    assert "--account" in capsys.readouterr().err


def test_examples_accounts_yaml_names():
    doc = yaml.safe_load(open("examples/accounts.yaml"))
    assert "treasury-btc-collar" in [a["account"] for a in doc["accounts"]]


def test_ctrl_c_ends_a_follow_cleanly_with_a_summary(tmp_path):
    """``pmjax monitor ... --follow -`` on an input that stays open (as ``tail -f`` keeps it): the lines come as
    the feed does, and Ctrl-C (SIGINT) ends the command with its summary and status 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PMJAX_JAX_CACHE=str(tmp_path / "cache"))
    # SIGINT raises KeyboardInterrupt as in a terminal, even where this test's runner ignores it (inherited)
    command = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from pmjax.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", command, "monitor", "examples/accounts.yaml", "--follow", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        p.stdin.write("\n".join(path_feed()[:4] + [mark_line(T0 + dt.timedelta(hours=1))]) + "\n")
        p.stdin.flush()
        first = p.stdout.readline()  # the follower has re-margined: a line is out while the input is still open
        assert json.loads(first)["account"]
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "stopped by Ctrl-C" in err and "followed 5 lines" in err
    assert all(json.loads(x)["account"] for x in out.splitlines())
