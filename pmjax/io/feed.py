"""The streaming monitor's input (SPEC section 8): JSON lines in, ``FeedEvent`` or ``FeedNotice`` out.

Each line is one of:

- a Deribit JSON-RPC notification (``"method": "subscription"``) of channel
  ``deribit_price_index.btc_usd`` / ``deribit_price_index.eth_usd`` (kind ``index``: ``underlying``,
  ``price``) or ``ticker.<instrument>.<interval>``, interval ``100ms``, ``agg2`` or ``raw`` (kind ``ticker``:
  ``instrument``, ``underlying``, ``mark_iv`` as a fraction (Deribit sends percent), ``underlying_price``
  (the forward of the option's expiry; for a future or perpetual its ``underlying_price``, else its
  ``mark_price``), ``index_price`` when given). An option ticker needs ``mark_iv`` and ``underlying_price``;
- ``{"type": "trade", "timestamp", "account", "instrument", "quantity"}`` (kind ``trade``; quantity in
  coins, signed; a numeric account id becomes text);
- ``{"type": "mark", "timestamp"}`` (kind ``mark``: re-margin now).

Timestamps, everywhere: milliseconds since the epoch (a JSON number, from 2000 on: a smaller one is taken
for seconds and refused) or ISO 8601 text (a trailing ``Z`` allowed; no zone = UTC). Prices must be
positive; numbers must be JSON numbers and finite.

``parse_line`` raises ``FeedLineError`` ("line 7: not JSON") for a line it cannot use; ``read_feed`` turns
those into ``FeedNotice`` and goes on, skips blank lines, and skips (with a notice) a line whose time is
before the last good line's. It reads one line at a time, so it follows an endless stream.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import numbers
from collections.abc import Iterable, Iterator

from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument, parse_instrument
from pmjax.core.validate import number

#: the kinds of event, in SPEC order
FEED_KINDS: tuple[str, ...] = ("index", "ticker", "trade", "mark")
#: Deribit index name -> underlying (``btc_usd`` -> ``BTC``)
INDEX_NAMES: dict[str, str] = {f"{u.lower()}_usd": u for u in UNDERLYINGS}
INDEX_CHANNEL = "deribit_price_index"
#: the intervals of Deribit's ``ticker.<instrument>.<interval>`` channels
TICKER_INTERVALS: tuple[str, ...] = ("100ms", "agg2", "raw")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS_FROM = 946_684_800_000  # 2000-01-01T00:00:00Z in milliseconds: smaller numbers are seconds, not ms


@dataclasses.dataclass(frozen=True)
class FeedEvent:
    """One usable feed line. Fields a kind does not carry are None (see the module docstring)."""

    line: int  # 1-based line number in the feed
    time: dt.datetime  # UTC, tz-aware
    kind: str  # index | ticker | trade | mark
    underlying: str | None = None  # index: from index_name; ticker, trade: the instrument's
    price: float | None = None  # index: the index price (USD)
    instrument: Instrument | None = None  # ticker, trade
    mark_iv: float | None = None  # ticker of an option: implied vol as a fraction (45.5 % -> 0.455)
    underlying_price: float | None = None  # ticker: the forward of that expiry / the future's price
    index_price: float | None = None  # ticker, when given
    account: str | None = None  # trade
    quantity: float | None = None  # trade: coins, signed
    raw: str = ""  # the line's text (surrounding whitespace removed), for the store


@dataclasses.dataclass(frozen=True)
class FeedNotice:
    """A line that was skipped: ``message`` is one readable line starting ``line N: ``."""

    line: int
    message: str

    def __str__(self) -> str:
        return self.message


class FeedLineError(ValueError):
    """A feed line that cannot be used; the message names the line (``line 7: not JSON``)."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


class _Reject(Exception):
    """Why a line is refused, without its line number (``parse_line`` adds it)."""


# ---------------------------------------------------------------- fields


def _json_type(value) -> str:
    kinds = ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "text"),
             (numbers.Real, "a number"), (type(None), "null"))
    return next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)


def _field(d: dict, key: str, what: str):
    if d.get(key) is None:
        raise _Reject(f"{what}: field {key}: missing")
    return d[key]


def _number(d: dict, key: str, what: str, *, positive: bool = False) -> float:
    """``d[key]``: a finite JSON number (positive with ``positive``)."""
    value = _field(d, key, what)
    try:
        return number(value, source=None, field=None, low=0.0 if positive else -float("inf"),
                      low_open=positive, strings=False)
    except InputError as e:
        raise _Reject(f"{what}: field {key}: {e}") from None
    except OverflowError:  # an integer too large for a float
        raise _Reject(f"{what}: field {key}: not a finite number: {value!r}") from None


def _time(d: dict, key: str, what: str) -> dt.datetime:
    """``d[key]`` as a UTC datetime: milliseconds since the epoch or ISO 8601 text (no zone = UTC)."""
    value = _field(d, key, what)
    bad = f"{what}: field {key}: not an ISO 8601 time or milliseconds since the epoch: {value!r}"
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Reject(bad) from None
        return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Reject(bad)
    try:
        if value < _MS_FROM:
            raise _Reject(f"{what}: field {key}: {value!r} milliseconds since the epoch is before 2000 "
                          "(seconds? Deribit timestamps are milliseconds)")
        return _EPOCH + dt.timedelta(milliseconds=value)
    except (OverflowError, ValueError):  # inf, nan, beyond year 9999
        raise _Reject(f"{what}: field {key}: timestamp out of range: {value!r}") from None


def _instrument(d: dict, key: str, what: str) -> Instrument:
    name = _field(d, key, what)
    try:
        return parse_instrument(name, field=key)
    except InputError as e:
        raise _Reject(f"{what}: {e}") from None


