"""Portfolios: an account's positions and its margin currency, read from YAML, JSON or CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable

import yaml

from .errors import InputError
from .instruments import UNDERLYINGS, Instrument, explicit_instrument, finite_number, parse_instrument

MARGIN_CURRENCIES: tuple[str, ...] = ("USD",) + UNDERLYINGS


@dataclasses.dataclass(frozen=True)
class Position:
    instrument: Instrument
    quantity: float  # coins of the underlying; negative = short


@dataclasses.dataclass
class Portfolio:
    """One account. ``notices`` collects what loading changed (merged duplicates)."""

    positions: list[Position]
    account: str = "account"
    margin_currency: str = "USD"
    source: str | None = None
    notices: list[str] = dataclasses.field(default_factory=list)
    collateral: dict[str, float] = dataclasses.field(default_factory=dict)  # currency (USD, BTC, ETH) -> amount
    #: instrument -> (source, field) where it was first given, e.g. (path, "positions[3].instrument"), so that
    #: an error found later (an instrument expired before the market's as_of) names the file and position
    origins: dict[Instrument, tuple[str | None, str]] = dataclasses.field(default_factory=dict)

    def origin(self, instrument: Instrument) -> tuple[str | None, str | None]:
        """(source, field) of ``instrument`` in the input; (source, "positions") when not recorded."""
        return self.origins.get(instrument, (self.source, "positions" if self.source else None))

    @property
    def instruments(self) -> list[Instrument]:
        return [p.instrument for p in self.positions]

    def with_trades(self, trades: Iterable[Position]) -> "Portfolio":
        """A copy with ``trades`` added (merged into existing positions of the same instrument)."""
        return make_portfolio(list(self.positions) + list(trades), account=self.account,
                              margin_currency=self.margin_currency, source=self.source, allow_empty=True,
                              merge_notice=False, collateral=self.collateral, origins=self.origins)


def make_portfolio(positions: list[Position], *, account="account", margin_currency="USD", source=None,
                   allow_empty=False, merge_notice=True, collateral=None, origins=None) -> Portfolio:
    """Merge duplicate instruments (with a notice) and validate the margin currency."""
    mc = str(margin_currency).upper()
    if mc not in MARGIN_CURRENCIES:
        raise InputError(f"margin_currency must be one of {', '.join(MARGIN_CURRENCIES)}, got {margin_currency!r}",
                         source=source, field="margin_currency")
    merged: dict[Instrument, float] = {}
    counts: dict[Instrument, int] = {}
    for p in positions:
        merged[p.instrument] = merged.get(p.instrument, 0.0) + p.quantity
        counts[p.instrument] = counts.get(p.instrument, 0) + 1
    notices = [f"{source or 'portfolio'}: {n} positions in {i.name} merged into one of quantity {merged[i]:g}"
               for i, n in counts.items() if n > 1 and merge_notice]
    if not merged and not allow_empty:
        raise InputError("portfolio has no positions", source=source, field="positions")
    return Portfolio([Position(i, q) for i, q in merged.items()], str(account), mc, source, notices,
                     dict(collateral or {}), dict(origins or {}))


def parse_trades(text: str, *, source: str = "--what-if") -> list[Position]:
    """Parse ``"INSTRUMENT:QTY[,INSTRUMENT:QTY...]"``."""
    trades = []
    for i, item in enumerate(t for t in text.split(",") if t.strip()):
        name, sep, qty = item.rpartition(":")
        if not sep:
            raise InputError(f"trade {item.strip()!r} is not INSTRUMENT:QTY", source=source, field=f"trade {i + 1}")
        trades.append(Position(parse_instrument(name, source=source, field=f"trade {i + 1}"),
                               finite_number(qty, source=source, field=f"trade {i + 1} quantity")))
    if not trades:
        raise InputError("no trades given", source=source)
    return trades


def _position(entry, i: int, source: str) -> Position:
    where = f"positions[{i}]"
    if not isinstance(entry, dict):
        raise InputError(f"each position must be a mapping, got {entry!r}", source=source, field=where)
    if "quantity" not in entry:
        raise InputError("missing quantity", source=source, field=f"{where}.quantity")
    qty = finite_number(entry["quantity"], source=source, field=f"{where}.quantity")
    if "instrument" in entry:
        inst = parse_instrument(entry["instrument"], source=source, field=f"{where}.instrument")
    else:
        inst = explicit_instrument(entry, source=source, where=where)
    return Position(inst, qty)


def _origins(positions: list[Position], source: str, keys: list[str]) -> dict[Instrument, tuple[str, str]]:
    """Where each instrument is first given: (source, "positions[i].<key>")."""
    out: dict[Instrument, tuple[str, str]] = {}
    for i, (p, key) in enumerate(zip(positions, keys)):
        out.setdefault(p.instrument, (source, f"positions[{i}].{key}"))
    return out


def read_document(path: str):
    """Read a YAML or JSON file into Python objects, with one-line errors."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", source=path) from None
    try:
        if ext == ".json":
            return json.loads(text)
        if ext in (".yaml", ".yml"):
            return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        msg = str(e).splitlines()[0]
        raise InputError(f"not valid {ext[1:].upper()}: {msg}", source=path) from None
    raise InputError(f"unknown file type {ext!r} (use .yaml, .yml, .json or .csv)", source=path)


def portfolio_from_dict(doc, *, source: str) -> Portfolio:
    if isinstance(doc, list):
        doc = {"positions": doc}
    if not isinstance(doc, dict):
        raise InputError("a portfolio must be a mapping with 'positions'", source=source)
    entries = doc.get("positions")
    if entries is None:
        raise InputError("missing positions", source=source, field="positions")
    if not isinstance(entries, list):
        raise InputError("positions must be a list", source=source, field="positions")
    positions = [_position(e, i, source) for i, e in enumerate(entries)]
    origins = _origins(positions, source, ["instrument" if "instrument" in e else "expiry" for e in entries])
    account = doc.get("account", os.path.splitext(os.path.basename(source))[0])
    from .rules import read_collateral  # rules imports this module

    collateral = read_collateral(doc.get("collateral") or {}, where=source)
    return make_portfolio(positions, account=account, margin_currency=doc.get("margin_currency", "USD"),
                          source=source, collateral=collateral, origins=origins)


def _read_csv_rows(path: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"not valid CSV: {e}", source=path) from None


def load_portfolio(path: str) -> Portfolio:
    """Load a portfolio file (``.yaml``/``.yml``/``.json``/``.csv``)."""
    if os.path.isdir(path):
        raise InputError("is a directory, not a portfolio file", source=path)
    if path.lower().endswith(".csv"):
        rows = _read_csv_rows(path)
        if rows and not {"instrument", "quantity"} <= set(rows[0]):
            raise InputError("CSV portfolio needs the columns instrument,quantity", source=path, field="header")
        positions = [_position(r, i, path) for i, r in enumerate(rows)]
        name = os.path.splitext(os.path.basename(path))[0]
        return make_portfolio(positions, account=name, source=path,
                              origins=_origins(positions, path, ["instrument"] * len(positions)))
    return portfolio_from_dict(read_document(path), source=path)
