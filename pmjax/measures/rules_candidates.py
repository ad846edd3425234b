"""Strategy candidates for rules margin, generated near-linearly, and the greedy pairing over them.

Legs are grouped once by series (underlying, settlement, expiry) and right and sorted by strike, so each short
leg looks only at its ``neighbours`` nearest partners by strike on each side (verticals, straddles, condor
wings and short calls) instead of every pair: O(n k) candidates (O(n k^3) condors at most) per account,
not O(n^2) (O(n^4) condors). Calendars (one strike, any later expiry) and covers (a few delta-one legs per
underlying) are bounded by the number of expiries and of delta-one legs. Requirements per candidate: the
module doc of ``pmjax.measures.rules`` and docs/methodology.md section 8.3.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections import defaultdict

RIGHTS = ("call", "put")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A strategy built from ``legs`` (leg index, +1 long / -1 short), one coin of each per unit."""

    type: str
    legs: tuple[tuple[int, int], ...]
    initial: float  # USD per unit
    maintenance: float


def make_candidate(type_: str, legs, initial: float, maintenance: float, by_index: dict) -> Candidate:
    """A candidate with its maintenance capped at the legs' standalone maintenance (USD per unit)."""
    standalone_mm = sum(by_index[i].maintenance for i, _ in legs)
    return Candidate(type_, tuple(legs), initial, min(maintenance, standalone_mm))


@functools.lru_cache(maxsize=None)  # a handful of types, asked for every strategy found
def kind_of(type_: str) -> str:
    """The ``strategy_priority`` name of a strategy type (``vertical_call_credit`` -> ``vertical``)."""
    return {"strangle": "straddle"}.get(type_, type_.split("_")[0] if type_ != "iron_condor" else type_)


def series_key(inst) -> tuple:
    """(underlying, settlement, expiry): the legs of a vertical, condor or straddle share it."""
    return inst.underlying, inst.settlement, inst.expiry


class LegIndex:
    """The option legs by (series, right, side), each list sorted by strike; the delta-one legs by underlying."""

    def __init__(self, legs: list):
        self.legs = legs
        self.by_index = {g.index: g for g in legs}
        self.groups: dict[tuple, list] = defaultdict(list)  # (series, right, +1/-1) -> legs by strike
        self.delta_one: dict[str, list] = defaultdict(list)
        for g in legs:
            inst = g.instrument
            if inst.is_option:
                if g.quantity != 0:
                    self.groups[(series_key(inst), inst.right, 1 if g.quantity > 0 else -1)].append(g)
            elif g.quantity != 0:
                self.delta_one[inst.underlying].append(g)
        self.strikes, self._shorts = {}, {}
        self.cover_lists: dict[tuple, list] = {}  # (underlying, right, expiry) -> delta-one legs (``covers``)
        for key, group in self.groups.items():
            group.sort(key=lambda g: (g.instrument.strike, g.index))
            self.strikes[key] = [g.instrument.strike for g in group]

    def shorts(self, right: str) -> list:
        """Short legs of ``right`` in position order."""
        if right not in self._shorts:
            self._shorts[right] = sorted((g for (s, r, side), grp in self.groups.items() if r == right and side < 0
                                          for g in grp), key=lambda g: g.index)
        return self._shorts[right]

    def near(self, series, right: str, side: int, strike: float, k: int, where: str) -> list:
        """The ``k`` legs of (series, right, side) nearest ``strike`` strictly ``above``, strictly ``below``,
        or ``at_or_above`` it."""
        grp, ks = self.groups.get((series, right, side), []), self.strikes.get((series, right, side), [])
        if where == "below":
            hi = bisect.bisect_left(ks, strike)
            return grp[max(0, hi - k):hi]
        lo = bisect.bisect_right(ks, strike) if where == "above" else bisect.bisect_left(ks, strike)
        return grp[lo:lo + k]


def _charge(params) -> float:
    return 1.0 if params.long_option_charge == "premium" else 0.0


def vertical_type(right: str, short_strike: float, long_strike: float) -> tuple[str, bool]:
    """(strategy type, credit?) of a vertical: a credit call spread is short the lower strike."""
    credit = short_strike < long_strike if right == "call" else short_strike > long_strike
    return f"vertical_{right}_{'credit' if credit else 'debit'}", credit


