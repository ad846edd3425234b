"""Instruments: Deribit names and the explicit form (SPEC section 2)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from pmjax.core.errors import InputError
from pmjax.core.units import EXPIRY_HOUR_UTC
from pmjax.core.validate import positive_number

#: The underlyings pmjax knows, in the fixed order used by every array (index 0 = BTC).
UNDERLYINGS: tuple[str, ...] = ("BTC", "ETH")
KINDS: tuple[str, ...] = ("option", "future", "perpetual", "spot")
SETTLEMENTS: tuple[str, ...] = ("inverse", "linear")

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DATE = r"(\d{1,2})([A-Z]{3})(\d{2})"
_OPTION = re.compile(rf"^([A-Z]+)(_USDC)?-{_DATE}-(\d+(?:D\d+)?)-([CP])$")
_FUTURE = re.compile(rf"^([A-Z]+)(_USDC)?-{_DATE}$")
_PERPETUAL = re.compile(r"^([A-Z]+)(_USDC)?-PERPETUAL$")


@dataclasses.dataclass(frozen=True, order=True)
class Instrument:
    """One tradable contract. Quantities of it are always in coins of ``underlying``."""

    underlying: str
    kind: str  # option | future | perpetual | spot
    settlement: str = "inverse"  # inverse (coin-settled) | linear (USD/USDC-settled)
    expiry: dt.datetime | None = None  # UTC, 08:00 on Deribit
    strike: float | None = None  # USD per coin
    right: str | None = None  # call | put
    #: given by its Deribit name (``parse_instrument``), so a chain market checks that it is listed; the explicit
    #: form and instruments built in code are not checked. Not part of the contract's identity (eq, hash, order).
    named: bool = dataclasses.field(default=False, compare=False, repr=False)

    @property
    def is_option(self) -> bool:
        return self.kind == "option"

    @property
    def name(self) -> str:
        """Deribit-style name (``BTC-27MAR26-100000-C``, ``ETH_USDC-PERPETUAL``, ``BTC``)."""
        if self.kind == "spot":
            return self.underlying
        base = self.underlying + ("_USDC" if self.settlement == "linear" else "")
        if self.kind == "perpetual":
            return f"{base}-PERPETUAL"
        date = deribit_date(self.expiry)
        if self.kind == "future":
            return f"{base}-{date}"
        k = self.strike
        strike = str(int(k)) if float(k).is_integer() else repr(float(k)).replace(".", "d")
        return f"{base}-{date}-{strike}-{'C' if self.right == 'call' else 'P'}"

    def __str__(self) -> str:
        return self.name


def deribit_date(e: dt.datetime) -> str:
    """An expiry as Deribit writes it in names: ``27MAR26``."""
    return f"{e.day}{_MONTHS[e.month - 1]}{e.year % 100:02d}"


def expiry_datetime(value, *, source: str | None = None, field: str = "expiry") -> dt.datetime:
    """Parse an expiry: a date (08:00 UTC that day) or an ISO datetime (UTC if no zone)."""
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day, EXPIRY_HOUR_UTC)
    elif isinstance(value, str):
        s = value.strip()
        try:
            if len(s) == 10:
                d0 = dt.date.fromisoformat(s)
                d = dt.datetime(d0.year, d0.month, d0.day, EXPIRY_HOUR_UTC)
            else:
                d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"not a date or datetime: {value!r}", source=source, field=field) from None
    else:
        raise InputError(f"not a date or datetime: {value!r}", source=source, field=field)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc)


def _underlying(u, *, source, field) -> str:
    if not isinstance(u, str) or u.upper() not in UNDERLYINGS:
        raise InputError(
            f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=source, field=field
        )
    return u.upper()


def _deribit_date(day: str, mon: str, yy: str, name: str, source, field) -> dt.datetime:
    if mon not in _MONTHS:
        raise InputError(f"malformed Deribit name {name!r}: unknown month {mon!r}", source=source, field=field)
    try:
        return dt.datetime(2000 + int(yy), _MONTHS.index(mon) + 1, int(day), EXPIRY_HOUR_UTC, tzinfo=dt.timezone.utc)
    except ValueError:
        raise InputError(f"malformed Deribit name {name!r}: no such date", source=source, field=field) from None


def parse_instrument(name: str, *, source: str | None = None, field: str = "instrument") -> Instrument:
    """Parse a Deribit instrument name (options, dated futures, perpetuals, ``_USDC`` forms, spot)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"instrument name must be text, got {name!r}", source=source, field=field)
    inst = _parse_name(name, source=source, field=field)
    return dataclasses.replace(inst, named=True)


