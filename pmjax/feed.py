"""Record Deribit's public feed as the streaming monitor's input (SPEC section 8).

    python -m pmjax.feed record --out feed.jsonl [--accounts ACCOUNTS] [--instruments NAME,...] [--seconds N]

Subscribes, on Deribit's public websocket (``WS_URL``, JSON-RPC ``public/subscribe``), to both price indexes
(``deribit_price_index.btc_usd``, ``deribit_price_index.eth_usd``) and to ``ticker.<instrument>.100ms`` of
every contract the accounts hold (``pmjax.io.accounts.load_accounts``; spot holdings have no ticker) and of
``--instruments``, and appends every notification to ``--out`` (``-``: stdout), one JSON object per line,
exactly as received, flushing each line: ``pmjax monitor ACCOUNTS --follow FILE`` (or ``-`` on a pipe)
reads it as it grows. Other messages (the subscription's answer, heartbeats) are not written; an error
answer is reported on stderr.

It needs the optional ``websockets`` package (``pip install websockets``), imported only when recording.
It ends after ``--seconds`` (if given), when Deribit closes the connection, or on Ctrl-C, each time with a
one-line summary on stderr. Exit status: 0, 1 when the connection failed or broke, 2 for bad arguments or
a missing ``websockets``.

``record(messages, out)`` is the message loop on any async iterable of message strings (tests feed it a fake
connection). Importing this module imports neither JAX nor ``websockets``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterable, Iterable

WS_URL = "wss://www.deribit.com/ws/api/v2"
INDEX_CHANNELS: tuple[str, ...] = ("deribit_price_index.btc_usd", "deribit_price_index.eth_usd")
TICKER_INTERVAL = "100ms"
PROG = "pmjax feed record"


@dataclasses.dataclass
class RecordStats:
    """What ``record`` did so far (it updates the object as it goes, so an interrupted run can report)."""

    written: int = 0  # notifications written
    skipped: int = 0  # other messages (subscription answers, heartbeats, non-JSON)


def channels(instruments: Iterable[str]) -> list[str]:
    """The channels to subscribe to: both indexes, then one ``ticker.<name>.100ms`` per instrument."""
    return list(INDEX_CHANNELS) + [f"ticker.{name}.{TICKER_INTERVAL}" for name in dict.fromkeys(instruments)]


def subscribe_message(chans: list[str], request_id: int = 1) -> str:
    """The JSON-RPC ``public/subscribe`` request for ``chans``."""
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "public/subscribe",
                       "params": {"channels": chans}})


def instruments_to_record(accounts: str | None, names: str | None) -> list[str]:
    """Deribit names of the contracts to follow: those the accounts hold (not spot), then ``names``
    (comma-separated), each once, in that order. ``InputError`` for a bad file or name."""
    from pmjax.core.instruments import parse_instrument  # no JAX, but keep module import light
    from pmjax.io.accounts import load_accounts

    out: list[str] = []
    if accounts:
        for portfolio in load_accounts(accounts):
            out += [p.instrument.name for p in portfolio.positions if p.instrument.kind != "spot"]
    for name in (names or "").split(","):
        if name.strip():
            inst = parse_instrument(name.strip(), source="--instruments")
            if inst.kind != "spot":
                out.append(inst.name)
    return list(dict.fromkeys(out))


async def record(messages: AsyncIterable[str | bytes], out, stats: RecordStats | None = None) -> RecordStats:
    """Append each subscription notification of ``messages`` to the text file ``out``, one line each, as
    received (a raw line break inside the JSON, which can only be whitespace, becomes a space), flushing each
    line; count the rest as skipped (an error answer is reported on stderr). Ends when ``messages`` does."""
    stats = RecordStats() if stats is None else stats
    async for message in messages:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or obj.get("method") != "subscription":
            stats.skipped += 1
            _report_answer(obj)
            continue
        line = text.strip()
        if "\n" in line or "\r" in line:
            line = line.replace("\r", " ").replace("\n", " ")
        out.write(line + "\n")
        out.flush()
        stats.written += 1
    return stats


def _report_answer(obj) -> None:
    """One stderr line for a JSON-RPC answer: the channels subscribed, or the error."""
    if not isinstance(obj, dict):
        return
    if obj.get("error") is not None:
        print(f"{PROG}: Deribit answered with an error: {json.dumps(obj['error'])}", file=sys.stderr)
    elif isinstance(obj.get("result"), list):
        print(f"{PROG}: subscribed to {len(obj['result'])} channels", file=sys.stderr)


async def _session(websockets, url: str, chans: list[str], out, stats: RecordStats, seconds: float | None):
    """Connect, subscribe and record until the connection ends or ``seconds`` pass."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(subscribe_message(chans))
        try:
            await asyncio.wait_for(record(ws, out, stats), seconds)
        except asyncio.TimeoutError:
            pass


def _summary(stats: RecordStats, where: str, how: str) -> str:
    s = "" if stats.written == 1 else "s"
    return f"{PROG}: {how}: {stats.written} message{s} written to {where} ({stats.skipped} other messages skipped)"


def record_command(args: argparse.Namespace) -> int:
    """``record``: check websockets and the arguments, then record until done, Ctrl-C or a broken link."""
    try:
        import websockets
        import websockets.exceptions
    except ImportError:
        print(f"{PROG}: needs the websockets package: pip install websockets", file=sys.stderr)
        return 2
    from pmjax.core.errors import InputError

    if args.seconds is not None and not args.seconds > 0:
        print(f"{PROG}: --seconds must be positive, got {args.seconds:g}", file=sys.stderr)
        return 2
    try:
        chans = channels(instruments_to_record(args.accounts, args.instruments))
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    where = "stdout" if args.out == "-" else args.out
    try:
        out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    except OSError as e:
        print(f"{PROG}: cannot open {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    stats, rc, how = RecordStats(), 0, "done"
    print(f"{PROG}: {len(chans)} channels from {args.url} -> {where}", file=sys.stderr)
    try:
        asyncio.run(_session(websockets, args.url, chans, out, stats, args.seconds))
    except KeyboardInterrupt:
        how = "interrupted"
    except (OSError, websockets.exceptions.WebSocketException) as e:
        rc, how = 1, f"connection failed or broke ({type(e).__name__}: {e})"
    finally:
        if out is not sys.stdout:
            out.close()
    print(_summary(stats, where, how), file=sys.stderr)
    return rc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pmjax.feed", description="Record Deribit's public feed as "
                                "the streaming monitor's JSON-lines input (SPEC section 8).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="subscribe to the indexes and tickers and append each notification")
    r.add_argument("--out", required=True, help="JSON-lines file to append to (- for stdout)")
    r.add_argument("--accounts", help="accounts (directory or file) whose contracts to follow")
    r.add_argument("--instruments", help="more contracts to follow: Deribit names, comma-separated")
    r.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    r.add_argument("--url", default=WS_URL, help=f"websocket URL (default {WS_URL})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "record":
        return record_command(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