# ---------------------------------------------------------------- one line


def parse_line(text: str | bytes, line: int) -> FeedEvent:
    """One feed line -> ``FeedEvent``; ``FeedLineError`` ("line N: why") when it cannot be used."""
    try:
        return _parse(text, line)
    except _Reject as e:
        raise FeedLineError(f"line {line}: {e}", line=line) from None


def _parse(text: str | bytes, line: int) -> FeedEvent:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("not UTF-8 text") from None
    raw = text.strip()
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Reject("not JSON") from None
    if not isinstance(obj, dict):
        raise _Reject(f"not a JSON object (got {_json_type(obj)})")
    if "method" in obj:
        return _notification(obj, line, raw)
    if "type" in obj:
        return _typed(obj, line, raw)
    raise _Reject('neither a Deribit notification ("method") nor a trade or mark ("type")')


def _notification(obj: dict, line: int, raw: str) -> FeedEvent:
    method = obj["method"]
    if method != "subscription":
        raise _Reject(f"unknown method {method!r} (expected 'subscription')")
    params = obj.get("params")
    if not isinstance(params, dict):
        raise _Reject(f"subscription: field params: not an object (got {_json_type(params)})")
    channel = params.get("channel")
    if not isinstance(channel, str):
        raise _Reject(f"subscription: field params.channel: not text (got {_json_type(channel)})")
    parts = channel.split(".")
    is_index = len(parts) == 2 and parts[0] == INDEX_CHANNEL
    is_ticker = len(parts) == 3 and parts[0] == "ticker" and parts[2] in TICKER_INTERVALS
    if not (is_index or is_ticker):
        raise _Reject(f"unknown channel {channel!r}")
    data = params.get("data")
    if not isinstance(data, dict):
        raise _Reject(f"{channel}: field data: not an object (got {_json_type(data)})")
    if is_index:
        return _index(parts[1], channel, data, line, raw)
    return _ticker(parts[1], channel, data, line, raw)


def _index(name: str, channel: str, data: dict, line: int, raw: str) -> FeedEvent:
    known = ", ".join(INDEX_NAMES)
    if name not in INDEX_NAMES:
        raise _Reject(f"{channel}: unknown index {name!r} (known: {known})")
    if data.get("index_name", name) != name:
        raise _Reject(f"{channel}: field index_name: {data['index_name']!r} is not the channel's {name!r}")
    return FeedEvent(line, _time(data, "timestamp", channel), "index", underlying=INDEX_NAMES[name],
                     price=_number(data, "price", channel, positive=True), raw=raw)


def _ticker(name: str, channel: str, data: dict, line: int, raw: str) -> FeedEvent:
    data = dict(data)
    data.setdefault("instrument_name", name)
    inst = _instrument(data, "instrument_name", channel)
    if data["instrument_name"] != name:
        raise _Reject(f"{channel}: field instrument_name: {data['instrument_name']!r} is not the channel's "
                      f"{name!r}")
    if inst.kind == "spot":
        raise _Reject(f"{channel}: field instrument_name: {name!r} is an index, not a contract with a ticker")
    time = _time(data, "timestamp", channel)
    if inst.is_option:
        mark_iv = _number(data, "mark_iv", channel, positive=True) / 100.0
        forward = _number(data, "underlying_price", channel, positive=True)
    else:
        mark_iv = None
        key = "underlying_price" if data.get("underlying_price") is not None else "mark_price"
        forward = _number(data, key, channel, positive=True)
    index_price = None
    if data.get("index_price") is not None:
        index_price = _number(data, "index_price", channel, positive=True)
    return FeedEvent(line, time, "ticker", underlying=inst.underlying, instrument=inst, mark_iv=mark_iv,
                     underlying_price=forward, index_price=index_price, raw=raw)


def _typed(obj: dict, line: int, raw: str) -> FeedEvent:
    kind = obj["type"]
    if kind == "mark":
        return FeedEvent(line, _time(obj, "timestamp", "mark"), "mark", raw=raw)
    if kind != "trade":
        raise _Reject(f"unknown type {kind!r} (expected 'trade' or 'mark')")
    time = _time(obj, "timestamp", "trade")
    account = obj.get("account")
    if isinstance(account, int) and not isinstance(account, bool):
        account = str(account)
    if account is None or (isinstance(account, str) and not account.strip()):
        raise _Reject("trade: field account: missing")
    if not isinstance(account, str):
        raise _Reject(f"trade: field account: must be text, got {account!r}")
    inst = _instrument(obj, "instrument", "trade")
    return FeedEvent(line, time, "trade", underlying=inst.underlying, instrument=inst, account=account.strip(),
                     quantity=_number(obj, "quantity", "trade"), raw=raw)


# ---------------------------------------------------------------- the stream


def read_feed(lines: Iterable[str | bytes], *, start_line: int = 1) -> Iterator[FeedEvent | FeedNotice]:
    """Events of a feed, in order, one line at a time (it never reads ahead, so ``lines`` may be endless:
    ``sys.stdin``, a ``tail -f``). Blank lines are skipped; a bad line gives a ``FeedNotice`` and is skipped;
    so is a line whose time is before the last good line's (out of order). ``start_line``: the first line's
    number."""
    last: FeedEvent | None = None
    for n, text in enumerate(lines, start_line):
        if not text.strip():
            continue
        try:
            event = parse_line(text, n)
        except FeedLineError as e:
            yield FeedNotice(n, str(e))
            continue
        if last is not None and event.time < last.time:
            before = "the previous line's" if last.line == n - 1 else f"line {last.line}'s"
            yield FeedNotice(n, f"line {n}: timestamp {event.time.isoformat()} is before {before} "
                                f"{last.time.isoformat()} (out of order)")
            continue
        last = event
        yield event