def _parse_name(name: str, *, source: str | None, field: str) -> Instrument:
    s = name.strip().upper()
    if s in UNDERLYINGS:
        return Instrument(s, "spot", "linear")
    if m := _OPTION.match(s):
        u, usdc, day, mon, yy, k, cp = m.groups()
        u = _underlying(u, source=source, field=field)
        strike = float(k.replace("D", "."))
        if strike <= 0:
            raise InputError(f"malformed Deribit name {name!r}: strike must be positive", source=source, field=field)
        return Instrument(u, "option", "linear" if usdc else "inverse",
                          _deribit_date(day, mon, yy, name, source, field), strike, "call" if cp == "C" else "put")
    if m := _FUTURE.match(s):
        u, usdc, day, mon, yy = m.groups()
        u = _underlying(u, source=source, field=field)
        return Instrument(u, "future", "linear" if usdc else "inverse", _deribit_date(day, mon, yy, name, source, field))
    if m := _PERPETUAL.match(s):
        u, usdc = m.groups()
        return Instrument(_underlying(u, source=source, field=field), "perpetual", "linear" if usdc else "inverse")
    head = re.split(r"[-_]", s)[0]
    if re.fullmatch(r"[A-Z]+", head) and head not in UNDERLYINGS:
        raise InputError(f"unknown underlying {head!r} in instrument {name!r} (known: {', '.join(UNDERLYINGS)})",
                         source=source, field=field)
    raise InputError(
        f"malformed Deribit name {name!r} (expected e.g. BTC-27MAR26-100000-C, BTC-27MAR26, BTC-PERPETUAL, "
        "ETH_USDC-PERPETUAL or BTC)", source=source, field=field)


def explicit_instrument(d: dict, *, source: str | None = None, where: str = "position") -> Instrument:
    """Build an instrument from the explicit form ``{underlying, type, expiry, strike, right, settlement}``."""
    f = lambda k: f"{where}.{k}"  # noqa: E731
    u = _underlying(d.get("underlying"), source=source, field=f("underlying"))
    kind = str(d.get("type", "")).lower()
    if kind not in KINDS:
        raise InputError(f"type must be one of {', '.join(KINDS)}, got {d.get('type')!r}", source=source, field=f("type"))
    settlement = str(d.get("settlement", "linear" if kind == "spot" else "inverse")).lower()
    if settlement not in SETTLEMENTS:
        raise InputError(f"settlement must be inverse or linear, got {d.get('settlement')!r}",
                         source=source, field=f("settlement"))
    if kind in ("spot", "perpetual"):
        return Instrument(u, kind, settlement)
    if "expiry" not in d:
        raise InputError(f"a {kind} needs an expiry", source=source, field=f("expiry"))
    expiry = expiry_datetime(d["expiry"], source=source, field=f("expiry"))
    if kind == "future":
        return Instrument(u, kind, settlement, expiry)
    strike = positive_number(d.get("strike"), source=source, field=f("strike"))
    right = str(d.get("right", "")).lower()
    right = {"c": "call", "p": "put"}.get(right, right)
    if right not in ("call", "put"):
        raise InputError(f"right must be call or put, got {d.get('right')!r}", source=source, field=f("right"))
    return Instrument(u, kind, settlement, expiry, strike, right)
