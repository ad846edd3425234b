"""Optimal strategy pairing for rules margin: the largest total saving as one linear program (HiGHS).

Variables are coins: one per explicit candidate (iron condors and calendars, from ``rules_candidates``) and
one per arc of small flow networks that stand for every pair of the two-leg strategies without listing them:

- verticals: per series and right, a chain over the legs sorted by strike, one going up and one going down;
  a short leg enters the chain at the next strike, a long leg leaves it at its own, and each step costs the
  strike gap (credit spreads) or the mark difference (debit spreads), so a path from short to long costs
  exactly the pair's requirement (widths and mark differences telescope); flow parts from a chain only where a
  long leg leaves, so a chain keeps one node per run of leaving legs (``_chain``);
- straddles and strangles: per series, the short legs sorted by standalone initial margin; the saving of a
  pair is the lower leg's initial less its mark, earned where that leg enters a zero-cost chain that only
  opposite-right legs further up may leave;
- covered calls and puts: per underlying, a chain over expiries that delta-one covers enter at their expiry
  (coins held and perpetuals at the top) and run down to the short options they may cover (a future covers
  options expiring no later); the saving is the option's whole standalone requirement.

Each leg's coins are used at most once (one ``<=`` row per leg), every chain node conserves flow (one ``=``
row), and the objective is the total saving, so the requirement, standalone total less saving, is the least
any combination of the candidates allows. The flows are then split into pairs (matching along each chain) and
every strategy is priced by its own formula. scipy (``pip install 'pmjax[hedge]'``) is imported on use.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pmjax.measures.rules_candidates import (
    RIGHTS,
    LegIndex,
    calendars,
    condors,
    covered,
    kind_of,
    make_candidate,
    straddle,
    vertical,
)

SOLVER = "HiGHS (scipy.optimize.linprog)"


class _Program:
    """A sparse LP: maximise saving . x, leg usage <= |quantity|, node balance = 0, x >= 0. Variables are
    added one call each (chain steps, arcs, explicit candidates): the (row, column, value) triplets of the
    sparse matrices grow as plain lists, the cheapest way to build tens of thousands of columns in Python."""

    def __init__(self, legs):
        self.row = {g.index: r for r, g in enumerate(legs)}
        self.cap = np.array([abs(g.quantity) for g in legs], np.float64)
        self.saving, self.payload = [], []  # per variable: USD saved per coin; what it stands for (None: an arc)
        self.ub_rows, self.ub_cols = [], []
        self.eq_rows, self.eq_cols, self.eq_vals = [], [], []
        self.n_nodes = 0

    def node(self) -> int:
        self.n_nodes += 1
        return self.n_nodes - 1

    def step(self, saving: float, payload, leg: int, node: int, sign: float) -> None:
        """A leg joining (``sign`` +1) or parting from (-1) a chain at ``node``: one coin of leg index ``leg``."""
        j = len(self.saving)
        self.saving.append(saving)
        self.payload.append(payload)
        self.ub_rows.append(self.row[leg])
        self.ub_cols.append(j)
        self.eq_rows.append(node)
        self.eq_cols.append(j)
        self.eq_vals.append(sign)

    def arc(self, saving: float, a: int, b: int) -> None:
        """Flow along a chain from node ``a`` to node ``b``."""
        j = len(self.saving)
        self.saving.append(saving)
        self.payload.append(None)
        self.eq_rows.extend((a, b))
        self.eq_cols.extend((j, j))
        self.eq_vals.extend((-1.0, 1.0))

    def var(self, saving: float, payload, legs) -> None:
        """An explicit candidate using one coin of each leg index in ``legs``."""
        j = len(self.saving)
        self.saving.append(saving)
        self.payload.append(payload)
        self.ub_rows.extend([self.row[i] for i in legs])
        self.ub_cols.extend([j] * len(legs))

    def solve(self) -> np.ndarray:
        from scipy import optimize, sparse

        n = len(self.saving)
        a_ub = sparse.csr_matrix((np.ones(len(self.ub_rows)), (self.ub_rows, self.ub_cols)), shape=(len(self.cap), n))
        eq = {}
        if self.n_nodes:
            eq = {"A_eq": sparse.csr_matrix((self.eq_vals, (self.eq_rows, self.eq_cols)), shape=(self.n_nodes, n)),
                  "b_eq": np.zeros(self.n_nodes)}
        res = optimize.linprog(-np.asarray(self.saving), A_ub=a_ub, b_ub=self.cap, bounds=(0, None),
                               method="highs", **eq)
        if res.status != 0:
            raise RuntimeError(f"rules pairing LP: {res.message}")
        return np.maximum(res.x, 0.0)


def _chain(prog: _Program, leaves: list[bool]) -> tuple[list, list]:
    """Nodes of a chain whose steps either enter it (``leaves[step]`` False) or leave it: one node per run of
    leaving steps after an entering one, since flow can only part from the chain where a leg leaves. Returns
    (per step, (node, step where the node's run starts) or None: where an entering step joins (the next run)
    or a leaving step parts; the runs in chain order)."""
    at, runs, entered, run = [None] * len(leaves), [], False, None
    for step, out in enumerate(leaves):
        if not out:
            entered, run = True, None
        elif entered:
            if run is None:
                run = (prog.node(), step)
                runs.append(run)
            at[step] = run
    following = None
    for step in range(len(leaves) - 1, -1, -1):
        if leaves[step]:
            following = at[step] or following
        else:
            at[step] = following
    return at, runs


def _vertical_chains(prog: _Program, ix: LegIndex, charge: float):
    """Up and down strike chains per (series, right); payload ("v", chain id, role, leg, position)."""
    series = defaultdict(list)
    for (ser, right, side), grp in ix.groups.items():
        series[(ser, right)].extend(grp)
    chains = []
    for (ser, right), grp in series.items():
        if not any(g.quantity < 0 for g in grp) or not any(g.quantity > 0 for g in grp):
            continue
        grp = sorted(grp, key=lambda g: g.instrument.strike)
        k = [g.instrument.strike for g in grp]
        m = [g.mark for g in grp]
        gap = [k[j + 1] - k[j] for j in range(len(grp) - 1)]
        up_cost = gap if right == "call" else [charge * max(m[j + 1] - m[j], 0.0) for j in range(len(gap))]
        down_cost = gap if right == "put" else [charge * max(m[j] - m[j + 1], 0.0) for j in range(len(gap))]
        for direction, cost in ((1, up_cost), (-1, down_cost)):
            cid = len(chains)
            chains.append((right, direction, grp))
            order = list(range(len(grp)))[::direction]  # the chain's steps, lowest strike first going up
            dist = [0.0]  # the chain's cost from its first step to each step (widths or debits telescope)
            for step in range(len(order) - 1):
                dist.append(dist[-1] + cost[min(order[step], order[step + 1])])
            at, runs = _chain(prog, [grp[j].quantity > 0 for j in order])
            for step, j in enumerate(order):
                if at[step] is None:
                    continue
                g, (node, start) = grp[j], at[step]
                if g.quantity < 0:  # a short joins at the next run of longs, paying the way there
                    prog.step(g.initial - (dist[start] - dist[step]), ("v", cid, "in", g.index, step), g.index,
                              node, 1.0)
                else:  # a long parts from its run, paying the way from the run's start
                    prog.step(g.initial - (dist[step] - dist[start]), ("v", cid, "out", g.index, step), g.index,
                              node, -1.0)
            for (a, sa), (b, sb) in zip(runs, runs[1:]):
                prog.arc(-(dist[sb] - dist[sa]), a, b)
    return chains


def _straddle_chains(prog: _Program, ix: LegIndex):
    """Per series, the short legs by (initial, put before call); payload ("s", series, role, leg, position)."""
    series = defaultdict(list)
    for (ser, right, side), grp in ix.groups.items():
        if side < 0:
            series[ser].extend(grp)
    for ser, grp in series.items():
        if len({g.instrument.right for g in grp}) < 2:
            continue
        grp = sorted(grp, key=lambda g: (g.initial, g.instrument.right == "call", g.index))
        for low in RIGHTS:  # the chain on which legs of right ``low`` are the lower side
            at, runs = _chain(prog, [g.instrument.right != low for g in grp])
            for j, g in enumerate(grp):
                if at[j] is None:
                    continue
                if g.instrument.right == low:
                    prog.step(g.initial - g.mark, ("s", (ser, low), "in", g.index, j), g.index, at[j][0], 1.0)
                else:
                    prog.step(0.0, ("s", (ser, low), "out", g.index, j), g.index, at[j][0], -1.0)
            for (a, _), (b, _) in zip(runs, runs[1:]):
                prog.arc(0.0, a, b)


def _cover_chains(prog: _Program, ix: LegIndex):
    """Per (underlying, right), a chain over expiries from the latest down; payload ("c", key, role, leg, rank)."""
    for u, deltas in ix.delta_one.items():
        for right in RIGHTS:
            shorts = [g for g in ix.shorts(right) if g.instrument.underlying == u]
            cov = [c for c in deltas if (c.quantity > 0) == (right == "call")]
            if not shorts or not cov:
                continue
            far = max(s.instrument.expiry for s in shorts)
            when = lambda g: (g.instrument.expiry if g.instrument.is_option  # noqa: E731
                              else min(g.instrument.expiry, far) if g.instrument.kind == "future" else far)
            keys = sorted({when(g) for g in shorts + cov}, reverse=True)
            rank = {e: r for r, e in enumerate(keys)}
            nodes = [prog.node() for _ in keys]
            for r in range(len(keys) - 1):
                prog.arc(0.0, nodes[r], nodes[r + 1])
            for c in cov:
                # a hair of the cover's own requirement as cost: of covers saving alike, coins held go first
                prog.step(-1e-9 * c.initial, ("c", (u, right), "in", c.index, rank[when(c)]), c.index,
                          nodes[rank[when(c)]], 1.0)
            for s in shorts:
                prog.step(s.initial, ("c", (u, right), "out", s.index, rank[when(s)]), s.index,
                          nodes[rank[when(s)]], -1.0)


def _match(entries, make) -> list:
    """Split a chain's flow into pairs: ``entries`` (position, "in"/"out", leg index, coins) walked in chain
    order; each leaving flow is matched with the latest entering flow still unmatched (nearest pairs)."""
    out, stack = [], []
    for _, role, i, x in sorted(entries, key=lambda e: (e[0], e[1] != "in")):  # a cover serves its own expiry
        if role == "in":
            stack.append([i, x])
            continue
        while x > 0 and stack:
            top = stack[-1]
            q = min(x, top[1])
            out.append((make(top[0], i), q))
            x -= q
            top[1] -= q
            if top[1] <= 1e-15 * max(1.0, q):
                stack.pop()
    return out


def optimal(legs: list, params, meanwhile: Callable[[dict], object] | None = None) -> tuple[list, dict, dict, object]:
    """The least-requirement pairing: (strategies with quantities in coins, quantities left per leg index,
    solver report {"solver", "variables", "constraints", "seconds"}, what ``meanwhile(known)`` returned). One
    program per underlying (no strategy mixes underlyings), each solved on a worker thread as soon as it is built
    (the solver releases the GIL), so the next program is built, and ``meanwhile`` runs, while the solver works.
    ``known`` maps "iron_condor" and "calendar" (those in ``strategy_priority``) to the candidates the programs
    were built from, every underlying's, for ``rules_candidates.greedy`` to reuse. Raises ImportError without
    scipy."""
    import scipy.optimize  # noqa: F401  (fail before building anything)

    t0 = time.perf_counter()
    by_underlying = defaultdict(list)
    for g in legs:
        by_underlying[g.instrument.underlying].append(g)
    known = {k: [] for k in ("iron_condor", "calendar") if k in params.strategy_priority}
    with ThreadPoolExecutor(max_workers=max(1, len(by_underlying))) as pool:
        built = []
        for group in by_underlying.values():
            prog, chains, ix, charge = _program(group, params, known)
            built.append((prog, chains, ix, charge, pool.submit(prog.solve) if prog.saving else None))
        extra = meanwhile(known) if meanwhile is not None else None
        found, n_vars, n_rows = [], 0, 0
        for prog, chains, ix, charge, solving in built:
            x = solving.result() if solving is not None else np.zeros(0)
            found += _decompose(prog, x, chains, ix, charge)
            n_vars, n_rows = n_vars + len(prog.saving), n_rows + len(prog.cap) + prog.n_nodes
    found, left = _settle(found, legs, {g.index: g for g in legs}, params.strategy_priority)
    return found, left, {"solver": SOLVER, "variables": n_vars, "constraints": n_rows,
                         "seconds": time.perf_counter() - t0}, extra


def _program(legs: list, params, known: dict):
    """(program, vertical chains, leg index, premium charge) of one underlying's legs; the explicit candidates
    (iron condors, calendars) are appended to ``known``'s lists."""
    ix = LegIndex(legs)
    by = ix.by_index
    charge = 1.0 if params.long_option_charge == "premium" else 0.0
    prog = _Program(legs)
    kinds = set(params.strategy_priority)
    explicit = []
    if "iron_condor" in kinds:
        explicit += (found := condors(ix, params.neighbours))
        known["iron_condor"] += found
    if "calendar" in kinds:
        explicit += (found := calendars(ix, charge))
        known["calendar"] += found
    for _, type_, c_legs, im, mm in explicit:
        saving = sum(by[i].initial for i, _ in c_legs) - im
        if saving > 0:
            prog.var(saving, ("x", type_, c_legs, im, mm), [i for i, _ in c_legs])
    chains = _vertical_chains(prog, ix, charge) if "vertical" in kinds else []
    if "straddle" in kinds:
        _straddle_chains(prog, ix)
    if "covered" in kinds:
        _cover_chains(prog, ix)
    return prog, chains, ix, charge


def _decompose(prog: _Program, x: np.ndarray, chains, ix: LegIndex, charge: float) -> list:
    """(candidate, coins) of the LP solution: explicit candidates as they are, chain flows split into pairs."""
    by = ix.by_index
    found, flows = [], defaultdict(list)
    payload = prog.payload
    used = np.flatnonzero(x > 1e-12)
    for j, xj in zip(used.tolist(), x[used].tolist()):
        p = payload[j]
        if p is None:  # an arc
            continue
        if p[0] == "x":
            found.append((make_candidate(*p[1:], by), xj))
        else:
            flows[(p[0], p[1])].append((p[4], p[2], p[3], xj))
    for (kind, key), entries in sorted(flows.items(), key=lambda kv: str(kv[0])):
        if kind == "v":
            right = chains[key][0]
            found += _match(entries, lambda s, g, r=right: vertical(by[s], by[g], r, charge, by))
        elif kind == "s":
            found += _match(entries, lambda lo, hi: straddle(*((by[lo], by[hi]) if by[lo].instrument.right == "call"
                                                               else (by[hi], by[lo])), by))
        else:
            right = key[1]
            found += _match(entries, lambda c, s, r=right: covered(by[s], by[c], r, by))
    return found


def _settle(found: list, legs: list, by: dict, priority) -> tuple[list, dict]:
    """Quantities made consistent: same-leg strategies merged, each leg's coins used at most once (solver
    round-off trimmed, a remainder within 1e-9 of a coin taken in full), listed by ``priority`` (strategy
    kinds) then legs; returns (found, left)."""
    rank = {k: r for r, k in enumerate(priority)}
    merged: dict = {}
    for c, q in found:
        merged[c] = merged.get(c, 0.0) + q
    left = {g.index: g.quantity for g in legs}
    out = []
    for c, q in sorted(merged.items(), key=lambda cq: (rank.get(kind_of(cq[0].type), 0), cq[0].legs)):
        avail = min(abs(left[i]) if left[i] * sign > 0 else 0.0 for i, sign in c.legs)
        if avail - q <= 1e-9 * max(1.0, q):
            q = avail
        if q <= 1e-12:
            continue
        for i, sign in c.legs:
            left[i] -= sign * q
            if abs(left[i]) <= 1e-12 * max(1.0, abs(by[i].quantity)):
                left[i] = 0.0
        out.append((c, q))
    return out, left
