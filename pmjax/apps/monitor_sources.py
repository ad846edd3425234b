"""The monitor's replay sources: a directory of Deribit chains, a comma list of markets, or a spot path applied to a
market (sticky strike, ``market_at``), and the settlements an expiry settles at (``pmjax.apps.monitor``)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os

from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, expiry_datetime
from pmjax.core.market import Market
from pmjax.core.validate import positive_number
from pmjax.io.documents import read_document
from pmjax.io.market import BUNDLED_MARKETS, load_market


def _is_chain(path: str) -> bool:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    return "instrument_name" in header


def market_at(base: Market, as_of: dt.datetime, spots: dict[str, float], *, source: str | None = None) -> Market:
    """``base`` moved to ``as_of`` with new index prices: every forward of an underlying scales with its
    spot, smiles stay fixed in strike (sticky strike), expiries before ``as_of`` drop out. A new market that
    shares ``base``'s unchanged parts (smiles, listing, correlation), which neither is meant to mutate."""
    for u in spots:
        base.underlying(u)  # InputError naming an underlying the market lacks
    underlyings = {}
    for u, um in base.underlyings.items():
        spot, forwards = um.spot, um.forwards
        if u in spots:
            factor = spots[u] / um.spot
            spot, forwards = spots[u], {e: v * factor for e, v in um.forwards.items()}
        underlyings[u] = dataclasses.replace(um, spot=spot, forwards={e: v for e, v in forwards.items() if e >= as_of},
                                             smiles={e: v for e, v in um.smiles.items() if e >= as_of})
    return dataclasses.replace(base, as_of=as_of, underlyings=underlyings, notices=[],
                               source=source or f"{base.source} at {as_of.isoformat()}")


def read_spot_path(path: str) -> list[tuple[dt.datetime, dict[str, float]]]:
    """A spot path: CSV ``timestamp,BTC,ETH`` (any of the underlyings; an empty cell keeps the last
    price) or YAML/JSON (a list, or ``path:`` list, of ``{timestamp, BTC, ETH}``). Timestamps increase."""
    if path.lower().endswith(".csv"):
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as e:
            raise InputError(f"cannot read file: {e.strerror}", source=path) from None
        if rows and "timestamp" not in rows[0]:
            raise InputError("a spot path CSV needs a timestamp column and one column per underlying "
                             f"({', '.join(UNDERLYINGS)})", source=path, field="header")
    else:
        doc = read_document(path)
        rows = doc.get("path") if isinstance(doc, dict) else doc
        if not isinstance(rows, list):
            raise InputError("a spot path must be a list (or path: list) of {timestamp, BTC, ETH}", source=path)
    if not rows:
        raise InputError("empty spot path", source=path)
    out, last = [], None
    for i, row in enumerate(rows):
        where = f"row {i + 1}"
        if not isinstance(row, dict):
            raise InputError("each step must be a mapping {timestamp, BTC, ETH}", source=path, field=where)
        ts = expiry_datetime(row.get("timestamp"), source=path, field=f"{where}.timestamp")
        if last is not None and ts < last:
            raise InputError(f"timestamps must not decrease ({ts.isoformat()} after {last.isoformat()})",
                             source=path, field=f"{where}.timestamp")
        last = ts
        spots = {}
        for k, v in row.items():
            if k == "timestamp" or v is None or v == "":
                continue
            u = str(k).upper()
            if u not in UNDERLYINGS:
                raise InputError(f"unknown column {k!r} (use timestamp, {', '.join(UNDERLYINGS)})", source=path,
                                 field=where)
            spots[u] = positive_number(v, source=path, field=f"{where}.{k}")  # CSV cells are text
        out.append((ts, spots))
    return out


#: a spot path may start this much before its chain's as_of (paths are stamped to the second or minute);
#: such steps are taken at the chain's as_of
PATH_CLOCK_SLACK = dt.timedelta(minutes=1)


