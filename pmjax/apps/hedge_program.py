"""The hedge's linear program: piecewise-linear margin objectives in the trades x, solved by HiGHS.

A ``Program`` is one method's objective as data (margin currency, cost excluded):

    outer + h.x [+ max(ES_k(L0 + Lx x), ru_floor)],   outer = max(outer_floor, c0 + g.x + sum_k w_k t_k),
    t_k = max(floor_k, max_i (c_ki + A_ki . x))

with ES_k the mean of the k largest path losses, written as Rockafellar-Uryasev's a + (1/k) sum_p s_p,
s_p >= L_p - a, s_p >= 0. ``solve`` minimises the largest of several programs plus cost.|x| (x = x+ - x-), under
bounds |x_j| <= bound_j, an optional gross-notional row and an optional cardinality limit (a binary z_j per contract,
x+_j + x-_j <= bound_j z_j, sum z <= K: a mixed-integer program). scipy (``pmjax[hedge]``) is imported on use.
Formulas: docs/methodology.md section 12.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from pmjax.core.errors import MissingDependency

#: HiGHS limits: seconds for a mixed-integer program, and its relative gap (the default 1e-4 would stop short)
MILP_TIME_LIMIT_S = 120.0
MILP_REL_GAP = 1e-9


class HedgeUnavailable(MissingDependency):
    """The optional solver is missing (``pip install 'pmjax[hedge]'``)."""


def scipy_modules():
    """(scipy.optimize, scipy.sparse), or ``HedgeUnavailable`` saying how to install them."""
    try:
        from scipy import optimize, sparse
    except ImportError as e:  # scipy is the optional pmjax[hedge] extra
        raise HedgeUnavailable("pmjax hedge solves a linear program with scipy's HiGHS, which is not installed: "
                               "pip install 'pmjax[hedge]' (or scipy>=1.11)") from e
    return optimize, sparse


@dataclasses.dataclass
class Term:
    """weight x max(floor, max_i (c_i + A_i . x)): one epigraph variable."""

    weight: float
    c: np.ndarray  # (r,)
    A: np.ndarray  # (r, J)
    floor: float | None  # None: no floor


@dataclasses.dataclass
class Program:
    """One method's objective (module docstring)."""

    terms: list[Term]
    c0: float
    g: np.ndarray
    h: np.ndarray
    outer_floor: float | None
    ru: tuple[np.ndarray, np.ndarray, int] | None = None  # (L0 (N,), Lx (N, J), k)
    ru_floor: float = 0.0  # a margin is not negative: the ES part counts as max(ES, ru_floor)

    @property
    def has_outer(self) -> bool:
        return bool(self.terms) or bool(self.g.any()) or self.c0 != 0.0

    def value(self, x: np.ndarray) -> float:
        """The objective at x (cost excluded), in numpy float64."""
        out = 0.0
        if self.has_outer:
            out = self.c0 + float(self.g @ x) + sum(
                t.weight * max(float(np.max(t.c + t.A @ x)), -np.inf if t.floor is None else t.floor)
                for t in self.terms)
            if self.outer_floor is not None:
                out = max(out, self.outer_floor)
        if self.ru is not None:
            out += max(expected_shortfall(self.ru[0] + self.ru[1] @ x, self.ru[2]), self.ru_floor)
        return out + float(self.h @ x)


def expected_shortfall(losses: np.ndarray, k: int) -> float:
    """Mean of the k largest losses."""
    return float(np.mean(np.partition(losses, losses.size - k)[losses.size - k:]))


class _Rows:
    """Constraint rows lb <= M v <= ub over the columns v = [x+ (J), x- (J), ...] (n_col in all)."""

    def __init__(self, sparse, J: int, n_col: int):
        self.sparse, self.J, self.n_col = sparse, J, n_col
        self.blocks, self.lbs, self.ubs = [], [], []

    def add(self, M, lb, ub):
        m = M.shape[0]
        self.blocks.append(self.sparse.csr_matrix(M))
        self.lbs.append(np.broadcast_to(np.asarray(lb, float), (m,)))
        self.ubs.append(np.broadcast_to(np.asarray(ub, float), (m,)))

    def add_linear(self, A_x, other: dict, lb, ub):
        """lb <= A_x (x+ - x-) + sum_col other[col] v_col <= ub; other[col] has shape (m,) or a scalar."""
        M = np.zeros((A_x.shape[0], self.n_col))
        M[:, :self.J] = A_x
        M[:, self.J:2 * self.J] = -A_x
        for col, v in other.items():
            M[:, col] = v
        self.add(M, lb, ub)

    def constraint(self, optimize):
        return optimize.LinearConstraint(self.sparse.vstack(self.blocks, format="csr"), np.concatenate(self.lbs),
                                         np.concatenate(self.ubs))


def _layout(progs: list[Program], J: int, max_trades: int | None) -> tuple[list[dict], int | None, int, int]:
    """Columns: x+ (J), x- (J), per program [t (K), outer (0/1), a (0/1), s (N), e (0/1)], top (0/1), z (J or 0).
    Returns (per-program offsets, top column or None, first z column, column count)."""
    layout, col = [], 2 * J
    for prog in progs:
        K, N, ru = len(prog.terms), 0 if prog.ru is None else prog.ru[0].size, int(prog.ru is not None)
        o = {"t": col, "outer": col + K, "a": col + K + int(prog.has_outer)}
        o["s"] = o["a"] + ru
        o["e"] = o["s"] + N
        col = o["e"] + ru
        layout.append(o)
    top = col if len(progs) > 1 else None
    o_z = col + int(top is not None)
    return layout, top, o_z, o_z + (J if max_trades is not None else 0)


