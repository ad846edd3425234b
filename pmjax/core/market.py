"""Market data as the kernel needs it: spots, forwards by expiry, implied-vol smiles, rates and
correlation at one ``as_of`` time. Loading lives in ``pmjax.io.market``. Formulas (forward and smile
interpolation): docs/methodology.md section 2."""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import math

import numpy as np

from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument, deribit_date
from pmjax.core.units import SECONDS_PER_YEAR


def _strike(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else f"{k:g}"


@dataclasses.dataclass
class Smile:
    strikes: np.ndarray  # USD, increasing
    vols: np.ndarray  # decimals


@dataclasses.dataclass
class UnderlyingMarket:
    spot: float
    forwards: dict[dt.datetime, float] = dataclasses.field(default_factory=dict)
    rate: float | None = None
    atm: float | None = None
    smiles: dict[dt.datetime, Smile] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Market:
    """A market snapshot. Lookups raise ``InputError`` naming what is missing."""

    as_of: dt.datetime
    underlyings: dict[str, UnderlyingMarket]
    correlation: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    source: str = "market"
    notices: list[str] = dataclasses.field(default_factory=list)
    #: the options a Deribit chain lists: underlying -> expiry -> strikes (increasing) of its coin-settled
    #: (inverse) options; None when the market is not a chain (YAML/JSON), where any contract may be valued
    listed: dict[str, dict[dt.datetime, tuple[float, ...]]] | None = None

    def years_to(self, expiry: dt.datetime) -> float:
        """(expiry - as_of) in days / 365."""
        return (expiry - self.as_of).total_seconds() / SECONDS_PER_YEAR

    def underlying(self, u: str) -> UnderlyingMarket:
        if u not in self.underlyings:
            raise InputError(f"no market data for underlying {u} (market has {', '.join(self.underlyings)})",
                             source=self.source, field=f"underlyings.{u}")
        return self.underlyings[u]

    def spot(self, u: str) -> float:
        return self.underlying(u).spot

    def listed_strikes(self, u: str, max_log_moneyness: float = math.inf) -> list[tuple[dt.datetime, float]]:
        """(expiry, strike) of every smile point of ``u`` not yet expired, with |ln(K/F)| below the bound."""
        m = self.underlying(u)
        out = []
        for e, smile in sorted(m.smiles.items()):
            if self.years_to(e) <= 0:
                continue
            f = self.forward(u, e)
            out += [(e, float(k)) for k in smile.strikes if abs(math.log(k / f)) < max_log_moneyness]
        return out

    def unlisted(self, inst: Instrument) -> str | None:
        """Why ``inst`` is not a contract of this market's chain, naming the nearest listed expiries or
        strikes; None when it is listed or the chain cannot say (no chain, not an option, a linear (USDC)
        option or an underlying the chain does not carry: a chain lists coin-settled options only)."""
        by_expiry = (self.listed or {}).get(inst.underlying)
        if not by_expiry or not inst.is_option or inst.settlement != "inverse":
            return None
        head = f"{inst.name} is not listed in the chain {self.source}"
        tail = "; the explicit form {underlying, type, expiry, strike, right} values an unlisted contract"
        if inst.expiry not in by_expiry:
            live = sorted(e for e in by_expiry if e >= self.as_of) or sorted(by_expiry)
            j = bisect.bisect_left(live, inst.expiry)
            near = ", ".join(deribit_date(e) for e in live[max(j - 1, 0):j + 1])
            return f"{head}: no {inst.underlying} options expire on {deribit_date(inst.expiry)} (nearest listed " \
                   f"expiries: {near}){tail}"
        ks = by_expiry[inst.expiry]
        if inst.strike in ks:
            return None
        j = bisect.bisect_left(ks, inst.strike)
        near = ", ".join(_strike(k) for k in ks[max(j - 1, 0):j + 1])
        return f"{head}: no strike {_strike(inst.strike)} on {deribit_date(inst.expiry)} (nearest listed strikes: " \
               f"{near}){tail}"

    def forward(self, u: str, expiry: dt.datetime | None) -> float:
        """Forward of ``u`` for ``expiry`` (None: the spot, as for perpetuals and spot)."""
        m = self.underlying(u)
        if expiry is None:
            return m.spot
        if expiry in m.forwards:
            return m.forwards[expiry]
        t = self.years_to(expiry)
        if m.forwards:
            ts = sorted(m.forwards)
            if expiry < ts[-1]:
                j = bisect.bisect_left(ts, expiry)
                t0, c0 = (0.0, 0.0) if j == 0 else (self.years_to(ts[j - 1]), math.log(m.forwards[ts[j - 1]] / m.spot))
                t1, c1 = self.years_to(ts[j]), math.log(m.forwards[ts[j]] / m.spot)
                return m.spot * math.exp(c0 + (c1 - c0) * (t - t0) / (t1 - t0))
            if m.rate is None:
                raise InputError(
                    f"no forward for {u} expiry {expiry:%Y-%m-%d} (listed up to {ts[-1]:%Y-%m-%d}; give it in "
                    f"forwards or give a rate)", source=self.source, field=f"underlyings.{u}.forwards")
        return m.spot * math.exp((m.rate or 0.0) * t)

    def vol(self, u: str, expiry: dt.datetime, strike: float) -> float:
        """Implied vol (decimal) of ``u`` at ``expiry`` and ``strike``."""
        m = self.underlying(u)
        if not m.smiles:
            if m.atm is None:
                raise InputError(f"no implied vol for {u} (give vol.atm or vol.smiles)",
                                 source=self.source, field=f"underlyings.{u}.vol")
            return m.atm
        t = max(self.years_to(expiry), 0.0)
        k = math.log(strike / self.forward(u, expiry))
        ts = sorted(m.smiles)

        def smile_vol(e):
            s = m.smiles[e]
            ks = np.log(s.strikes / self.forward(u, e))
            return float(np.interp(k, ks, s.vols))  # np.interp is flat beyond the ends

        if expiry <= ts[0]:
            return smile_vol(ts[0])
        if expiry >= ts[-1]:
            return smile_vol(ts[-1])
        j = bisect.bisect_left(ts, expiry)
        t0, t1 = self.years_to(ts[j - 1]), self.years_to(ts[j])
        w0, w1 = smile_vol(ts[j - 1]) ** 2 * t0, smile_vol(ts[j]) ** 2 * t1
        return math.sqrt((w0 + (w1 - w0) * (t - t0) / (t1 - t0)) / t)

    def vols(self, u: str, expiry: dt.datetime, strikes: np.ndarray) -> np.ndarray:
        """``vol(u, expiry, k)`` for every k of ``strikes`` at once (the same arithmetic, element by element, so
        the same bits; for refreshing many contracts of one expiry, as the monitor does on every tick)."""
        m = self.underlying(u)
        strikes = np.asarray(strikes, float)
        if not m.smiles:
            return np.array([self.vol(u, expiry, k) for k in strikes])
        t = max(self.years_to(expiry), 0.0)
        f = self.forward(u, expiry)
        k = np.array([math.log(x / f) for x in strikes])
        ts = sorted(m.smiles)

        def smile_vol(e):
            s = m.smiles[e]
            return np.interp(k, np.log(s.strikes / self.forward(u, e)), s.vols)

        if expiry <= ts[0]:
            return smile_vol(ts[0]).astype(float)
        if expiry >= ts[-1]:
            return smile_vol(ts[-1]).astype(float)
        j = bisect.bisect_left(ts, expiry)
        t0, t1 = self.years_to(ts[j - 1]), self.years_to(ts[j])
        # Python's x ** 2 (libm pow), as ``vol`` squares: numpy's square can differ in the last bit
        square = lambda v: np.array([x ** 2 for x in v.tolist()])  # noqa: E731
        w0, w1 = square(smile_vol(ts[j - 1])) * t0, square(smile_vol(ts[j])) * t1
        return np.sqrt((w0 + (w1 - w0) * (t - t0) / (t1 - t0)) / t)

    def correlation_of(self, a: str, b: str) -> float | None:
        return 1.0 if a == b else self.correlation.get((a, b), self.correlation.get((b, a)))


# ---------------------------------------------------------------- loading
