"""``pmjax monitor ACCOUNTS --follow FILE|- [--store FILE.sqlite]`` (SPEC section 8): the live loop of the monitor
command. One JSON line per account and re-margin on stdout (flushed), margin calls and liquidation warnings as one
readable line on stderr, notices for skipped lines on stderr, a summary on stderr at the end or on Ctrl-C."""

from __future__ import annotations

import sys

from pmjax.cli.app import dtype_of, notice
from pmjax.core.errors import InputError


def _lines(path: str):
    """The feed's lines as they come (stdin for ``-``; a file is read to its end, not followed)."""
    if path == "-":
        yield from sys.stdin
        return
    try:
        with open(path, encoding="utf-8") as fh:
            yield from fh
    except OSError as e:
        raise InputError(f"cannot read the feed: {e.strerror}", source=path) from None


def follow_command(args):
    from pmjax.apps.follow import Follower
    from pmjax.apps.monitor import monitor_settings
    from pmjax.io.accounts import load_accounts
    from pmjax.io.config import load_config
    from pmjax.io.feed import read_feed
    from pmjax.io.market import load_market

    config = load_config(args.config)
    settings = monitor_settings(config, methods=args.methods, primary=args.primary,
                                liquidation_fraction=args.liquidation_fraction)
    portfolios = load_accounts(args.accounts)
    market = load_market(args.market)
    store = None
    if args.store:
        from pmjax.apps.monitor_store import MarginStore

        store = MarginStore(args.store)

    def on_records(chunk):
        # lines straight from the chunk's columns (pmjax.apps.monitor_records); the store builds the dicts
        sys.stdout.write("".join(f"{line}\n" for line in chunk.lines()))
        sys.stdout.flush()
        for alert in chunk.alerts():
            print(alert, file=sys.stderr)
        if store is not None:
            store.write_records(chunk)

    def on_trade(ev, change):
        if store is not None:
            store.write_trade(ev.time.isoformat(), ev.account, ev.instrument.name, ev.quantity, ev.line)

    follower = Follower(portfolios, market, config, interval_ms=settings.interval_ms, on_records=on_records,
                        on_notice=lambda text: notice(text), on_trade=on_trade,
                        monitor_kwargs=dict(methods=settings.methods, primary=settings.primary,
                                            liquidation_fraction=settings.liquidation_fraction, dtype=dtype_of(args)))
    interrupted = False
    try:
        follower.feed(read_feed(_lines(args.follow)))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if store is not None:
            store.close()
    s = follower.summary
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.events.items())) or "none"
    print(f"pmjax: monitor: followed {sum(s.events.values())} lines ({kinds}), {s.trades} trades, {s.remargins} "
          f"re-margins, {s.notices} lines skipped"
          + (", stopped by Ctrl-C" if interrupted else "") + (f"; last re-margin {s.last}" if s.last else ""),
          file=sys.stderr)
    return None, None
