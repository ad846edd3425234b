"""The streaming monitor's input (``pmjax.io.feed``, SPEC section 8) and its recorder (``python -m pmjax.feed``).

Every stream is generated here; the recorder runs on fake connections (no network)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import subprocess
import sys
import types

import pytest

from pmjax import feed as recorder
from pmjax.core.instruments import parse_instrument
from pmjax.io.feed import FeedEvent, FeedLineError, FeedNotice, parse_line, read_feed

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)  # 2026-01-02T10:00:00Z in milliseconds


def ms(seconds: float = 0.0) -> int:
    return MS0 + int(seconds * 1000)


def at(seconds: float = 0.0) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: float = 0.0) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def note(channel: str, data) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


def index(name: str, price, t) -> str:
    return note(f"deribit_price_index.{name}", {"index_name": name, "price": price, "timestamp": t})


def ticker(name: str, t, **fields) -> str:
    return note(f"ticker.{name}.100ms", {"instrument_name": name, "timestamp": t, **fields})


def trade(t, account, instrument, quantity) -> str:
    return json.dumps({"type": "trade", "timestamp": t, "account": account, "instrument": instrument,
                       "quantity": quantity})


def mark(t) -> str:
    return json.dumps({"type": "mark", "timestamp": t})


OPTION = "BTC-27MAR26-100000-C"


def stream() -> list[str]:
    return [
        index("btc_usd", 90123.5, ms(0)),
        index("eth_usd", 3012.25, ms(1)),
        "",
        ticker(OPTION, ms(2), mark_iv=45.5, underlying_price=91000.0, index_price=90120.0, mark_price=0.05),
        ticker("BTC-27MAR26", ms(3), mark_price=91050.0, index_price=90130.0),
        ticker("ETH-PERPETUAL", ms(4), mark_price=3013.0, index_price=3012.0),
        trade(iso(5), "acct-1", OPTION, -2.5),
        trade(iso(6), 42, "ETH_USDC-PERPETUAL", 10),
        mark(iso(7)),
    ]


# ---------------------------------------------------------------- the events


def test_a_generated_stream_gives_every_field():
    lines = stream()
    events = list(read_feed(line + "\n" for line in lines))
    assert all(isinstance(e, FeedEvent) for e in events)
    assert [e.line for e in events] == [1, 2, 4, 5, 6, 7, 8, 9]  # line 3 is blank
    assert [e.kind for e in events] == ["index", "index", "ticker", "ticker", "ticker", "trade", "trade", "mark"]
    assert [e.time for e in events] == [at(s) for s in range(8)]
    assert all(e.time.tzinfo is not None and e.time.utcoffset() == dt.timedelta(0) for e in events)
    assert [e.raw for e in events] == [line for line in lines if line]

    btc, eth, opt, fut, perp, sell, buy, mk = events
    assert (btc.underlying, btc.price, btc.instrument, btc.mark_iv, btc.account) == ("BTC", 90123.5, None, None, None)
    assert (eth.underlying, eth.price) == ("ETH", 3012.25)
    assert opt.instrument == parse_instrument(OPTION) and opt.instrument.name == OPTION
    assert (opt.instrument.strike, opt.instrument.right, opt.instrument.kind) == (100000.0, "call", "option")
    assert opt.instrument.expiry == dt.datetime(2026, 3, 27, 8, tzinfo=UTC)
    assert opt.mark_iv == pytest.approx(0.455)
    assert (opt.underlying, opt.underlying_price, opt.index_price, opt.price) == ("BTC", 91000.0, 90120.0, None)
    assert (opt.account, opt.quantity) == (None, None)
    # a future's and a perpetual's forward is their own mark price; they carry no vol
    assert (fut.instrument.kind, fut.mark_iv, fut.underlying_price, fut.index_price) == ("future", None, 91050.0,
                                                                                         90130.0)
    assert (perp.instrument.kind, perp.underlying, perp.underlying_price) == ("perpetual", "ETH", 3013.0)
    assert (sell.account, sell.instrument.name, sell.quantity, sell.underlying) == ("acct-1", OPTION, -2.5, "BTC")
    assert (sell.mark_iv, sell.price, sell.underlying_price) == (None, None, None)
    assert (buy.account, buy.instrument.settlement, buy.quantity) == ("42", "linear", 10.0)  # a numeric id is text
    assert (mk.underlying, mk.instrument, mk.account, mk.quantity, mk.price) == (None, None, None, None, None)


def test_parse_line_takes_one_line_and_strips_its_ending():
    event = parse_line(index("btc_usd", 100.0, ms()) + "\r\n", 12)
    assert (event.line, event.kind, event.raw) == (12, "index", index("btc_usd", 100.0, ms()))
    assert parse_line(index("eth_usd", 5.0, ms()).encode(), 3).underlying == "ETH"  # bytes (a binary pipe)
    with pytest.raises(FeedLineError, match=r"^line 3: not UTF-8 text$"):
        parse_line(b"\xff\xfe", 3)


def test_iso_and_millisecond_timestamps_are_the_same_utc_time():
    forms = [ms(), float(ms()), iso(), iso()[:-1], "2026-01-02T10:00:00+00:00", "2026-01-02T12:00:00+02:00",
             "2026-01-02 10:00:00.000Z"]
    for form in forms:
        assert parse_line(mark(form), 1).time == T0, form
        assert parse_line(trade(form, "a", OPTION, 1), 1).time == T0, form
        assert parse_line(index("btc_usd", 1.0, form), 1).time == T0, form
        assert parse_line(ticker(OPTION, form, mark_iv=50, underlying_price=1.0), 1).time == T0, form
    assert parse_line(mark(ms() + 153), 1).time == T0 + dt.timedelta(milliseconds=153)
    assert parse_line(mark(iso()[:-1]), 1).time.tzinfo is not None  # naive = UTC


# ---------------------------------------------------------------- garbage


BAD = [  # (line, expected message)
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object (got a list)"),
    ('"text"', "not a JSON object (got text)"),
    (note("book.BTC-PERPETUAL.100ms", {}), "unknown channel 'book.BTC-PERPETUAL.100ms'"),
    (note("ticker.BTC-PERPETUAL", {}), "unknown channel 'ticker.BTC-PERPETUAL'"),
    (index("sol_usd", 150.0, ms()), "deribit_price_index.sol_usd: unknown index 'sol_usd' (known: btc_usd, eth_usd)"),
    (note("deribit_price_index.btc_usd", {"index_name": "eth_usd", "price": 1.0, "timestamp": ms()}),
     "deribit_price_index.btc_usd: field index_name: 'eth_usd' is not the channel's 'btc_usd'"),
    (index("btc_usd", -5, ms()), "deribit_price_index.btc_usd: field price: must be positive, got -5"),
    (index("btc_usd", 0, ms()), "deribit_price_index.btc_usd: field price: must be positive, got 0"),
    ('{"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "deribit_price_index.btc_usd", '
     '"data": {"index_name": "btc_usd", "price": NaN, "timestamp": 1767348000000}}}',
     "deribit_price_index.btc_usd: field price: not a finite number: nan"),
    (index("btc_usd", "90000", ms()), "deribit_price_index.btc_usd: field price: not a number: '90000'"),
    (index("btc_usd", 10 ** 400, ms()), "deribit_price_index.btc_usd: field price: not a finite number: 1000"),
    (note("deribit_price_index.btc_usd", [1]), "deribit_price_index.btc_usd: field data: not an object (got a list)"),
    (trade(iso(), "a", OPTION, "x"), "trade: field quantity: not a number: 'x'"),
    (trade(iso(), "a", OPTION, True), "trade: field quantity: not a number: True"),
    (trade(iso(), "a", OPTION, None), "trade: field quantity: missing"),
    (trade(iso(), "a", "BTC-32MAR26-1-C", 1), "trade: field instrument: malformed Deribit name 'BTC-32MAR26-1-C': "
                                              "no such date"),
    (trade(iso(), "a", "DOGE-PERPETUAL", 1), "trade: field instrument: unknown underlying 'DOGE'"),
    (trade(iso(), "a", "12-34", 1), "trade: field instrument: malformed Deribit name '12-34'"),
    (trade(iso(), None, OPTION, 1), "trade: field account: missing"),
    (trade(iso(), "  ", OPTION, 1), "trade: field account: missing"),
    (trade(iso(), ["a"], OPTION, 1), "trade: field account: must be text, got ['a']"),
    (trade("yesterday", "a", OPTION, 1), "trade: field timestamp: not an ISO 8601 time or milliseconds since the "
                                         "epoch: 'yesterday'"),
    (trade(MS0 // 1000, "a", OPTION, 1), "trade: field timestamp: 1767348000 milliseconds since the epoch is "
                                         "before 2000 (seconds?"),
    ('{"type": "mark"}', "mark: field timestamp: missing"),
    (json.dumps({"type": "mark", "timestamp": 1e300}), "mark: field timestamp: timestamp out of range: 1e+300"),
    (json.dumps({"type": "fill", "timestamp": ms()}), "unknown type 'fill' (expected 'trade' or 'mark')"),
    (json.dumps({"jsonrpc": "2.0", "method": "heartbeat"}), "unknown method 'heartbeat' (expected 'subscription')"),
    (json.dumps({"jsonrpc": "2.0", "id": 1, "result": []}), 'neither a Deribit notification ("method") nor a trade'),
    (ticker("BTC-27MAR26-ABC-C", ms(), mark_iv=45, underlying_price=1.0),
     "ticker.BTC-27MAR26-ABC-C.100ms: field instrument_name: malformed Deribit name 'BTC-27MAR26-ABC-C'"),
    (note(f"ticker.{OPTION}.100ms", {"instrument_name": "BTC-PERPETUAL", "timestamp": ms(), "mark_price": 1.0}),
     f"ticker.{OPTION}.100ms: field instrument_name: 'BTC-PERPETUAL' is not the channel's '{OPTION}'"),
    (ticker(OPTION, ms(), underlying_price=91000.0), f"ticker.{OPTION}.100ms: field mark_iv: missing"),
    (ticker(OPTION, ms(), mark_iv="45", underlying_price=91000.0),
     f"ticker.{OPTION}.100ms: field mark_iv: not a number: '45'"),
    (ticker(OPTION, ms(), mark_iv=45.0), f"ticker.{OPTION}.100ms: field underlying_price: missing"),
    (ticker("BTC-PERPETUAL", ms(), index_price=9.0), "ticker.BTC-PERPETUAL.100ms: field mark_price: missing"),
    (ticker("BTC-PERPETUAL", ms(), mark_price=1.0, index_price=-1.0),
     "ticker.BTC-PERPETUAL.100ms: field index_price: must be positive, got -1.0"),
    (ticker("BTC", ms(), mark_price=1.0), "ticker.BTC.100ms: field instrument_name: 'BTC' is an index, not a "
                                          "contract with a ticker"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m[:40] for _, m in BAD])
def test_parse_line_refuses_garbage_with_one_line_naming_it(text, message):
    with pytest.raises(FeedLineError) as info:
        parse_line(text, 7)
    assert isinstance(info.value, ValueError) and info.value.line == 7
    assert str(info.value).startswith(f"line 7: {message}")
    assert "\n" not in str(info.value)


def test_each_garbage_line_gives_one_notice_and_the_stream_goes_on():
    garbage = ["{not json", "[1, 2]", note("book.BTC-PERPETUAL.100ms", {"bids": []}), index("xrp_usd", 1.0, ms()),
               trade(iso(), "a", OPTION, "x"), trade(iso(), "a", "BTC-27MAR26-100000-X", 1)]
    lines = [index("btc_usd", 90000.0, ms())]
    for i, bad in enumerate(garbage):
        lines += [bad, index("btc_usd", 90000.0 + i, ms(i + 1))]
    out = list(read_feed(lines))
    notices = [o for o in out if isinstance(o, FeedNotice)]
    events = [o for o in out if isinstance(o, FeedEvent)]
    assert [n.line for n in notices] == [2, 4, 6, 8, 10, 12]
    assert [n.message for n in notices][:5] == [
        "line 2: not JSON", "line 4: not a JSON object (got a list)",
        "line 6: unknown channel 'book.BTC-PERPETUAL.100ms'",
        "line 8: deribit_price_index.xrp_usd: unknown index 'xrp_usd' (known: btc_usd, eth_usd)",
        "line 10: trade: field quantity: not a number: 'x'"]
    assert notices[5].message.startswith("line 12: trade: field instrument: malformed Deribit name "
                                         "'BTC-27MAR26-100000-X'")
    assert all(str(n) == n.message and "\n" not in n.message for n in notices)
    assert [e.line for e in events] == [1, 3, 5, 7, 9, 11, 13]
    assert [e.price for e in events] == [90000.0] + [90000.0 + i for i in range(6)]


def test_out_of_order_lines_are_skipped_with_a_notice():
    lines = [mark(iso(300)), mark(iso(0)), mark(iso(300)), "", "{bad", mark(ms(299)), mark(ms(301)),
             mark("2026-01-02T10:04:59+00:00")]
    out = list(read_feed(lines, start_line=10))
    assert [(type(o).__name__, o.line) for o in out] == [
        ("FeedEvent", 10), ("FeedNotice", 11), ("FeedEvent", 12), ("FeedNotice", 14), ("FeedNotice", 15),
        ("FeedEvent", 16), ("FeedNotice", 17)]
    assert out[1].message == ("line 11: timestamp 2026-01-02T10:00:00+00:00 is before the previous line's "
                              "2026-01-02T10:05:00+00:00 (out of order)")  # an equal time (line 12) is in order
    assert out[4].message == ("line 15: timestamp 2026-01-02T10:04:59+00:00 is before line 12's "
                              "2026-01-02T10:05:00+00:00 (out of order)")  # compared with the last good line
    assert out[6].message.startswith("line 17: timestamp 2026-01-02T10:04:59+00:00 is before the previous line's "
                                     "2026-01-02T10:05:01+00:00")


def test_read_feed_reads_one_line_at_a_time():
    pulled = []

    def endless():  # a tail -f that never ends
        for i in itertools.count():
            pulled.append(i)
            yield "\n" if i == 0 else mark(ms(i)) + "\n"

    feed = read_feed(endless())
    first = next(feed)
    assert isinstance(first, FeedEvent) and first.line == 2 and pulled == [0, 1]  # nothing read ahead
    assert [e.line for e in itertools.islice(feed, 3)] == [3, 4, 5] and pulled == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- the recorder


async def _aiter(messages):
    for m in messages:
        await asyncio.sleep(0)
        yield m


def test_the_recorder_writes_each_notification_as_one_line_and_stops_at_the_end(capsys):
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": ["deribit_price_index.btc_usd"]})
    multi_line = json.dumps(json.loads(ticker(OPTION, ms(2), mark_iv=45.5, underlying_price=91000.0)), indent=1)
    notes = [index("btc_usd", 90123.5, ms(0)), index("eth_usd", 3000.0, ms(1)).encode()]
    messages = [answer, notes[0], json.dumps({"jsonrpc": "2.0", "method": "heartbeat"}), notes[1], multi_line,
                "garbage", json.dumps({"jsonrpc": "2.0", "id": 2, "error": {"code": 1, "message": "no"}})]
    out = io.StringIO()
    stats = asyncio.run(recorder.record(_aiter(messages), out))
    assert (stats.written, stats.skipped) == (3, 4)
    lines = out.getvalue().splitlines()
    assert lines[:2] == [notes[0], notes[1].decode()]  # exactly as received
    assert json.loads(lines[2]) == json.loads(multi_line)  # a multi-line message becomes one line
    events = list(read_feed(lines))
    assert [e.kind for e in events] == ["index", "index", "ticker"] and events[2].mark_iv == pytest.approx(0.455)
    err = capsys.readouterr().err.splitlines()
    assert err == ["pmjax feed record: subscribed to 1 channels",
                   'pmjax feed record: Deribit answered with an error: {"code": 1, "message": "no"}']


def test_channels_and_instruments_to_record(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"accounts": [
        {"account": "a", "positions": [{"instrument": OPTION, "quantity": -1},
                                       {"instrument": "BTC-PERPETUAL", "quantity": 2}]},
        {"account": "b", "positions": [{"instrument": "ETH-27MAR26", "quantity": 1},
                                       {"instrument": OPTION, "quantity": 1}]}]}))
    names = recorder.instruments_to_record(str(accounts), " eth-perpetual, ,BTC-PERPETUAL,BTC")
    assert names == [OPTION, "BTC-PERPETUAL", "ETH-27MAR26", "ETH-PERPETUAL"]  # once each, spot has no ticker
    assert recorder.channels(names) == ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd",
                                        f"ticker.{OPTION}.100ms", "ticker.BTC-PERPETUAL.100ms",
                                        "ticker.ETH-27MAR26.100ms", "ticker.ETH-PERPETUAL.100ms"]
    request = json.loads(recorder.subscribe_message(recorder.channels([])))
    assert request == {"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                       "params": {"channels": ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd"]}}


def test_without_websockets_record_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "websockets", None)  # import websockets -> ImportError
    out = tmp_path / "feed.jsonl"
    assert recorder.main(["record", "--out", str(out), "--instruments", OPTION]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install websockets" in err
    assert not out.exists()


class _FakeConnection:
    def __init__(self, messages):
        self.messages, self.sent, self.url = messages, [], None

    async def send(self, text):
        self.sent.append(text)

    def __aiter__(self):
        return self.messages.__aiter__()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def _fake_websockets(monkeypatch, messages) -> _FakeConnection:
    conn = _FakeConnection(messages)
    exceptions = types.ModuleType("websockets.exceptions")
    exceptions.WebSocketException = type("WebSocketException", (Exception,), {})
    module = types.ModuleType("websockets")
    module.exceptions = exceptions

    def connect(url, **kwargs):
        conn.url = url
        return conn

    module.connect = connect
    monkeypatch.setitem(sys.modules, "websockets", module)
    monkeypatch.setitem(sys.modules, "websockets.exceptions", exceptions)
    return conn


def test_record_command_on_a_fake_connection(monkeypatch, capsys, tmp_path):
    notes = [index("btc_usd", 90000.0, ms(0)), ticker(OPTION, ms(1), mark_iv=45.5, underlying_price=91000.0)]
    conn = _fake_websockets(monkeypatch, _aiter(notes))
    out = tmp_path / "feed.jsonl"
    out.write_text(mark(ms(-1)) + "\n")  # it appends
    assert recorder.main(["record", "--out", str(out), "--instruments", OPTION]) == 0
    assert conn.url == recorder.WS_URL
    assert [json.loads(s)["params"]["channels"] for s in conn.sent] == [recorder.channels([OPTION])]
    assert out.read_text().splitlines() == [mark(ms(-1))] + notes
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"pmjax feed record: done: 2 messages written to {out} (0 other messages skipped)"


def test_record_command_stops_after_seconds_and_on_ctrl_c(monkeypatch, capsys, tmp_path):
    async def endless():
        for i in itertools.count():
            await asyncio.sleep(0.01)
            yield index("btc_usd", 90000.0, ms(i))

    _fake_websockets(monkeypatch, endless())
    out = tmp_path / "feed.jsonl"
    assert recorder.main(["record", "--out", str(out), "--seconds", "0.3"]) == 0
    n = len(out.read_text().splitlines())
    assert n >= 1 and capsys.readouterr().err.splitlines()[-1].startswith(f"pmjax feed record: done: {n} message")

    async def interrupted():
        yield index("btc_usd", 90000.0, ms(0))
        yield index("btc_usd", 90001.0, ms(1))
        raise KeyboardInterrupt

    _fake_websockets(monkeypatch, interrupted())
    assert recorder.main(["record", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == n + 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"pmjax feed record: interrupted: 2 messages written to {out} (0 other messages skipped)")


def test_record_command_refuses_bad_arguments_with_one_line(monkeypatch, capsys, tmp_path):
    _fake_websockets(monkeypatch, _aiter([]))
    out = tmp_path / "feed.jsonl"
    for args in (["--instruments", "BTC-NOPE"], ["--accounts", str(tmp_path / "missing.yaml")],
                 ["--seconds", "0"]):
        assert recorder.main(["record", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pmjax feed record: "), err
    assert not out.exists()


def test_the_recorder_module_imports_neither_jax_nor_websockets():
    code = ("import sys, pmjax.feed, pmjax.io.feed; "
            "print(sorted(m for m in ('jax', 'websockets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
