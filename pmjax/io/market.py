"""Loading markets: YAML/JSON market files, Deribit option-chain CSVs and the bundled chains (SPEC section 2).

Vol surface: a smile per expiry, linear in log-moneyness log(K/F) between quoted strikes and flat
beyond the wings; between expiries linear in total variance at the same log-moneyness; flat in vol
before the first and after the last smile. With no smiles, the flat ``atm`` level applies.
Forwards: the listed forward of that expiry; between listed expiries (and between today and the
first) the carry log(F/S) interpolates linearly in time; beyond the last listed, or when none are
listed, F = S exp(rate T) if a rate is given (rate defaults to 0 when no forwards are listed).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
from importlib import resources

import numpy as np

from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, expiry_datetime, parse_instrument
from pmjax.core.market import Market, Smile, UnderlyingMarket
from pmjax.core.validate import finite_number, positive_number
from pmjax.io.names import DEFAULT_MARKET  # noqa: F401  (re-exported)

BUNDLED_MARKETS = {
    "deribit-20260102": "deribit_chain_20260102T091809Z.csv",
    "deribit-20260206": "deribit_chain_20260206T043012Z.csv",
}


def _as_of(value, source) -> dt.datetime:
    if value is None:
        raise InputError("missing as_of", source=source, field="as_of")
    return expiry_datetime(value if not isinstance(value, dt.date) or isinstance(value, dt.datetime)
                           else dt.datetime(value.year, value.month, value.day), source=source, field="as_of")


def _mapping(value, source: str, field: str) -> dict:
    """``value`` if it is a mapping, {} if absent (None); else an InputError naming ``field``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"must be a mapping, got {type(value).__name__} {value!r:.60}", source=source, field=field)
    return value


def market_from_dict(doc, *, source: str) -> Market:
    if not isinstance(doc, dict):
        raise InputError("a market must be a mapping with as_of and underlyings", source=source)
    as_of = _as_of(doc.get("as_of"), source)
    unds = doc.get("underlyings")
    if not isinstance(unds, dict) or not unds:
        raise InputError("missing underlyings", source=source, field="underlyings")
    out = {}
    for name, d in unds.items():
        u = str(name).upper()
        f = f"underlyings.{name}"
        if u not in UNDERLYINGS:
            raise InputError(f"unknown underlying {name!r} (known: {', '.join(UNDERLYINGS)})", source=source, field=f)
        if u in out:
            raise InputError(f"underlying {u} is given twice", source=source, field=f)
        if not isinstance(d, dict):
            raise InputError("must be a mapping with spot", source=source, field=f)
        spot = positive_number(d.get("spot"), source=source, field=f"{f}.spot")
        forwards = {}
        for e, v in _mapping(d.get("forwards"), source, f"{f}.forwards").items():
            exp = expiry_datetime(e, source=source, field=f"{f}.forwards")
            if exp < as_of:
                raise InputError(f"forward expiry {exp:%Y-%m-%d} is before as_of", source=source, field=f"{f}.forwards")
            if exp in forwards:
                raise InputError(f"expiry {exp:%Y-%m-%d %H:%M} is given twice", source=source, field=f"{f}.forwards")
            forwards[exp] = positive_number(v, source=source, field=f"{f}.forwards.{e}")
        rate = d.get("rate")
        rate = None if rate is None else finite_number(rate, source=source, field=f"{f}.rate")
        vol = d.get("vol") or {}
        if not isinstance(vol, dict):
            vol = {"atm": vol}
        atm = vol.get("atm")
        atm = None if atm is None else positive_number(atm, source=source, field=f"{f}.vol.atm")
        smiles = {}
        for e, s in _mapping(vol.get("smiles"), source, f"{f}.vol.smiles").items():
            fs = f"{f}.vol.smiles.{e}"
            exp = expiry_datetime(e, source=source, field=fs)
            if exp < as_of:
                raise InputError(f"smile expiry {exp:%Y-%m-%d %H:%M} UTC is before as_of {as_of:%Y-%m-%d %H:%M} UTC",
                                 source=source, field=fs)
            if exp in smiles:
                raise InputError(f"expiry {exp:%Y-%m-%d %H:%M} is given twice", source=source, field=fs)
            if not isinstance(s, dict) or "strikes" not in s or "vols" not in s:
                raise InputError("a smile needs strikes and vols", source=source, field=fs)
            for key in ("strikes", "vols"):
                if not isinstance(s[key], (list, tuple)):
                    raise InputError(f"must be a list of numbers, got {s[key]!r}", source=source, field=f"{fs}.{key}")
            ks = [positive_number(k, source=source, field=f"{fs}.strikes") for k in s["strikes"]]
            vs = [positive_number(v, source=source, field=f"{fs}.vols") for v in s["vols"]]
            if len(ks) != len(vs) or not ks:
                raise InputError("strikes and vols must be non-empty and of equal length", source=source, field=fs)
            by_k: dict[float, float] = {}
            for k, v in zip(ks, vs):
                if k in by_k and by_k[k] != v:
                    raise InputError(f"strike {k:g} is quoted twice with different vols ({by_k[k]:g} and {v:g})",
                                     source=source, field=fs)
                by_k[k] = v
            strikes = sorted(by_k)
            smiles[exp] = Smile(np.asarray(strikes), np.asarray([by_k[k] for k in strikes]))
        out[u] = UnderlyingMarket(spot, forwards, rate, atm, smiles)
    corr = {}
    for a, row in _mapping(doc.get("correlation"), source, "correlation").items():
        for b, rho in _mapping(row, source, f"correlation.{a}").items():
            r = finite_number(rho, source=source, field=f"correlation.{a}.{b}")
            if not -1.0 <= r <= 1.0:
                raise InputError(f"correlation must be in [-1, 1], got {rho!r}", source=source,
                                 field=f"correlation.{a}.{b}")
            corr[(str(a).upper(), str(b).upper())] = r
    return Market(as_of, out, corr, source)


