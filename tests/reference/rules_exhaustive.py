"""Exhaustive strategy search for small books, independent of pmjax's candidate neighbourhoods and chains.

Every strategy the methodology's table (docs/methodology.md section 8.3) allows is listed, all pairs and all
condors; then (a) the linear program over all of them (the least requirement with fractional coins allowed,
as positions are coins) and (b) a search over every combination in whole units (integer quantities). Leg
standalone figures come from ``pmjax.measures.rules.standalone_legs`` (checked by hand in test_rules.py)."""

from __future__ import annotations

import functools
import itertools

import numpy as np


def _series(a, b) -> bool:
    return a.underlying == b.underlying and a.expiry == b.expiry and a.settlement == b.settlement


def all_strategies(legs, charge: float = 1.0) -> list[tuple[str, tuple, float]]:
    """(type, ((leg index, +1 long / -1 short), ...), initial USD per unit) of every strategy in the book."""
    opts = [g for g in legs if g.instrument.is_option]
    sh = lambda r: [g for g in opts if g.quantity < 0 and g.instrument.right == r]  # noqa: E731
    lo = lambda r: [g for g in opts if g.quantity > 0 and g.instrument.right == r]  # noqa: E731
    out = []
    for lp, sp, sc, lc in itertools.product(lo("put"), sh("put"), sh("call"), lo("call")):
        a, b, c, d = (g.instrument for g in (lp, sp, sc, lc))
        if _series(a, b) and _series(b, c) and _series(c, d) and a.strike < b.strike <= c.strike < d.strike:
            out.append(("iron_condor", ((lp.index, 1), (sp.index, -1), (sc.index, -1), (lc.index, 1)),
                        max(b.strike - a.strike, d.strike - c.strike)))
    for right in ("call", "put"):
        for s, g in itertools.product(sh(right), lo(right)):
            a, b = s.instrument, g.instrument
            debit = charge * max(g.mark - s.mark, 0.0)
            if _series(a, b) and a.strike != b.strike:
                credit = a.strike < b.strike if right == "call" else a.strike > b.strike
                out.append(("vertical", ((s.index, -1), (g.index, 1)), abs(a.strike - b.strike) if credit else debit))
            if (a.underlying, a.settlement, a.strike) == (b.underlying, b.settlement, b.strike) and b.expiry > a.expiry:
                out.append(("calendar", ((s.index, -1), (g.index, 1)), debit))
        sign = 1 if right == "call" else -1
        for s, c in itertools.product(sh(right), [g for g in legs if not g.instrument.is_option]):
            ci = c.instrument
            if (ci.underlying == s.instrument.underlying and c.quantity * sign > 0
                    and not (ci.kind == "future" and ci.expiry < s.instrument.expiry)):
                out.append(("covered", ((s.index, -1), (c.index, sign)), c.initial))
    for c, p in itertools.product(sh("call"), sh("put")):
        if _series(c.instrument, p.instrument):
            out.append(("straddle", ((c.index, -1), (p.index, -1)),
                        c.initial + p.mark if c.initial >= p.initial else p.initial + c.mark))
    return out


def savings(legs, strategies) -> list[float]:
    by = {g.index: g.initial for g in legs}
    return [sum(by[i] for i, _ in lg) - im for _, lg, im in strategies]


def lp_requirement(legs, strategies) -> float:
    """The least initial requirement (USD) over all strategies, fractional coins allowed (scipy's HiGHS)."""
    from scipy.optimize import linprog

    s = savings(legs, strategies)
    standalone = sum(g.initial * abs(g.quantity) for g in legs)
    if not strategies:
        return standalone
    row = {g.index: r for r, g in enumerate(legs)}
    a = np.zeros((len(legs), len(strategies)))
    for j, (_, lg, _) in enumerate(strategies):
        for i, _ in lg:
            a[row[i], j] = 1.0
    res = linprog(-np.maximum(s, 0.0), A_ub=a, b_ub=[abs(g.quantity) for g in legs], bounds=(0, None), method="highs")
    return standalone + res.fun


def integer_requirement(legs, strategies) -> float:
    """The least initial requirement (USD) over every combination of whole units (legs of whole coins)."""
    s = savings(legs, strategies)
    row = {g.index: r for r, g in enumerate(legs)}
    use = [tuple(row[i] for i, _ in lg) for _, lg, _ in strategies]
    useful = [j for j in range(len(strategies)) if s[j] > 0]

    @functools.lru_cache(maxsize=None)
    def best(left: tuple) -> float:
        out = 0.0
        for j in useful:
            if all(left[r] >= 1 for r in use[j]):
                nxt = list(left)
                for r in use[j]:
                    nxt[r] -= 1
                out = max(out, s[j] + best(tuple(nxt)))
        return out

    start = tuple(int(round(abs(g.quantity))) for g in legs)
    return sum(g.initial * abs(g.quantity) for g in legs) - best(start)