def vertical(s, g, right: str, charge: float, by_index) -> Candidate:
    """Short ``s`` against long ``g``, one right and series: credit the strike width, debit the net debit."""
    ks, kl = s.instrument.strike, g.instrument.strike
    type_, credit = vertical_type(right, ks, kl)
    req = abs(ks - kl) if credit else charge * max(g.mark - s.mark, 0.0)
    return make_candidate(type_, [(s.index, -1), (g.index, 1)], req, req, by_index)


def straddle_terms(c, p) -> tuple:
    """(type, legs, initial, maintenance before the cap) of short call ``c`` and short put ``p``, one series:
    the greater side's naked figure plus the other's mark."""
    im = c.initial + p.mark if c.initial >= p.initial else p.initial + c.mark
    mm = c.maintenance + p.mark if c.maintenance >= p.maintenance else p.maintenance + c.mark
    type_ = "straddle" if c.instrument.strike == p.instrument.strike else "strangle"
    return type_, ((c.index, -1), (p.index, -1)), im, mm


def straddle(c, p, by_index) -> Candidate:
    """The straddle (or strangle) candidate of ``straddle_terms``."""
    return make_candidate(*straddle_terms(c, p), by_index)


def covered(s, cover, right: str, by_index) -> Candidate:
    """A short option against a delta-one ``cover``: the cover's own requirement, nothing on the option."""
    sign = 1 if right == "call" else -1
    return make_candidate(f"covered_{right}", [(s.index, -1), (cover.index, sign)], cover.initial,
                          cover.maintenance, by_index)


def covers(ix: LegIndex, s, right: str) -> list:
    """The delta-one legs that may cover short ``s``: for a call a long (coins held, perpetual, or a future
    expiring no earlier), for a put a short one."""
    a = s.instrument
    key = (a.underlying, right, a.expiry)  # the same for every short of one expiry: worked out once
    if key not in ix.cover_lists:
        sign = 1 if right == "call" else -1
        ix.cover_lists[key] = [c for c in ix.delta_one.get(a.underlying, ()) if c.quantity * sign > 0
                               and not (c.instrument.kind == "future" and c.instrument.expiry < a.expiry)]
    return ix.cover_lists[key]


def condors(ix: LegIndex, k: int) -> list[tuple]:
    """(order, type, legs, initial, maintenance) of the iron condors: each short put with its ``k`` nearest
    long puts below, ``k`` nearest short calls at or above, and each of those calls' ``k`` nearest long calls
    above (maintenance before the cap of ``make_candidate``)."""
    out = []
    for sp in ix.shorts("put"):
        ser, ksp = series_key(sp.instrument), sp.instrument.strike
        lps = ix.near(ser, "put", 1, ksp, k, "below")
        if not lps:
            continue
        for sc in ix.near(ser, "call", -1, ksp, k, "at_or_above"):
            for lc in ix.near(ser, "call", 1, sc.instrument.strike, k, "above"):
                for lp in lps:
                    width = max(ksp - lp.instrument.strike, lc.instrument.strike - sc.instrument.strike)
                    out.append(((sp.index, lp.index, sc.index, lc.index), "iron_condor",
                                ((lp.index, 1), (sp.index, -1), (sc.index, -1), (lc.index, 1)), width, width))
    return out


def calendars(ix: LegIndex, charge: float) -> list[tuple]:
    """(order, type, legs, initial, maintenance) of the calendars: every short against every long of the same underlying, settlement, right
    and strike expiring later (bounded by the number of expiries)."""
    longs = defaultdict(list)
    for (ser, right, side), grp in ix.groups.items():
        if side > 0:
            for g in grp:
                longs[(ser[0], ser[1], right, g.instrument.strike)].append(g)
    out = []
    for r, right in enumerate(RIGHTS):
        for s in ix.shorts(right):
            a = s.instrument
            for g in longs.get((a.underlying, a.settlement, right, a.strike), ()):
                if g.instrument.expiry > a.expiry:
                    req = charge * max(g.mark - s.mark, 0.0)
                    out.append(((r, s.index, g.index), "calendar", ((s.index, -1), (g.index, 1)), req, req))
    return out


