"""``pmjax monitor ACCOUNTS --replay SOURCE [--market M] [--methods ...] [--out DIR]``

Replays a sequence of markets over many accounts (``pmjax.apps.monitor``): every account's equity and margin
(maintenance and initial) by each method at every step, initial-margin breaches, margin calls (equity
below the primary method's maintenance requirement) and liquidation warnings. With ``--out DIR`` it writes
``DIR/monitor_log.jsonl`` (one JSON record per account per step; the same inputs give the same bytes)
and ``DIR/monitor_equity.png`` (equity against each method's requirement, per account). An expiry settles
at ``--settlements FILE`` (or a spot path's ``settlements:`` key), else on a spot path at the path
interpolated in time, else at the first later market (``settlement_source`` in the log). Timing goes to
stderr only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from pmjax.apps.names import CALL_STATUSES
from pmjax.cli.app import dtype_of, notice
from pmjax.core.errors import InputError
from pmjax.io.names import DEFAULT_MARKET

LOG_NAME = "monitor_log.jsonl"
PLOT_NAME = "monitor_equity.png"


def add_arguments(p):
    p.add_argument("accounts", metavar="ACCOUNTS", nargs="?", default=None,
                   help="a directory of portfolio files, or a multi-account YAML/JSON file (accounts: [...]); "
                        "each account's collateral: {USD: ..., BTC: ...} counts in its equity")
    p.add_argument("--follow", default=None, metavar="FILE|-",
                   help="follow a live feed (SPEC section 8 JSON lines; - for stdin, e.g. tail -f feed.jsonl | "
                        "pmjax monitor accounts/ --follow -): one JSON line per account and re-margin on stdout")
    p.add_argument("--store", default=None, metavar="FILE.sqlite",
                   help="with --follow (or --replay): append every row to this SQLite store (tables margins, "
                        "events, trades; replaying a feed again adds no duplicates)")
    p.add_argument("--history", default=None, metavar="FILE.sqlite",
                   help="plot an account's equity against its requirements from a store (with --account, --out)")
    p.add_argument("--account", default=None, help="with --history: the account to plot")
    p.add_argument("--replay", default=None, metavar="SOURCE",
                   help="the markets in time order: a directory of Deribit chain CSVs, a comma list of markets "
                        "(bundled names or files, e.g. deribit-20260102,deribit-20260206), or a spot path "
                        "(CSV timestamp,BTC,ETH or YAML) applied to --market (sticky strike)")
    p.add_argument("--settlements", default=None, metavar="FILE",
                   help="YAML/JSON settlements: {BTC: {2026-01-30: 84000, ...}, ETH: {...}}: the index an expiry "
                        "(08:00 UTC) settles at; a YAML spot path may carry the same settlements: key. Without "
                        "one an expiry settles on a spot path at the path interpolated linearly in time, on "
                        "chains at the first later market")
    p.add_argument("--market", default=DEFAULT_MARKET,
                   help=f"the chain a spot path moves (default {DEFAULT_MARKET})")
    p.add_argument("--methods", default=None,
                   help="comma-separated: span, deribit, rules, var (default: config monitor.methods)")
    p.add_argument("--primary", default=None, help="the method whose maintenance and initial requirements raise "
                                                   "events (default: config monitor.primary, deribit)")
    p.add_argument("--liquidation-fraction", dest="liquidation_fraction", type=float, default=None,
                   help="liquidation warning when equity < this x maintenance requirement (default: config, 0.8)")
    p.add_argument("--config", default=None, help="config YAML/JSON merged over the defaults in configs/")
    p.add_argument("--out", default=None, metavar="DIR", help=f"write {LOG_NAME} and {PLOT_NAME} there")


def run(args):
    modes = [m for m in ("replay", "follow", "history") if getattr(args, m, None) is not None]
    if len(modes) != 1:
        raise InputError("give one of --replay SOURCE, --follow FILE|- or --history STORE", source="pmjax monitor")
    if modes == ["history"]:
        return run_history(args)
    if args.accounts is None:
        raise InputError("ACCOUNTS (a directory or a multi-account file) is required with --replay and --follow",
                         source="pmjax monitor")
    if modes == ["follow"]:
        return run_follow(args)
    return run_replay(args)


def run_history(args):
    from pmjax.apps.monitor_store import plot_history

    if not args.account:
        raise InputError("--history needs --account ID", source="--account")
    out = args.out or "."
    check_writable(out)
    png = plot_history(args.history, args.account, os.path.join(out, f"history_{args.account}.png"))
    return {"history": args.history, "account": args.account, "plot": png}, f"plot: {png}"


def run_follow(args):
    from pmjax.cli.commands.monitor_follow import follow_command

    return follow_command(args)


def run_replay(args):
    from pmjax.apps.monitor import Monitor, monitor_settings, plot_equity, replay_markets, replay_settlement, write_log
    from pmjax.io.accounts import load_accounts
    from pmjax.io.config import load_config

    config = load_config(args.config)
    settings = monitor_settings(config, methods=args.methods, primary=args.primary,
                                liquidation_fraction=args.liquidation_fraction)
    if args.out:
        check_writable(args.out)  # before the replay: a bad --out fails at once, in one line
    portfolios = load_accounts(args.accounts)
    markets = replay_markets(args.replay, args.market)
    settlement = replay_settlement(args.replay, args.settlements)
    dtype = dtype_of(args)
    if not args.json:
        for n in [n for m in markets for n in m.notices] + [n for p in portfolios for n in p.notices]:
            notice(n)
    t0 = time.perf_counter()
    mon = Monitor(portfolios, markets[0], config, methods=settings.methods, primary=settings.primary,
                  liquidation_fraction=settings.liquidation_fraction, dtype=dtype, **settlement)
    records, times = [], []
    for m in markets:
        t = time.perf_counter()
        records += mon.update(m)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    warm = f", later steps {sum(times[1:]) / (len(times) - 1) * 1e3:.1f} ms each" if len(times) > 1 else ""
    print(f"pmjax: monitor: {len(portfolios)} accounts x {len(markets)} steps in {total:.2f} s "
          f"(first step {times[0]:.2f} s with compilation{warm})", file=sys.stderr)

    if getattr(args, "store", None):
        from pmjax.apps.monitor_store import MarginStore

        with MarginStore(args.store) as store:
            store.write_records(records)
    doc = {"methods": list(settings.methods), "primary": settings.primary,
           "liquidation_fraction": settings.liquidation_fraction, "span_initial_ratio": settings.span_initial_ratio,
           "steps": [{"step": i, "as_of": m.as_of.isoformat(), "market": m.source} for i, m in enumerate(markets)],
           "accounts": _summary(records, portfolios), "records": records}
    if args.out:
        try:
            os.makedirs(args.out, exist_ok=True)
            log_path, plot_path = os.path.join(args.out, LOG_NAME), os.path.join(args.out, PLOT_NAME)
            write_log(records, log_path)
            plot_equity(records, plot_path, settings.methods)
        except OSError as e:
            raise InputError(f"cannot write: {e.strerror}", source=args.out) from None
        doc["log"], doc["plot"] = log_path, plot_path
    return doc, render(doc, settings.methods)


def check_writable(out: str) -> None:
    """Create ``out`` if needed and check that a file can be written there; ``InputError`` otherwise."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise InputError(f"cannot write to the output directory: {e.strerror}", source=f"--out {out}") from None


