"""Margin-minimising hedge: the trades, over a candidate set of listed contracts, that minimise one method's
headline plus trading cost.

Every headline is, in its core, a maximum (or a tail average) of functions linear in the quantities:

- span: scan risk = max(0, max_i L_i(q)) per underlying, the spot charge |near delta(q)| x rate, NOV linear;
- deribit: worst case = max(0, max_i -P_i(q), max_e -(E_e(q) + d_e)) per pool (the pnl_offset never moves the
  worst case and the dampener d shifts a loss by a constant), the roll shock sum_g |delta_g(q)| x rate_g;
- var: ES over a fixed set of paths = min_a a + (1/k) sum_p max(L_p(q) - a, 0) (Rockafellar-Uryasev; k the tail
  size), exact for the sample.

So the core problem is a linear program in the trades x (split x = x+ - x-, cost on x+ + x-), with an epigraph
variable per maximum; ``--max-trades K`` adds a binary per candidate (a mixed-integer program), ``--max-notional``
one row. It is solved with HiGHS (``scipy.optimize.milp``; scipy is the optional ``pmjax[hedge]`` extra). The
parts that are not linear (span: intra spreads, inter credits, short option minimum; deribit: the delta shock and
the 9-decimal rounding) are then applied by the exact measure, and a pattern search ("polish") moves the
trades while the exact objective falls: each step evaluates every +-step of every traded contract (and dropping
each trade, and scaling all) in one vmapped call of the measure on the padded book. With ``lot`` the trades are
multiples of it. The result never raises the objective: when nothing beats the book as it is, there is no trade.

Objective, margin currency: span: total + premium of the options bought (SPAN's total counts option value
against risk, so buying an option turns cash into NOV one for one: the premium keeps that from looking like a
hedge); deribit: initial; var: ES. Plus cost = bps / 10,000 x |quantity| x the underlying's spot (margin
currency). ``after`` is computed by ``pmjax margin``'s own functions on the book plus the trades
(``Portfolio.with_trades``). Formulas: docs/methodology.md section 12.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pmjax.apps.hedge_map import KINDS, extended_book, hedge_map, listed_contracts
from pmjax.apps.hedge_program import HedgeUnavailable, Program, Term, scipy_modules, solve  # noqa: F401
from pmjax.apps.margin import HEADLINE, compute_margins
from pmjax.apps.names import DEFAULT_INSTRUMENTS, HEDGE_METHODS  # noqa: F401  (re-exported)
from pmjax.core.book import bucket_size, resolve
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument, parse_instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio, Position
from pmjax.io.config import load_config
from pmjax.measures.deribit import deribit_linear_terms, deribit_margin, deribit_params
from pmjax.measures.span import span_linear_terms, span_margin, span_params
from pmjax.measures.var import auto_chunk, tail_size, var_params
from pmjax.scenarios import montecarlo
from pmjax.scenarios.mc_models import path_position_losses

#: each trade is bounded by this many times the book's gross notional (coins of the contract's underlying):
#: keeps the program bounded (SPAN's floor at 0 lets long options absorb any risk) without binding a hedge
BOUND_MULTIPLE = 10.0
#: var with options: the candidates are the futures and perpetuals asked for plus this many options, half whose
#: purchase and half whose sale lowers ES most by the marginal map (a path-by-contract matrix of every listed
#: option would not fit in memory)
VAR_OPTION_CANDIDATES = 64
#: pattern-search limits
POLISH_ITERATIONS = 200
POLISH_START = 0.25  # first step, as a fraction of each trade (or of the book's gross in that coin)
POLISH_MIN_STEP = 1e-7  # relative to the book's gross, without a lot
TIE_BREAK = 1e-7
POLISH_GAIN = 1e-8  # a polish step must lower the objective by this fraction of it
DUST_SIZE = 1e-3  # a trade under this fraction of the book's gross notional is dropped when that costs
DUST = 1e-5  # at most this fraction of the objective
PAIR_MOVES_UP_TO = 8  # pair moves when at most this many contracts are traded
CRUMB = 1e-2  # after the polish, trades under this fraction of the book's gross are tried without


@dataclasses.dataclass
class HedgeResult:
    """A hedge: ``trades`` (contract, coins), the headline of each method ``before`` and ``after`` (margin
    currency, ``pmjax margin``'s figures), the trading ``cost``, the options' ``premium`` (paid positive), the
    objective before and after, and how the solver and the polish went (``lp``, ``polish``)."""

    method: str
    currency: str
    trades: list[Position]
    before: dict[str, float]
    after: dict[str, float]
    cost: float
    premium: float
    notional: float
    objective: dict[str, float]
    candidates: list[Instrument]
    constraints: dict
    lp: dict
    polish: dict
    portfolio: Portfolio  # the book plus the trades
    notices: list[str] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------ requests

def candidate_instruments(market: Market, instruments=DEFAULT_INSTRUMENTS) -> list[Instrument]:
    """The contracts a hedge may trade: kinds (``futures``, ``perpetuals``, ``options``: every listed one) and
    contract names (each must be listed on ``market``), in listing order; ``InputError`` otherwise."""
    tokens = [str(t).strip() for t in (instruments.split(",") if isinstance(instruments, str) else instruments)]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise InputError("no instruments given (kinds: futures, perpetuals, options, or contract names)",
                         source="--instruments")
    kinds = [t.lower() for t in tokens if t.lower() in KINDS]
    names = [t for t in tokens if t.lower() not in KINDS]
    out = listed_contracts(market, tuple(kinds)) if kinds else []
    if names:
        listed = set(listed_contracts(market))
        for name in names:
            try:
                inst = parse_instrument(name, source="--instruments", field=name)
            except InputError:
                raise InputError(f"{name!r} is neither a kind ({', '.join(KINDS)}) nor a contract name",
                                 source="--instruments") from None
            if inst.kind == "spot":
                raise InputError(f"{name} is a coin, not a contract to hedge with (futures, perpetuals, options)",
                                 source="--instruments")
            if inst not in listed:  # not on the chain: a USDC-settled contract, or an option of the smile
                why = market.unlisted(inst)
                if why is None:
                    try:
                        resolve([inst], [0.0], market, origins=[("--instruments", name)])
                    except InputError as e:
                        why = str(e)
                if why is not None:
                    raise InputError(f"{name} is not listed on {market.source} ({why})", source="--instruments")
            if inst not in out:
                out.append(inst)
    if not out:
        raise InputError(f"no contract of {', '.join(tokens)} is listed on {market.source}: the candidate set is "
                         "empty", source="--instruments")
    return out


def check_request(method, max_trades, max_notional, cost_bps, lot) -> list[str]:
    """The methods of ``method`` (a name, names joined by commas, or a sequence), the request checked."""
    methods = [m.strip().lower() for m in (method.split(",") if isinstance(method, str) else method) if m.strip()]
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in HEDGE_METHODS]
    if not methods or bad:
        raise InputError(f"unknown method {', '.join(bad) or repr(method)} (a hedge minimises one of "
                         f"{', '.join(HEDGE_METHODS)}, or the largest of several joined by commas; rules margin pairs "
                         "strategies and is not minimised)", source="--method")
    if max_trades is not None and (int(max_trades) != max_trades or max_trades < 1):
        raise InputError(f"must be a whole number >= 1, got {max_trades}", source="--max-trades")
    if max_notional is not None and not (math.isfinite(max_notional) and max_notional > 0):
        raise InputError(f"must be a positive amount in the margin currency, got {max_notional} (a cap <= 0 admits "
                         "no trade)", source="--max-notional")
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise InputError(f"must be >= 0 basis points, got {cost_bps}", source="--cost")
    if lot is not None and not (math.isfinite(lot) and lot > 0):
        raise InputError(f"must be a positive number of coins, got {lot}", source="--lot")
    return methods


# ------------------------------------------------------------------------------------------ per method

def _with_quantities(book, q):
    return eqx.tree_at(lambda b: b.quantity, book, q)


_span_linear_terms = jax.jit(span_linear_terms)
_deribit_linear_terms = jax.jit(deribit_linear_terms)


@jax.jit
def _span_totals(book, params, Q):
    return jax.vmap(lambda q: span_margin(_with_quantities(book, q), params).total)(Q)


@jax.jit
def _deribit_initials(book, params, Q):
    return jax.vmap(lambda q: deribit_margin(_with_quantities(book, q), params).initial)(Q)


def _span_program(book, params, q0, rows) -> tuple[Program, np.ndarray]:
    """SPAN's linear part: per underlying, max(0, risk array) and |spot-month delta| x rate; minus NOV."""
    lt = jax.tree_util.tree_map(np.asarray, _span_linear_terms(book, params))
    und = np.asarray(book.underlying)
    terms = []
    for u in range(len(UNDERLYINGS)):
        mine = und == u
        ra = lt.risk_array * mine[None, :]
        terms.append(Term(1.0, ra @ q0, ra[:, rows], 0.0))
        near = lt.near_delta * mine
        if lt.spot_charge_rate[u] > 0 and near[rows].any():
            d0, d = float(near @ q0), near[rows]
            terms.append(Term(float(lt.spot_charge_rate[u]), np.array([d0, -d0]), np.stack([d, -d]), 0.0))
    v = lt.option_value
    # total + premium = max(risk - NOV_0 - v x, 0) + v x: outer >= risk - NOV_0 - v x, outer >= 0, plus h = v
    return Program(terms, -float(v @ q0), -v[rows], v[rows], 0.0), v[rows]


def _deribit_program(book, params, q0, rows) -> Program:
    """The Deribit grid's linear part: per pool, the worst case of both tables; per expiry group, the roll shock."""
    lt = jax.tree_util.tree_map(np.asarray, _deribit_linear_terms(book, params))
    terms = []
    for p in range(lt.to_margin.size):
        mine = lt.pool == p
        if not (mine[rows].any() or (q0[mine] != 0).any()):
            continue
        loss = -np.concatenate([lt.standard, lt.extended], axis=1).T * mine[None, :]  # (s + e, n)
        shift = np.concatenate([np.zeros(lt.standard.shape[1]), -lt.dampener[p]])
        terms.append(Term(float(lt.to_margin[p]), loss @ q0 + shift, loss[:, rows], 0.0))
    for g in np.unique(lt.roll_group):
        mine = lt.roll_group == g
        if not (mine[rows].any() or (q0[mine] != 0).any()) or lt.roll_rate[g] <= 0:
            continue
        d = lt.delta * mine
        weight = float(lt.roll_rate[g] * lt.to_margin[lt.pool[g]])
        terms.append(Term(weight, np.array([d @ q0, -(d @ q0)]), np.stack([d[rows], -d[rows]]), 0.0))
    J = len(rows)
    return Program(terms, 0.0, np.zeros(J), np.zeros(J), None)


def _var_program(book, params, q0, rows, devices) -> Program:
    """ES over the run's own paths: each row's loss per coin on every path (full revaluation)."""
    s = params.settings
    ones = _with_quantities(book, jnp.ones_like(book.quantity))
    chunk = s.chunk or auto_chunk(book.size, book.quantity.dtype, devices)
    outs, valid = montecarlo.map_paths(path_position_losses, params.model, ones, params.scenario, s.seed,
                                       np.arange(s.paths, dtype=np.uint32), chunk, devices, False, "")
    per_coin = np.concatenate([np.asarray(o, np.float64)[:v] for o, v in zip(outs, valid)])  # (N, n)
    J = len(rows)
    return Program([], 0.0, np.zeros(J), np.zeros(J), None,
                    ru=(per_coin @ q0, np.ascontiguousarray(per_coin[:, rows]), tail_size(s.paths, s.confidence)))


# ------------------------------------------------------------------------------------------ polish

def _moves(x, step, free, lot):
    """The polish's trial points and, per point, the contract whose step it took (-1: none): +-step on each free
    contract, each trade dropped, all trades scaled by 1 +- 1/8, and +-step on two traded contracts at once
    (the exact margin's kinks make valleys that single-axis steps cannot follow)."""
    moves, which = [], []
    for j in np.flatnonzero(free):
        for sgn in (1.0, -1.0):
            y = x.copy()
            y[j] += sgn * step[j]
            moves.append(y)
            which.append(j)
        if x[j] != 0:
            y = x.copy()
            y[j] = 0.0
            moves.append(y)
            which.append(-1)
    traded = np.flatnonzero(free & (x != 0))
    if len(traded) <= PAIR_MOVES_UP_TO:
        for a, b in itertools.combinations(traded, 2):
            for sa, sb in itertools.product((1.0, -1.0), repeat=2):
                y = x.copy()
                y[a] += sa * step[a]
                y[b] += sb * step[b]
                moves.append(y)
                which.append(-1)
    if (x != 0).any() and not lot:
        moves += [x * 1.125, x * 0.875]
        which += [-1, -1]
    if lot:
        moves = [np.round(y / lot) * lot for y in moves]
    return moves, which


def _polish(evaluate, x, *, bound, notional, max_notional, max_trades, lot, base_step, free):
    """Pattern search on the exact objective ``evaluate(X (B, J)) -> (B,)`` from x: each iteration evaluates the
    ``_moves`` in one batch, takes the best improvement (doubling that contract's step) or halves every step.
    Returns (x, f(x), iterations, evaluations)."""
    fx = float(evaluate(x[None, :])[0])
    step = np.where(x != 0, np.maximum(POLISH_START * np.abs(x), base_step * 0.01), base_step * POLISH_START)
    min_step = np.full(x.size, lot) if lot else base_step * POLISH_MIN_STEP
    if lot:
        step = np.maximum(np.round(step / lot), 1.0) * lot
    iterations = evaluations = 0
    while iterations < POLISH_ITERATIONS:
        iterations += 1
        moves, which = _moves(x, step, free, lot)
        keep = [i for i, y in enumerate(moves)
                if np.all(np.abs(y) <= bound * (1 + 1e-12))
                and (max_notional is None or float(notional @ np.abs(y)) <= max_notional * (1 + 1e-12))
                and (max_trades is None or int(np.count_nonzero(y)) <= max_trades)]
        if not keep:
            break
        Y = np.stack([moves[i] for i in keep])
        fy = evaluate(Y)
        evaluations += len(keep)
        best = int(np.argmin(fy))
        if fy[best] < fx - POLISH_GAIN * abs(fx):
            x, fx = Y[best], float(fy[best])
            if which[keep[best]] >= 0:
                step[which[keep[best]]] *= 2.0
        elif np.all(step <= min_step * (1 + 1e-9)):
            break
        else:
            step = np.maximum(step * 0.5, min_step)
            if lot:
                step = np.maximum(np.round(step / lot), 1.0) * lot
    # dust: the walk leaves crumbs where the exact objective is nearly flat (cents of SPAN's tier netting); a trade
    # under DUST_SIZE of the book's gross is dropped (smallest first) when that costs at most DUST of the objective
    for j in sorted(np.flatnonzero((x != 0) & (np.abs(x) < DUST_SIZE * base_step)), key=lambda j: abs(x[j])):
        y = x.copy()
        y[j] = 0.0
        fy = float(evaluate(y[None, :])[0])
        evaluations += 1
        if fy <= fx + DUST * abs(fx):
            x, fx = y, fy
    return x, fx, iterations, evaluations


def _without_crumbs(evaluate, x, fx, report, **kw):
    """The polish can leave crumbs (trades under CRUMB of the book's gross) tuning a kink of the exact margin; drop
    them, polish the other trades again, and keep that when it is no worse than DUST of the objective."""
    crumbs = (x != 0) & (np.abs(x) < CRUMB * kw["base_step"])
    if not crumbs.any() or not (x[~crumbs] != 0).any():
        return x, fx
    y, fy, its, evals = _polish(evaluate, np.where(crumbs, 0.0, x), free=(x != 0) & ~crumbs, **kw)
    report["iterations"] += its
    report["evaluations"] += evals
    if fy <= fx + DUST * abs(fx):
        report["crumbs_dropped"] = int(crumbs.sum())
        return y, fy
    return x, fx


def _batched(fn, book, params, q0, rows, extra, size: int):
    """evaluate(X (B, J)) -> (B,): ``fn`` on the book with q0 + the trades, plus ``extra(X)``; the batch is
    padded (or cut) to ``size`` rows so that one shape compiles."""
    def evaluate(X):
        X = np.atleast_2d(np.asarray(X, np.float64))
        out = []
        for lo in range(0, X.shape[0], size):
            part = X[lo:lo + size]
            Q = np.repeat(q0[None, :], size, axis=0)
            Q[:part.shape[0], rows] += part
            out.append(np.asarray(fn(book, params, jnp.asarray(Q, book.quantity.dtype)), np.float64)[:part.shape[0]])
        return np.concatenate(out) + extra(X)
    return evaluate


# ------------------------------------------------------------------------------------------ the hedge

@dataclasses.dataclass
class _Setup:
    """The request in arrays over the candidates (margin currency per coin; coins)."""

    methods: list[str]
    candidates: list[Instrument]
    config: dict
    notional: np.ndarray  # margin currency per coin traded
    bound: np.ndarray  # largest trade, coins
    cost: np.ndarray  # trading cost per coin
    base_step: np.ndarray  # the book's gross notional in coins of each contract's underlying
    notices: list[str]


def _setup(portfolio, market, config, methods, instruments, max_notional, cost_bps, lot, dtype) -> _Setup:
    notices = []
    candidates = candidate_instruments(market, instruments)
    cur = portfolio.margin_currency
    coin_usd = 1.0 if cur == "USD" else market.spot(cur)
    if "var" in methods and any(c.is_option for c in candidates):
        candidates, note = _var_option_shortlist(portfolio, market, config, candidates, dtype)
        notices.append(note)
    spot = np.array([market.spot(c.underlying) for c in candidates])
    notional = spot / coin_usd
    if lot and max_notional is not None and max_notional < float(np.min(notional)) * lot:
        raise InputError(f"{max_notional:g} {cur} is less than one lot of any candidate (the smallest: "
                         f"{float(np.min(notional)) * lot:,.6g} {cur}); no trade fits", source="--max-notional")
    held_usd = sum(abs(p.quantity) * market.spot(p.instrument.underlying) for p in portfolio.positions)
    base_step = max(held_usd, float(np.max(spot))) / spot
    bound = BOUND_MULTIPLE * base_step
    if max_notional is not None:
        bound = np.minimum(bound, max_notional / notional)
    return _Setup(methods, candidates, config, notional, bound, cost_bps * 1e-4 * notional, base_step, notices)


def _programs(portfolio, market, st: _Setup, dtype, devices):
    """(programs, [(method, params, program)], SPAN's option value per coin of each candidate (0 without span))."""
    book, rows = extended_book(portfolio, market, st.candidates, dtype=dtype)
    q0 = np.asarray(book.quantity, np.float64)
    programs, evaluators, premium = [], [], np.zeros(len(rows))
    for m in st.methods:
        if m == "span":
            params = span_params(st.config, dtype=dtype)
            prog, premium = _span_program(book, params, q0, rows)
        elif m == "deribit":
            params = deribit_params(st.config, dtype=dtype)
            prog = _deribit_program(book, params, q0, rows)
        else:
            params = var_params(st.config, market=market, dtype=dtype, historical=False)
            prog = _var_program(book, params, q0, rows, devices)
        programs.append(prog)
        evaluators.append((m, params, prog))
    return programs, evaluators, premium


def _linear_solution(programs, market, st: _Setup, max_notional, max_trades, lot):
    """The program's solution (rounded to ``lot``) and the solver's report."""
    J = len(st.candidates)
    f0 = max(prog.value(np.zeros(J)) for prog in programs)  # the linear part of the book as it is: the scale
    scale = abs(f0) if f0 != 0 else 1.0
    # a tie-break cost of about TIE_BREAK of the objective per book-gross of trading picks, among equally good
    # solutions, the one that trades least, perpetuals before futures (nearer first) before options (the
    # program is often degenerate: SPAN's maxima tie, and every future of an underlying has the same scan)
    preference = np.array([1.0 + (market.years_to(c.expiry) if c.expiry is not None else 0.0) + c.is_option
                           for c in st.candidates])
    x, lp = solve(programs, cost=st.cost + TIE_BREAK * scale * preference / st.base_step, bound=st.bound,
                  notional=st.notional, max_notional=max_notional, max_trades=max_trades, scale=scale)
    lp["objective_at_solution"] = max(prog.value(x) for prog in programs) + float(np.abs(x) @ st.cost)
    if np.any(np.abs(x) >= st.bound * (1 - 1e-9)):
        st.notices.append(f"a trade reached its bound ({BOUND_MULTIPLE:g}x the book's gross notional): the margin "
                          "keeps falling with size there; check the result")
    if lot:
        x = np.round(x / lot) * lot
        while max_notional is not None and float(st.notional @ np.abs(x)) > max_notional and np.any(x):
            j = int(np.argmax(np.abs(x) * st.notional))  # rounding up broke the cap
            x[j] -= np.sign(x[j]) * lot
    return x, lp


def _exact_objective(portfolio, market, st: _Setup, evaluators, premium, F, dtype):
    """evaluate(X (B, |F|)) -> (B,): the largest method's exact objective plus cost, for trades of the contracts
    F, on a compact book of the held positions and those contracts."""
    J = len(st.candidates)
    parts = []
    cbook = crows = None
    for m, params, prog in evaluators:
        if m == "var":  # ES over the fixed paths is the program itself
            parts.append(lambda XF, prog=prog: np.array([prog.value(x_) for x_ in _expand(XF, F, J)]))
            continue
        if cbook is None:
            cbook, crows = extended_book(portfolio, market, [st.candidates[j] for j in F], dtype=dtype)
        fn = _span_totals if m == "span" else _deribit_initials
        extra = (lambda X: X @ premium[F]) if m == "span" else (lambda X: np.zeros(X.shape[0]))
        parts.append(_batched(fn, cbook, params, np.asarray(cbook.quantity, np.float64), crows, extra,
                              bucket_size(3 * len(F) + 2, minimum=8)))

    def evaluate(XF):
        XF = np.atleast_2d(XF)
        return np.max(np.stack([part(XF) for part in parts]), axis=0) + np.abs(XF) @ st.cost[F]
    return evaluate


def hedge(portfolio: Portfolio, market: Market, config: dict | None = None, *, method: str = "span",
          instruments=DEFAULT_INSTRUMENTS, max_trades: int | None = None, max_notional: float | None = None,
          cost_bps: float = 0.0, lot: float | None = None, compare=("rules", "span", "deribit"),
          dtype=jnp.float64, paths: int | None = None, seed: int | None = None, confidence: float | None = None,
          devices=None, polish: bool = True) -> HedgeResult:
    """The trades over ``instruments`` (kinds or contract names, ``candidate_instruments``) that minimise
    ``method``'s objective (module docstring; several methods joined by commas: the largest of them) subject to at
    most ``max_trades`` contracts traded and a gross notional of at most ``max_notional`` (margin currency);
    ``before``/``after`` (``pmjax margin``'s figures) for the methods and ``compare``."""
    methods = check_request(method, max_trades, max_notional, cost_bps, lot)
    scipy_modules()  # fail early, saying how to install
    config = load_config() if config is None else config
    overrides = {k: v for k, v in (("paths", paths), ("seed", seed), ("confidence", confidence)) if v is not None}
    if overrides:  # the run the hedge minimises is the one ``after`` reports
        config = {**config, "var": {**config.get("var", {}), **overrides}}
    st = _setup(portfolio, market, config, methods, instruments, max_notional, cost_bps, lot, dtype)
    programs, evaluators, premium = _programs(portfolio, market, st, dtype, devices)
    x, lp = _linear_solution(programs, market, st, max_notional, max_trades, lot)

    # the exact objective and the polish, over every candidate when they are few (else the traded ones)
    J = len(st.candidates)
    everything = J <= 64 and (max_trades is None or np.count_nonzero(x) < max_trades)
    F = np.arange(J) if everything else np.flatnonzero(x)
    evaluate = _exact_objective(portfolio, market, st, evaluators, premium, F, dtype)
    f0 = float(evaluate(np.zeros((1, len(F))))[0])
    xF = x[F]
    fx = lp["exact_objective"] = float(evaluate(xF[None, :])[0])
    report = {"iterations": 0, "evaluations": 0, "objective_before": fx, "contracts": len(F)}
    if polish and len(F) and not (st.methods == ["var"] and not lot):  # var alone: the program is the objective
        kw = dict(bound=st.bound[F], notional=st.notional[F], max_notional=max_notional, max_trades=max_trades,
                  lot=lot, base_step=st.base_step[F])
        xF, fx, report["iterations"], report["evaluations"] = _polish(evaluate, xF, free=np.ones(len(F), bool), **kw)
        xF, fx = _without_crumbs(evaluate, xF, fx, report, **kw)
    report["objective_after"] = fx
    x = _expand(xF[None, :], F, J)[0]
    if fx >= f0:
        x = np.zeros_like(x)
        st.notices.append(f"no trade of the {J} candidates lowers the {','.join(methods)} objective: no hedge "
                          "proposed")
    return _result(portfolio, market, st, x, premium, compare, lp, report, dtype,
                   {"instruments": list(instruments) if not isinstance(instruments, str) else instruments.split(","),
                    "max_trades": max_trades, "max_notional": max_notional, "cost_bps": cost_bps, "lot": lot})


def _result(portfolio, market, st: _Setup, x, premium, compare, lp, report, dtype, constraints) -> HedgeResult:
    """The trades, and before/after by ``pmjax margin``'s own functions on the book and the book plus the trades."""
    trades = [Position(st.candidates[j], float(x[j])) for j in np.flatnonzero(x)]
    hedged = portfolio.with_trades(trades)
    shown = list(dict.fromkeys([*st.methods, *compare]))
    before_doc = compute_margins(portfolio, market, st.config, shown, dtype=dtype)
    after_doc = compute_margins(hedged, market, st.config, shown, dtype=dtype) if trades else before_doc
    before = {m: float(HEADLINE[m](before_doc[m])) for m in shown}
    after = {m: float(HEADLINE[m](after_doc[m])) for m in shown}
    trade_cost = float(np.abs(x) @ st.cost)
    paid = float(x @ premium)
    objective = {"before": max(before[m] for m in st.methods),
                 "after": max(after[m] + (paid if m == "span" else 0.0) for m in st.methods) + trade_cost}
    return HedgeResult(",".join(st.methods), portfolio.margin_currency, trades, before, after, trade_cost, paid,
                       float(np.abs(x) @ st.notional), objective, st.candidates, constraints, lp, report, hedged,
                       st.notices)


def _expand(XF: np.ndarray, F: np.ndarray, J: int) -> np.ndarray:
    """(B, |F|) trades of the contracts F -> (B, J), zero elsewhere."""
    X = np.zeros((XF.shape[0], J))
    X[:, F] = XF
    return X


def _var_option_shortlist(portfolio, market, config, candidates, dtype):
    """Futures and perpetuals of ``candidates`` plus the ``VAR_OPTION_CANDIDATES`` options whose purchase (half)
    and sale (half) lower ES most by the marginal map."""
    options = [c for c in candidates if c.is_option]
    keep = [c for c in candidates if not c.is_option]
    if len(options) <= VAR_OPTION_CANDIDATES:
        return candidates, f"var: all {len(options)} options are candidates"
    hmap = hedge_map(portfolio, market, config, methods=("var",), dtype=dtype)
    rate = dict(zip(hmap.instruments, hmap.marginal["var"]))
    by_rate = sorted(options, key=lambda c: rate[c])
    half = VAR_OPTION_CANDIDATES // 2
    chosen = set(by_rate[:half] + by_rate[-half:])
    keep += [c for c in options if c in chosen]
    return keep, (f"var: {len(chosen)} of {len(options)} options are candidates, those whose purchase or sale "
                  "lowers ES most by the marginal map")


def hedge_section(result: HedgeResult) -> dict:
    """SPEC section 7's ``pmjax hedge --json`` document (``method``, ``trades``, ``before``, ``after``, ``cost``)
    plus the currency, premium, notional, objective, constraints, candidates and the solver's report."""
    return {"method": result.method, "currency": result.currency,
            "trades": [{"instrument": t.instrument.name, "quantity": t.quantity} for t in result.trades],
            "before": result.before, "after": result.after, "cost": result.cost,
            "premium": result.premium, "notional": result.notional, "objective": result.objective,
            "constraints": result.constraints, "candidates": len(result.candidates), "lp": result.lp,
            "polish": result.polish, "notices": result.notices}