def candidates(kind: str, ix: LegIndex, params) -> list[tuple]:
    """(enumeration order, type, legs, initial, maintenance before the cap) of ``kind`` within the
    neighbourhoods (availability is checked while pairing); the order breaks ties as the former all-pairs
    enumeration did."""
    k, charge = params.neighbours, _charge(params)
    out = []
    if kind == "iron_condor":
        return condors(ix, k)
    if kind == "calendar":
        return calendars(ix, charge)
    for r, right in enumerate(RIGHTS):
        for s in ix.shorts(right):
            ser, ks = series_key(s.instrument), s.instrument.strike
            if kind == "vertical":
                for g in ix.near(ser, right, 1, ks, k, "below") + ix.near(ser, right, 1, ks, k, "above"):
                    ks_, kl = ks, g.instrument.strike
                    type_, credit = vertical_type(right, ks_, kl)
                    req = abs(ks_ - kl) if credit else charge * max(g.mark - s.mark, 0.0)
                    out.append(((r, s.index, g.index), type_, ((s.index, -1), (g.index, 1)), req, req))
            elif kind == "covered":
                sign = 1 if right == "call" else -1
                out.extend(((r, s.index, c.index), f"covered_{right}", ((s.index, -1), (c.index, sign)), c.initial,
                            c.maintenance) for c in covers(ix, s, right))
            elif kind == "straddle" and right == "call":
                for p in ix.near(ser, "put", -1, ks, k, "below") + ix.near(ser, "put", -1, ks, k, "at_or_above"):
                    out.append(((s.index, p.index), *straddle_terms(s, p)))
            elif kind not in ("vertical", "covered", "straddle"):
                raise ValueError(f"unknown strategy kind {kind!r}")
    return out


def leg_tolerance(by_index: dict, i: int) -> float:
    """Quantity (coins) below which what is left of leg ``i`` counts as nothing."""
    return 1e-12 * max(1.0, abs(by_index[i].quantity))


def greedy(legs: list, params, known: dict | None = None) -> tuple[list[tuple[Candidate, float]], dict[int, float]]:
    """Greedy pairing: kinds in ``strategy_priority`` order; within a kind, candidates by largest saving
    (then smaller requirement, then enumeration order), each formed for as many coins as its legs have left.
    Savings are fixed per candidate, so one sorted sweep equals repeatedly taking the best available one.
    ``known``: candidates of some kinds already generated for these legs (in any order: the enumeration order
    breaks ties), e.g. the optimal pairing's iron condors and calendars.
    Returns (strategies with their quantities in coins, quantities left per leg index)."""
    ix = LegIndex(legs)
    by = ix.by_index
    left = {g.index: g.quantity for g in legs}
    tol = {g.index: leg_tolerance(by, g.index) for g in legs}
    found = []
    known = known or {}
    init = {g.index: g.initial for g in legs}
    for kind in params.strategy_priority:
        keyed = []
        for order, type_, c_legs, im, mm in known[kind] if kind in known else candidates(kind, ix, params):
            if len(c_legs) == 2:  # all but condors: the common case, without a generator
                saving = init[c_legs[0][0]] + init[c_legs[1][0]] - im
            else:
                saving = sum([init[i] for i, _ in c_legs]) - im
            if saving > 0.0:
                keyed.append(((-saving, im, order), type_, c_legs, mm))
        keyed.sort(key=lambda kc: kc[0])
        for (_, im, _), type_, c_legs, mm in keyed:
            for i, sign in c_legs:  # a leg used up (or on the wrong side): the candidate is gone
                if left[i] * sign <= tol[i]:
                    break
            else:
                q = min([abs(left[i]) for i, _ in c_legs])
                _take(c_legs, q, left, tol)
                found.append((make_candidate(type_, c_legs, im, mm, by), q))
    return found, left


def _take(c_legs, q: float, left: dict, tol: dict) -> None:
    """Use ``q`` coins of each leg of a strategy (what is left within tolerance of 0 becomes 0)."""
    for i, sign in c_legs:
        left[i] -= sign * q
        if abs(left[i]) <= tol[i]:
            left[i] = 0.0
