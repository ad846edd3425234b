"""The monitor's record chunks: lines encoded from columns are exactly ``json_line`` of the record dicts."""

import datetime as dt
import json

import numpy as np
import pytest

import pmjax
from pmjax.apps.follow import Follower
from pmjax.apps.monitor_records import STATUS_EVENTS, MethodColumns, RecordChunk, statuses_of
from pmjax.io.documents import json_line
from pmjax.io.feed import FeedEvent


def random_chunk(seed: int, n: int = 40, nan: bool = False) -> RecordChunk:
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 6, n)
    collateral = np.where(rng.random(n) < 0.3, 0.0, scale * rng.uniform(0, 3, n))
    positions = scale * rng.normal(0, 1, n)
    futures = np.where(rng.random(n) < 0.5, 0.0, scale * rng.normal(0, 0.2, n))
    futures[5], collateral[6], positions[6] = -0.0, 0.0, -0.0  # signed zeros keep their own text
    equity = collateral + positions + futures
    if nan:
        equity[::7] = np.nan
        positions[3] = np.inf
    fraction = 0.8
    methods, statuses = {}, {}
    for m, with_nov in (("span", True), ("deribit", False), ("rules", False)):
        init = scale * rng.uniform(0, 2, n)
        maint = init * rng.uniform(0.5, 1.0, n)
        nov = positions if with_nov else None
        req, init_req = (maint + nov, init + nov) if with_nov else (maint, init)
        methods[m] = MethodColumns(init, maint, req, init_req, equity, nov)
        statuses[m] = statuses_of(equity, req, init_req, fraction)
    names = [f"acct-{i}" for i in range(n)]
    names[1], names[2] = "désk 100%", 'quote"back\\slash'
    settled = [[] for _ in range(n)]
    settled[4] = [{"instrument": "BTC-2JAN26-90000-C", "index": 90123.5, "proceeds": 0.25}]
    head = {"step": seed, "as_of": "2026-01-02T10:00:00+00:00", "market": "feed 50% at 2026-01-02"}
    return RecordChunk(head, names, ["USD", "BTC"] * (n // 2), equity, collateral, positions, futures, methods,
                       statuses, "deribit" if seed % 2 else "span", fraction, settled)


@pytest.mark.parametrize("seed", range(6))
def test_lines_are_json_line_of_the_records(seed):
    chunk = random_chunk(seed, nan=seed == 5)
    lines = chunk.lines()
    assert lines == [json_line(r) for r in random_chunk(seed, nan=seed == 5).records()]
    assert [json.loads(x)["account"] for x in lines] == chunk.accounts
    assert {r["status"] for r in chunk} >= {"ok", "liquidation_warning"}  # the events path is exercised


def test_changed_moves_and_own_trades():
    chunk, fresh = random_chunk(1), random_chunk(1)
    moves = [{"type": "index", "underlying": "BTC", "price": 90000.5, "line": 3}]
    own = {2: [{"type": "trade", "instrument": "BTC-PERPETUAL", "quantity": 1.5, "line": 4}]}
    chunk.set_changed(moves, own)
    fresh.records()  # dicts first, then the changes: both orders give the same records
    fresh.set_changed(moves, own)
    assert chunk.lines() == [json_line(r) for r in fresh]
    assert [len(r["changed"]) for r in chunk] == [1, 1, 2] + [1] * (len(chunk) - 3)
    assert moves == [{"type": "index", "underlying": "BTC", "price": 90000.5, "line": 3}]  # not extended in place


def test_events_follow_the_status():
    chunk = random_chunk(3)
    for r in chunk:
        assert [e["type"] for e in r["events"]] == list(STATUS_EVENTS[r["status"]])
        for e in r["events"]:
            assert e["shortfall"] == e["threshold"] - r["equity"] > 0


def test_alerts_name_each_call():
    chunk = random_chunk(2)
    calls = [r for r in chunk if r["status"] in ("margin_call", "liquidation_warning")]
    alerts = chunk.alerts()
    assert len(alerts) == len(calls) > 0
    for a, r in zip(alerts, calls):
        assert r["account"] in a and f"{r['equity']:,.6g}" in a
        assert ("liquidation warning" in a) == (r["status"] == "liquidation_warning")


def test_follower_lines_equal_the_records():
    """Through the follower (a trade and index moves), every chunk's lines are json_line of its records."""
    market = pmjax.load_market()
    accounts = pmjax.load_accounts("examples/accounts.yaml")
    chunks = []
    f = Follower(accounts, market, pmjax.load_config(), interval_ms=1.0, on_records=chunks.append,
                 on_notice=pytest.fail, monitor_kwargs={"methods": ("span", "deribit", "rules")}, freeze_gc=False)
    t0 = market.as_of
    name = accounts[0].account
    f.step(FeedEvent(line=1, time=t0, kind="index", underlying="BTC", price=market.spot("BTC") * 0.97))
    f.step(FeedEvent(line=2, time=t0 + dt.timedelta(seconds=1), kind="trade", account=name,
                     instrument=pmjax.parse_instrument("BTC-PERPETUAL"), quantity=-0.5))
    f.step(FeedEvent(line=3, time=t0 + dt.timedelta(seconds=2), kind="index", underlying="BTC",
                     price=market.spot("BTC") * 0.7))
    assert len(chunks) == 2  # the first index line is not yet interval_ms after the feed's start
    for chunk in chunks:
        lines = chunk.lines()
        assert lines == [json_line(r) for r in chunk]
    assert [c["type"] for c in json.loads(chunks[0].lines()[0])["changed"]] == ["index", "trade"]
    assert [c["type"] for c in json.loads(chunks[0].lines()[1])["changed"]] == ["index"]


def test_follower_pauses_collection_during_a_remargin_only():
    """Automatic garbage collection is off while a re-margin writes (its pauses were the slow ticks), back on
    after, also when writing fails."""
    import gc

    market = pmjax.load_market()
    accounts = pmjax.load_accounts("examples/accounts.yaml")
    seen = []

    def on_records(chunk):
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise OSError("broken pipe")

    f = Follower(accounts, market, pmjax.load_config(), interval_ms=1.0, on_records=on_records,
                 on_notice=pytest.fail, monitor_kwargs={"methods": ("span",)})
    assert gc.isenabled()
    try:
        f.remargin(market.as_of)
        assert seen == [False] and gc.isenabled()
        with pytest.raises(OSError):
            f.remargin(market.as_of)
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the follower froze this process's objects after its first re-margin