_CHAIN_COLUMNS = ("instrument_name", "strike", "expiry_datetime", "futures_price", "implied_volatility",
                  "index_price", "timestamp")


#: the older layout, a dump of Deribit's public/ticker API: expiration_timestamp and timestamp in ms since
#: the epoch, underlying_price = the forward of the option's expiry (its future or synthetic SYN. index),
#: mark_iv in percent
_API_COLUMNS = ("instrument_name", "strike", "expiration_timestamp", "underlying_price", "mark_iv", "index_price",
                "timestamp")


def _ms_iso(value: str) -> str:
    try:
        return dt.datetime.fromtimestamp(float(value) / 1000.0, dt.timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _from_api_layout(r: dict) -> dict:
    """A row of the API layout in the columns of ``_CHAIN_COLUMNS``."""
    try:
        iv = str(float(r["mark_iv"]) / 100.0)
    except (TypeError, ValueError):
        iv = ""
    return dict(r, expiry_datetime=_ms_iso(r["expiration_timestamp"]), futures_price=r["underlying_price"],
                implied_volatility=iv, timestamp=_ms_iso(r["timestamp"]))


def read_chain_rows(path: str) -> tuple[list[dict], list[str]]:
    """Rows of a Deribit option-chain CSV that carry every field a market needs, and why others were skipped."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", source=path) from None
    except csv.Error as e:
        raise InputError(f"not valid CSV: {e}", source=path) from None
    if not rows:
        raise InputError("empty option chain", source=path)
    if all(c in rows[0] for c in _API_COLUMNS) and "implied_volatility" not in rows[0]:
        rows = [_from_api_layout(r) for r in rows]
    missing = [c for c in _CHAIN_COLUMNS if c not in rows[0]]
    if missing:
        raise InputError(f"not a Deribit option-chain CSV: missing column(s) {', '.join(missing)} (expected the "
                         f"columns {','.join(_CHAIN_COLUMNS)}, or Deribit's API ticker layout "
                         f"{','.join(_API_COLUMNS)} with mark_iv in percent)", source=path, field="header")
    good, skipped = [], {}
    for i, r in enumerate(rows):
        why = None
        for c in ("strike", "futures_price", "implied_volatility", "index_price"):
            try:
                x = float(r[c])
            except (TypeError, ValueError):
                why = f"empty or non-numeric {c}"
                break
            if not math.isfinite(x) or x <= 0:
                why = f"non-positive {c}"
                break
        if why is None:
            try:
                inst = parse_instrument(r["instrument_name"], source=path, field=f"row {i + 2}")
                r = dict(r, _instrument=inst)
            except InputError:
                why = "unparsable instrument_name"
            else:
                if not inst.is_option:
                    why = "instrument_name is not an option"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
        else:
            good.append(r)
    notices = [f"{path}: skipped {n} row(s): {why}" for why, n in skipped.items()]
    if not good:
        raise InputError("no usable rows in option chain", source=path)
    return good, notices


def market_from_chain(path: str, *, source: str | None = None) -> Market:
    """A market from a Deribit option chain: spot = index_price, forwards = futures_price, smiles = IVs."""
    src = source or path
    rows, notices = read_chain_rows(path)
    as_of = expiry_datetime(rows[0]["timestamp"], source=src, field="timestamp")
    live = [r for r in rows if r["_instrument"].expiry >= as_of]
    if len(live) < len(rows):  # a chain may carry a just-expired expiry: drop it, as a YAML market may not list it
        notices.append(f"{path}: skipped {len(rows) - len(live)} row(s): expired before the chain's timestamp "
                       f"{as_of:%Y-%m-%d %H:%M:%S} UTC")
    if not live:
        raise InputError("every option in the chain has expired before its timestamp", source=path)
    rows = live
    acc: dict[str, dict] = {}
    for r in rows:
        inst = r["_instrument"]
        a = acc.setdefault(inst.underlying, {"spot": [], "fwd": {}, "iv": {}})
        a["spot"].append(float(r["index_price"]))
        e = inst.expiry
        a["fwd"].setdefault(e, []).append(float(r["futures_price"]))
        a["iv"].setdefault(e, {}).setdefault(inst.strike, []).append(float(r["implied_volatility"]))
    unds, listed = {}, {}
    for u, a in acc.items():
        smiles = {}
        for e, by_k in a["iv"].items():
            ks = np.array(sorted(by_k))
            # a call and a put at one strike carry the same mark IV on Deribit; average any difference
            smiles[e] = Smile(ks, np.array([np.mean(by_k[k]) for k in ks]))
        unds[u] = UnderlyingMarket(float(np.median(a["spot"])), {e: float(np.median(v)) for e, v in a["fwd"].items()},
                                   None, None, smiles)
    for r in rows:  # the chain's coin-settled options (a linear USDC row is not valued, nor listed, here)
        inst = r["_instrument"]
        if inst.settlement == "inverse":
            listed.setdefault(inst.underlying, {}).setdefault(inst.expiry, set()).add(inst.strike)
    listed = {u: {e: tuple(sorted(ks)) for e, ks in by_e.items()} for u, by_e in listed.items()}
    return Market(as_of, unds, {}, src, notices, listed)


def bundled_path(name: str) -> str:
    return str(resources.files("pmjax") / "data" / BUNDLED_MARKETS[name])


def load_market(spec: str | None = None) -> Market:
    """Load a market: a bundled name (``deribit-20260102``, ``deribit-20260206``), a YAML/JSON file or a chain CSV."""
    if spec is None:
        spec = DEFAULT_MARKET
    if spec in BUNDLED_MARKETS:
        return market_from_chain(bundled_path(spec), source=spec)
    if spec.lower().endswith(".csv"):
        return market_from_chain(spec)
    if not os.path.exists(spec):
        raise InputError(f"no such file (bundled markets: {', '.join(BUNDLED_MARKETS)})", source=spec)
    from pmjax.io.documents import read_document

    return market_from_dict(read_document(spec), source=spec)
