"""The one number validator for inputs and configs: ``InputError`` naming the file and field."""

from __future__ import annotations

import math
import numbers

from pmjax.core.errors import InputError


def _bounds(low, high, low_open, high_open) -> str:
    """Text of the allowed range: ``positive``, ``>= 0``, ``<= 1``, ``in (0, 1]``; '' if unbounded."""
    lo, hi = math.isfinite(low), math.isfinite(high)
    if lo and hi:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if lo:
        return "positive" if low == 0 and low_open else f"{'>' if low_open else '>='} {low:g}"
    if hi:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def number(value, *, source, field, low=-math.inf, high=math.inf, low_open=False, high_open=False,
           integer=False, strings=True):
    """``value`` as a finite float (an int with ``integer``) within [low, high] (ends excluded with
    ``low_open``/``high_open``). Bools are rejected; numeric text is accepted only with ``strings`` (CSV)."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not strings):
        raise InputError(f"not a number: {value!r}", source=source, field=field)
    if not strings and not isinstance(value, numbers.Real):
        raise InputError(f"not a number: {value!r}", source=source, field=field)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {value!r}", source=source, field=field) from None
    if not math.isfinite(x):
        raise InputError(f"not a finite number: {value!r}", source=source, field=field)
    outside = x < low or x > high or (low_open and x == low) or (high_open and x == high)
    if outside or (integer and x != int(x)):
        what = " ".join(filter(None, ["a whole number" if integer else "", _bounds(low, high, low_open, high_open)]))
        raise InputError(f"must be {what}, got {value!r}", source=source, field=field)
    return int(x) if integer else x


def finite_number(value, *, source, field) -> float:
    """A finite float; numeric strings are accepted (CSV), bools and other text are not."""
    return number(value, source=source, field=field)


def positive_number(value, *, source, field, allow_zero: bool = False) -> float:
    """A finite float > 0 (>= 0 with ``allow_zero``); numeric strings accepted, bools rejected."""
    return number(value, source=source, field=field, low=0.0, low_open=not allow_zero)


def config_number(d: dict, key: str, where: str, source, **bounds) -> float:
    """``d[key]`` of a config mapping as a float within ``bounds`` (``number``); ``InputError`` naming ``where.key``
    (or ``key``), also when it is missing."""
    field = f"{where}.{key}" if where else key
    if key not in d:
        raise InputError(f"missing {key}", source=source, field=field)
    return number(d[key], source=source, field=field, **bounds)


def underlying_mapping(section: dict, where: str, source, known: tuple[str, ...]) -> dict:
    """``section['underlyings']`` keyed by upper-case underlying; ``InputError`` naming ``where.underlyings`` when
    it is missing, or the unknown underlying."""
    unds = section.get("underlyings")
    if not isinstance(unds, dict):
        raise InputError(f"missing {where}.underlyings", source=source, field=f"{where}.underlyings")
    unknown = [u for u in unds if str(u).upper() not in known]
    if unknown:
        raise InputError(f"unknown underlying {unknown[0]!r} (known: {', '.join(known)})", source=source,
                         field=f"{where}.underlyings.{unknown[0]}")
    return {str(u).upper(): v for u, v in unds.items()}
