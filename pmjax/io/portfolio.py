"""Portfolio files (YAML, JSON, CSV), ``--what-if`` trade strings and collateral mappings."""

from __future__ import annotations

import csv
import os

from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument, explicit_instrument, parse_instrument
from pmjax.core.portfolio import Portfolio, Position, make_portfolio
from pmjax.core.validate import finite_number
from pmjax.io.documents import read_document


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


#: the keys a position may have: a Deribit name, or the explicit form (SPEC section 2)
NAMED_KEYS = ("instrument", "quantity")
EXPLICIT_KEYS = ("underlying", "type", "expiry", "strike", "right", "settlement", "quantity")


def _position(entry, i: int, source: str) -> Position:
    where = f"positions[{i}]"
    if not isinstance(entry, dict):
        raise InputError(f"each position must be a mapping, got {entry!r}", source=source, field=where)
    expected = NAMED_KEYS if "instrument" in entry else EXPLICIT_KEYS
    unknown = [str(k) for k in entry if k not in expected]
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)} (a position has {', '.join(NAMED_KEYS)}, or "
                         f"{', '.join(EXPLICIT_KEYS)})", source=source, field=f"{where}.{unknown[0]}")
    if entry.get("quantity") is None or (isinstance(entry["quantity"], str) and not entry["quantity"].strip()):
        raise InputError("missing", source=source, field=f"{where}.quantity")
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
    from pmjax.io.portfolio import read_collateral  # rules imports this module

    collateral = read_collateral(doc.get("collateral") or {}, where=source)
    return make_portfolio(positions, account=account, margin_currency=doc.get("margin_currency", "USD"),
                          source=source, collateral=collateral, origins=origins)


def read_csv_rows(path: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV file; a byte-order mark and CRLF line ends are stripped, and the header's
    names are stripped and lower-cased (a spreadsheet's ``Instrument,Quantity`` reads as instrument,quantity)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"not valid CSV: {e}", source=path) from None
    lines = [r for r in lines if any(c.strip() for c in r)]  # blank lines (a trailing CRLF) carry nothing
    if not lines:
        return [], []
    header = [c.strip().lower() for c in lines[0]]
    return header, [dict(zip(header, r)) for r in lines[1:]]


def _csv_portfolio(path: str) -> Portfolio:
    header, rows = read_csv_rows(path)
    if header and not set(NAMED_KEYS) <= set(header):
        found = ", ".join(repr(c) for c in header)
        raise InputError(f"CSV portfolio needs the columns instrument,quantity (any case); found {found}",
                         source=path, field="header")
    extra = [c for c in header if c not in NAMED_KEYS]
    positions = [_position({k: r.get(k) for k in NAMED_KEYS}, i, path) for i, r in enumerate(rows)]
    name = os.path.splitext(os.path.basename(path))[0]
    p = make_portfolio(positions, account=name, source=path,
                       origins=_origins(positions, path, ["instrument"] * len(positions)))
    if extra:
        p.notices.append(f"{path}: ignored column(s) {', '.join(repr(c) for c in extra)} (a CSV portfolio "
                         "reads instrument,quantity)")
    return p


def load_portfolio(path: str) -> Portfolio:
    """Load a portfolio file (``.yaml``/``.yml``/``.json``/``.csv``)."""
    if os.path.isdir(path):
        raise InputError("is a directory, not a portfolio file", source=path)
    if path.lower().endswith(".csv"):
        return _csv_portfolio(path)
    return portfolio_from_dict(read_document(path), source=path)


COLLATERAL_CURRENCIES = ("USD", "USDC") + UNDERLYINGS


def read_collateral(source, *, where: str | None = None) -> dict[str, float]:
    """The optional ``collateral:`` mapping ({USD: 50000, BTC: 1}) of a portfolio document.

    ``source``: a portfolio file path (CSV files carry none), a parsed document (dict), or a mapping
    of collateral itself (when ``where`` names it). Amounts are in each currency's own units.
    """
    src = where
    if isinstance(source, (str, os.PathLike)):
        from pmjax.io.documents import read_document

        path = str(source)
        if path.lower().endswith(".csv"):
            return {}
        doc, src = read_document(path), path
        coll = doc.get("collateral") if isinstance(doc, dict) else None
    elif isinstance(source, dict) and where is None:
        coll = source.get("collateral")
    else:
        coll = source
    if coll is None:
        return {}
    if not isinstance(coll, dict):
        raise InputError("collateral must be a mapping of currency to amount, e.g. {USD: 50000, BTC: 1}",
                         source=src, field="collateral")
    out: dict[str, float] = {}
    for k, v in coll.items():
        cur = str(k).upper()
        if cur not in COLLATERAL_CURRENCIES:
            raise InputError(f"unknown collateral currency {k!r} (known: {', '.join(COLLATERAL_CURRENCIES)})",
                             source=src, field=f"collateral.{k}")
        cur = "USD" if cur == "USDC" else cur
        out[cur] = out.get(cur, 0.0) + finite_number(v, source=src, field=f"collateral.{k}")
    return out


def _position_entry(p: Position, market) -> dict:
    """A position by its Deribit name, or in the explicit form when ``market``'s chain does not list it."""
    inst = p.instrument
    if market is None or market.unlisted(inst) is None:
        return {"instrument": inst.name, "quantity": float(p.quantity)}
    e = inst.expiry
    expiry = e.date().isoformat() if (e.hour, e.minute, e.second, e.microsecond) == (8, 0, 0, 0) else e.isoformat()
    return {"underlying": inst.underlying, "type": inst.kind, "expiry": expiry,
            "strike": float(inst.strike), "right": inst.right, "settlement": inst.settlement,
            "quantity": float(p.quantity)}


def portfolio_document(portfolio: Portfolio, market=None) -> dict:
    """A portfolio as the document ``load_portfolio`` reads back to the same positions (float quantities
    exactly), margin currency and collateral; contracts ``market``'s chain does not list in the explicit form."""
    doc = {"account": portfolio.account, "margin_currency": portfolio.margin_currency}
    if portfolio.collateral:
        doc["collateral"] = dict(portfolio.collateral)
    doc["positions"] = [_position_entry(p, market) for p in portfolio.positions]
    return doc


def write_portfolio(portfolio: Portfolio, path: str, market=None) -> None:
    """Write ``portfolio`` to ``path`` (``.yaml``/``.yml`` or ``.json``; ``portfolio_document``), whole or not
    at all (a temporary file renamed into place)."""
    import json

    import yaml

    ext = os.path.splitext(path)[1].lower()
    if ext not in (".yaml", ".yml", ".json"):
        raise InputError(f"unknown file type {ext!r} for a portfolio (use .yaml, .yml or .json)", source=path)
    doc = portfolio_document(portfolio, market)
    text = json.dumps(doc, indent=1) + "\n" if ext == ".json" else yaml.safe_dump(doc, sort_keys=False)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError("its folder does not exist", source=path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