def replay_markets(source: str, market: str | None = None) -> list[Market]:
    """The markets of a replay, in time order. ``source``: a directory of Deribit chain CSVs (name order),
    a comma-separated list of markets (bundled names or files), a single market, or a spot path (CSV
    ``timestamp,BTC,ETH`` or YAML) applied to ``market`` (default the bundled default market)."""
    kind = _replay_kind(source)
    if kind == "directory":
        files = sorted(f for f in os.listdir(source) if f.lower().endswith(".csv"))
        if not files:
            raise InputError("no Deribit chain CSVs in directory", source=source)
        markets = [load_market(os.path.join(source, f)) for f in files]
    elif kind == "list":
        markets = [load_market(s.strip()) for s in source.split(",") if s.strip()]
    elif kind == "chain":
        markets = [load_market(source)]
    else:
        base = load_market(market)
        path = read_spot_path(source)
        if path[0][0] < base.as_of - PATH_CLOCK_SLACK:
            raise InputError(f"the path starts at {path[0][0].isoformat()}, before the market's as_of "
                             f"{base.as_of.isoformat()}", source=source, field="row 1.timestamp")
        markets, spots = [], {}
        for i, (ts, s) in enumerate(path):
            spots = {**spots, **s}
            markets.append(market_at(base, max(ts, base.as_of), spots,
                                     source=f"{base.source} + {os.path.basename(source)} step {i}"))
    for prev, m in zip(markets, markets[1:]):
        if m.as_of < prev.as_of:
            raise InputError(f"markets must be in time order: {m.as_of.isoformat()} comes after "
                             f"{prev.as_of.isoformat()}", source=m.source, field="as_of")
    return markets


def _replay_kind(source: str) -> str:
    """directory, list (of markets), chain (one chain CSV) or path (a spot path)."""
    if os.path.isdir(source):
        return "directory"
    if "," in source or source in BUNDLED_MARKETS:
        return "list"
    if not os.path.exists(source):
        raise InputError(f"no such file or directory (or bundled market: {', '.join(BUNDLED_MARKETS)})",
                         source=source)
    return "chain" if source.lower().endswith(".csv") and _is_chain(source) else "path"


def read_settlements(doc, source: str) -> dict[str, dict[dt.datetime, float]]:
    """``{BTC: {2026-01-30: 84000.0, ...}, ETH: {...}}`` (expiry -> index; a date is 08:00 UTC) checked."""
    if not isinstance(doc, dict):
        raise InputError("must be a mapping {underlying: {expiry: index}}", source=source, field="settlements")
    out = {}
    for u, prices in doc.items():
        name = str(u).upper()
        if name not in UNDERLYINGS:
            raise InputError(f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=source,
                             field="settlements")
        if not isinstance(prices, dict):
            raise InputError("must be a mapping {expiry: index}", source=source, field=f"settlements.{u}")
        out[name] = {expiry_datetime(e, source=source, field=f"settlements.{u}"):
                     positive_number(v, source=source, field=f"settlements.{u}.{e}") for e, v in prices.items()}
    return out


def replay_settlement(source: str, settlements: str | None = None) -> dict:
    """The ``Monitor`` keywords for a replay's expiries: ``interpolate_expiry`` on a spot path, and
    ``settlements`` from the file ``settlements`` (a ``settlements:`` key or the mapping itself) merged over
    a ``settlements:`` key of a YAML/JSON spot path."""
    path = _replay_kind(source) == "path"
    prices: dict = {}
    if path and not source.lower().endswith(".csv"):
        doc = read_document(source)
        if isinstance(doc, dict) and doc.get("settlements") is not None:
            prices = read_settlements(doc["settlements"], source)
    if settlements is not None:
        doc = read_document(settlements)
        doc = doc.get("settlements", doc) if isinstance(doc, dict) else doc
        for u, by_expiry in read_settlements(doc, settlements).items():
            prices[u] = {**prices.get(u, {}), **by_expiry}
    return {"settlements": prices, "interpolate_expiry": path}