def _program_rows(prog: Program, o: dict, rows: _Rows, lo: np.ndarray, scale: float) -> dict:
    """The program's rows; returns its objective as {column: coefficient} (h x aside)."""
    sparse, J, n_col = rows.sparse, rows.J, rows.n_col
    own = {}
    for k, t in enumerate(prog.terms):
        lo[o["t"] + k] = -np.inf if t.floor is None else t.floor / scale
        rows.add_linear(t.A / scale, {o["t"] + k: -1.0}, -np.inf, -t.c / scale)  # c + A x <= t
    if prog.has_outer:
        lo[o["outer"]] = -np.inf if prog.outer_floor is None else prog.outer_floor / scale
        cols = {o["outer"]: -1.0, **{o["t"] + k: t.weight for k, t in enumerate(prog.terms)}}
        rows.add_linear(prog.g[None, :] / scale, cols, -np.inf, -prog.c0 / scale)  # c0 + g x + sum w t <= outer
        own[o["outer"]] = 1.0
    if prog.ru is not None:
        L0, Lx, k = prog.ru
        N = L0.size
        lo[o["a"]] = -np.inf
        lo[o["e"]] = prog.ru_floor / scale
        own[o["e"]] = 1.0
        # L0 + Lx x - a - s <= 0, one row per path, built sparse (N can be 10^5)
        rows.add(sparse.hstack([sparse.csr_matrix(Lx / scale), sparse.csr_matrix(-Lx / scale),
                                sparse.csr_matrix((N, o["a"] - 2 * J)), sparse.csr_matrix(-np.ones((N, 1))),
                                -sparse.identity(N, format="csr"), sparse.csr_matrix((N, n_col - o["s"] - N))],
                               format="csr"), -np.inf, -L0 / scale)
        dense = np.zeros((1, n_col))  # a + (1/k) sum s <= e
        dense[0, o["a"]], dense[0, o["s"]:o["s"] + N], dense[0, o["e"]] = 1.0, 1.0 / k, -1.0
        rows.add(dense, -np.inf, 0.0)
    return own


def solve(progs: list[Program], *, cost: np.ndarray, bound: np.ndarray, notional: np.ndarray,
          max_notional: float | None, max_trades: int | None, scale: float) -> tuple[np.ndarray, dict]:
    """(x, solver report): minimise the largest of ``progs`` plus cost.|x| by HiGHS (``scipy.optimize.milp``);
    money is divided by ``scale`` for conditioning."""
    optimize, sparse = scipy_modules()
    J = bound.size
    layout, top, o_z, n_col = _layout(progs, J, max_trades)
    c = np.zeros(n_col)
    c[:2 * J] = np.concatenate([cost, cost]) / scale
    lo, hi = np.zeros(n_col), np.full(n_col, np.inf)
    hi[:2 * J] = np.concatenate([bound, bound])
    rows = _Rows(sparse, J, n_col)
    for prog, o in zip(progs, layout):
        own = _program_rows(prog, o, rows, lo, scale)
        if top is None:  # one program: minimise its objective directly
            for k, v in own.items():
                c[k] += v
            c[:J] += prog.h / scale
            c[J:2 * J] -= prog.h / scale
        else:  # own + h x <= top
            rows.add_linear(prog.h[None, :] / scale, {**own, top: -1.0}, -np.inf, 0.0)
    if top is not None:
        c[top], lo[top] = 1.0, -np.inf
    if max_notional is not None:  # sum notional (x+ + x-) <= cap
        rows.add(np.concatenate([notional, notional, np.zeros(n_col - 2 * J)])[None, :], -np.inf, max_notional)
    if max_trades is not None:
        rows.add(sparse.hstack([sparse.identity(J), sparse.identity(J), sparse.csr_matrix((J, o_z - 2 * J)),
                                -sparse.diags(bound)], format="csr"), -np.inf, 0.0)  # x+ + x- <= bound z
        count = np.zeros((1, n_col))
        count[0, o_z:] = 1.0
        rows.add(count, -np.inf, float(max_trades))
        hi[o_z:] = 1.0
    integrality = np.zeros(n_col)
    integrality[o_z:] = 1
    t0 = time.perf_counter()
    res = optimize.milp(c, constraints=rows.constraint(optimize),
                        integrality=integrality if max_trades is not None else None, bounds=optimize.Bounds(lo, hi),
                        options={"time_limit": MILP_TIME_LIMIT_S, "presolve": True, "disp": False,
                                 "mip_rel_gap": MILP_REL_GAP})
    seconds = time.perf_counter() - t0
    if res.x is None:
        raise RuntimeError(f"the hedge's linear program has no solution ({res.message})")
    x = res.x[:J] - res.x[J:2 * J]
    x[np.abs(x) <= 1e-12 * np.maximum(bound, 1.0)] = 0.0
    return x, {"solver": "HiGHS (scipy.optimize.milp)", "kind": "milp" if max_trades is not None else "lp",
               "status": int(res.status), "message": str(res.message), "optimal": res.status == 0,
               "objective": float(res.fun) * scale, "rows": int(sum(b.shape[0] for b in rows.blocks)),
               "columns": n_col, "seconds": seconds}