def _summary(records: list[dict], portfolios) -> list[dict]:
    out = []
    for p in portfolios:
        rs = [r for r in records if r["account"] == p.account]
        calls = [r for r in rs if r["status"] in CALL_STATUSES]
        breaches = [r for r in rs if r["status"] == "initial_breach"]
        first = lambda xs: None if not xs else {"step": xs[0]["step"], "as_of": xs[0]["as_of"]}  # noqa: E731
        out.append({"account": p.account, "currency": p.margin_currency, "equity_start": rs[0]["equity"],
                    "equity_end": rs[-1]["equity"], "status_end": rs[-1]["status"],
                    "first_margin_call": first(calls), "first_initial_breach": first(breaches),
                    "events": sum(len(r["events"]) for r in rs)})
    return out


def render(doc: dict, methods) -> str:
    from pmjax.apps.tables import table

    rows = [[r["step"], r["as_of"][:19], r["account"], r["currency"], r["equity"]]
            + [r["margins"][m]["requirement"] for m in methods] + [r["status"]] for r in doc["records"]]
    head = ["step", "as_of", "account", "ccy", "equity"] + [f"{m} req." for m in methods] + ["status"]
    title = (f"Margin monitor: {len(doc['accounts'])} accounts over {len(doc['steps'])} markets; events by "
             f"{doc['primary']} (req. = maintenance requirement on equity, span: maintenance + NOV; initial breach: "
             f"equity < initial requirement; margin call: equity < req.; liquidation warning: equity < "
             f"{doc['liquidation_fraction']:g} x req.)")
    if len(rows) > 200:  # a long replay: the rows that raised events only
        rows = [row for row, r in zip(rows, doc["records"]) if r["status"] != "ok"]
        title += "; rows with events only"
    parts = [table(rows, head, title=title)]
    if "log" in doc:
        parts.append(f"event log: {doc['log']}\nplot: {doc['plot']}")
    return "\n\n".join(parts)
