"""``monitor_update`` bench row: warm latency of ``pmjax monitor --follow`` from one index tick to every account's
event line written (re-margin by SPAN and the Deribit grid, equity, the JSON lines), p50 and p99 over a run of
ticks, for many 20-position accounts and for one 100-position account. The baseline is the replay path
(``Monitor.update`` of a market built by ``market_at``, no lines written) timed on the same accounts, the same run."""

from __future__ import annotations

import datetime as dt
import os
import time

import jax.numpy as jnp
import numpy as np

from pmjax.apps.follow import Follower
from pmjax.apps.monitor import Monitor, market_at
from pmjax.bench.whatif_latency import synthetic_account
from pmjax.io.config import load_config
from pmjax.io.feed import FeedEvent
from pmjax.io.market import load_market


def _ticks(follower: Follower, n: int, spot0: float, start: dt.datetime) -> list[float]:
    """Seconds per tick: an index event through ``Follower.step`` (interval 0: every tick re-margins)."""
    rng = np.random.default_rng(1)
    times = []
    for i in range(n):
        ev = FeedEvent(line=i + 1, time=start + dt.timedelta(seconds=i + 1), kind="index", underlying="BTC",
                       price=float(spot0 * (1.0 + 0.002 * rng.standard_normal())))
        t = time.perf_counter()
        follower.step(ev)
        times.append(time.perf_counter() - t)
    return times


def monitor_latency(n_accounts: int, n_positions: int, ticks: int, *, dtype=jnp.float64) -> dict:
    """p50, p99 (s) of tick -> all event lines written, and the replay's ``Monitor.update`` median, warm."""
    market, config = load_market(), load_config()
    accounts = [synthetic_account(market, n_positions, seed=s) for s in range(n_accounts)]
    for i, a in enumerate(accounts):
        a.account = f"acct-{i}"
    # the lines go where a follower's stdout would: a file (the null device, so that the run does not keep them)
    out = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  (closed below)
    err = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    lines = [0]

    def write(chunk):  # as ``pmjax monitor --follow`` writes: the JSON lines, then the margin-call lines
        out.write("".join(f"{line}\n" for line in chunk.lines()))
        out.flush()
        err.write("".join(line + "\n" for line in chunk.alerts()))
        lines[0] += len(chunk)

    follower = Follower(accounts, market, config, interval_ms=1e-6, on_records=write, on_notice=lambda s: None,
                        monitor_kwargs=dict(methods=("span", "deribit"), dtype=dtype))
    spot0 = market.spot("BTC")
    _ticks(follower, 3, spot0, market.as_of)  # compile and warm
    times = np.asarray(_ticks(follower, ticks, spot0, market.as_of + dt.timedelta(minutes=1)))
    out.close()
    err.close()
    mon = Monitor(accounts, market, config, methods=("span", "deribit"), dtype=dtype)
    steps = [market_at(market, market.as_of + dt.timedelta(seconds=s), {"BTC": spot0 * (1 + 0.001 * s)})
             for s in range(ticks + 3)]
    mon.update(steps[0])
    base = []
    for m in steps[3:]:
        t = time.perf_counter()
        mon.update(m)
        base.append(time.perf_counter() - t)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "replay_median": float(np.median(base)), "ticks": ticks, "accounts": n_accounts,
            "positions": n_positions, "lines": lines[0]}
