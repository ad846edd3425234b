"""Value at risk and expected shortfall of a portfolio's loss, by Monte Carlo and by historical simulation.

Losses are positive, in the portfolio's margin currency, over ``horizon_days``. From n losses with
confidence a, let k = ceil(n (1 - a)) (at least 1) and L(1) >= L(2) >= ... the losses sorted worst first:

- VaR = L(k), the smallest loss of the tail;
- ES = (1/k) sum_{i<=k} L(i), the mean of the k worst losses.

Standard errors (i.i.d. paths; with antithetic pairs they are conservative, as a pair rarely puts
both paths in the same tail):

- VaR: the order-statistic asymptotic sd sqrt(a (1 - a) / n) / f(VaR), with the loss density f
  estimated from the spacing of order statistics around the quantile,
  f ~= 2m / (n (L(k-m) - L(k+m))) with m = ceil(sqrt(k)) (clipped to the sample);
- ES: sqrt((s_tail^2 + a (ES - VaR)^2) / k) where s_tail^2 is the sample variance of the k tail
  losses (the asymptotic variance of the tail-mean estimator, e.g. Brazauskas et al. 2008).

Contributions (Euler allocation): with the tail paths held fixed, ES is linear in the quantities,
so contribution_j = q_j dES/dq_j (by autodiff) = the mean of position j's loss over the tail paths,
and the contributions sum to ES; a hedge (a position that gains when the book loses) has a negative one.

Formulas: docs/methodology.md section 7 (7.6 VaR, ES and their standard errors; 7.7 contributions; 7.8
historical simulation); the scenarios come from ``pmjax.scenarios.montecarlo`` and ``historical``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pmjax.batch.sharding import mc_chunk
from pmjax.core.book import Book
from pmjax.core.market import Market
from pmjax.core.precision import check_dtype
from pmjax.scenarios import montecarlo, tail_screen
from pmjax.scenarios.historical import HistoricalScenarios, historical_scenarios, scenario_losses, \
    scenario_tail_allocation
from pmjax.scenarios.mc_models import ScenarioModel, ScenarioParams

PNL_PROBABILITIES = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)


@dataclasses.dataclass(frozen=True)
class TailEstimate:
    """VaR and ES of a loss sample with standard errors; ``tail`` holds the indices of the k worst losses."""

    confidence: float
    n: int
    k: int
    var: float
    es: float
    var_stderr: float
    es_stderr: float
    tail: np.ndarray


def tail_size(n: int, confidence: float) -> int:
    """k = ceil(n (1 - a)), at least 1 (a tiny tolerance keeps 10^6 x 0.01 at exactly 10^4)."""
    return max(1, min(n, math.ceil(n * (1.0 - confidence) - 1e-9)))


def var_es(losses, confidence: float = 0.99) -> TailEstimate:
    """VaR, ES and their standard errors from a sample of losses (formulas in the module docstring)."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n == 0:
        raise ValueError("no losses")
    a = float(confidence)
    k = tail_size(n, a)
    order = np.argsort(-losses, kind="stable")  # worst first; ties keep path order (deterministic)
    worst = losses[order]
    tail = worst[:k]
    var = float(tail[-1])
    es = float(tail.mean())
    m = math.ceil(math.sqrt(k))
    lo, hi = max(0, k - 1 - m), min(n - 1, k - 1 + m)
    spread = float(worst[lo] - worst[hi])  # loss range over (hi - lo) / n of probability
    var_sd = spread * n / max(hi - lo, 1) * math.sqrt(a * (1.0 - a) / n) if hi > lo else 0.0
    tail_var = float(tail.var(ddof=1)) if k > 1 else 0.0
    es_sd = math.sqrt((tail_var + a * (es - var) ** 2) / k)
    return TailEstimate(a, n, k, var, es, var_sd, es_sd, order[:k].copy())


def pnl_quantiles(losses, probabilities: Sequence[float] = PNL_PROBABILITIES) -> dict[str, float]:
    """Quantiles of the P&L (= -loss, gain positive) at the given probabilities, keyed by probability."""
    pnl = -np.asarray(losses, dtype=np.float64)
    return {f"{p:g}": float(q) for p, q in zip(probabilities, np.quantile(pnl, probabilities))}


def pnl_histogram(losses, bins: int = 80, tail: float = 2e-4) -> dict:
    """Histogram of the P&L (gain positive) for plots: bin ``edges`` and ``counts``.

    ``bins`` equal bins span the ``tail`` .. 1 - ``tail`` quantiles (the body a plot shows); one wide bin
    on each side holds the far tails, so ``edges[0]`` and ``edges[-1]`` are the worst and best paths and
    the counts sum to the number of paths."""
    pnl = -np.asarray(losses, dtype=np.float64)
    lo, hi = np.quantile(pnl, (tail, 1.0 - tail))
    worst, best = float(pnl.min()), float(pnl.max())
    if not hi > lo:  # (nearly) constant P&L: plain equal bins over the whole range
        counts, edges = np.histogram(pnl, bins=bins)
        return {"edges": edges.tolist(), "counts": counts.tolist()}
    inner = np.linspace(lo, hi, bins + 1)
    edges = np.concatenate([[worst] if worst < lo else [], inner, [best] if best > hi else []])
    counts, _ = np.histogram(pnl, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


#: on a CPU, path x position revaluations per compiled call: 2^22 (4,096 paths x 1,024 positions) ran
#: 10-15% faster than 16,384 or 65,536 paths on this project's 2-core CPU (float32 and float64), the
#: intermediates staying nearer the cache; at most 65,536 paths a call
CPU_REVALUATIONS_PER_CALL = 1 << 22
CPU_CHUNK_CAP = 1 << 16
#: an accelerator keeps more paths in flight
AUTO_CHUNK_CAP_ACCELERATOR = 1 << 20


def auto_chunk(rows: int, dtype, devices=None) -> int:
    """``var.chunk: auto``: paths per compiled call for a ``rows``-row book: the largest power of two whose
    estimated footprint (``pmjax.batch.sharding.mc_chunk``) fits a quarter of the memory free now, capped on a
    CPU at ``CPU_REVALUATIONS_PER_CALL / rows`` (and 65,536) paths, on an accelerator at 2^20. The figures
    do not depend on it (paths are drawn per index)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if devices[0].platform == "cpu":
        cap = min(CPU_CHUNK_CAP, 1 << max(0, (CPU_REVALUATIONS_PER_CALL // max(rows, 1)).bit_length() - 1))
        cap = max(cap, len(devices))
    else:
        cap = AUTO_CHUNK_CAP_ACCELERATOR
    return mc_chunk(rows, dtype, n_devices=len(devices), cap=cap)


# ---------------------------------------------------------------- the three doors


class HistoricalResult(eqx.Module):
    """Historical simulation: each day's joint moves applied to today's book."""

    dates: np.ndarray
    losses: np.ndarray
    estimate: TailEstimate = eqx.field(static=True)
    contributions: np.ndarray


class VarParams(eqx.Module):
    """Everything the VaR measure needs: the validated ``var`` config (``settings``), the Monte Carlo
    model (a jit-static strategy object) and its arrays, and the historical scenarios (None: not run)."""

    model: ScenarioModel = eqx.field(static=True)
    scenario: ScenarioParams
    info: dict = eqx.field(static=True)  # the model's inputs, JSON-able (the section's ``scenario``)
    settings: montecarlo.VarSettings = eqx.field(static=True)
    historical: HistoricalScenarios | None = None
    historical_dates: np.ndarray | None = None

    def __check_init__(self):
        s = self.settings
        if not 0.0 < s.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {s.confidence}")
        if s.paths < 1 or (s.chunk is not None and s.chunk < 1):
            raise ValueError(f"paths and chunk must be >= 1, got {s.paths}, {s.chunk}")
        if s.horizon_days <= 0:
            raise ValueError(f"horizon_days must be positive, got {s.horizon_days}")
        if self.model.name != s.model or self.model.antithetic != s.antithetic:
            raise ValueError(f"the model {self.model} does not match the config's {s.model!r}")
        if (self.historical is None) != (self.historical_dates is None):
            raise ValueError("historical scenarios need their dates")


def var_params(config: dict | None, *, market: Market, dtype=jnp.float64, paths: int | None = None,
               seed: int | None = None, confidence: float | None = None, progress=None,
               historical: bool | None = None) -> VarParams:
    """``config['var']`` and ``config['horizon_days']`` validated (``InputError`` naming the file and field;
    ``paths``, ``seed``, ``confidence``, ``progress`` override them when given) and the scenario model
    built for ``market``. ``historical``: run historical simulation (default ``var.historical``; only for a
    whole number of days)."""
    check_dtype(dtype)
    settings = montecarlo.var_settings(config, paths=paths, seed=seed, confidence=confidence, progress=progress)
    model, scenario, info = montecarlo.build_model(market, settings, dtype=dtype)
    run_hs = settings.historical if historical is None else historical
    dates = scenarios = None
    if run_hs and settings.horizon_days == int(settings.horizon_days):
        dates, scenarios = historical_scenarios(market, settings, scenario, dtype=dtype)
    return VarParams(model, scenario, info, settings, scenarios, dates)


class VarResult(eqx.Module):
    """A VaR run: the loss of every Monte Carlo path, its tail estimate, per-position ES contributions
    (per book row, padding rows 0) and the historical simulation (None when not run)."""

    losses: np.ndarray  # exact_tail: exact for the revalued paths (the tail among them), screened elsewhere
    estimate: TailEstimate = eqx.field(static=True)
    contributions: np.ndarray
    params: VarParams
    historical: HistoricalResult | None = None
    revaluation: dict = eqx.field(static=True, default_factory=dict)  # how the losses were computed


def tail_rank(paths: int, confidence: float) -> int:
    """How many of the largest losses ``var_es`` reads: the k of the tail plus the order statistics of the
    VaR standard error (k + ceil(sqrt(k)), one more for safety)."""
    k = tail_size(paths, confidence)
    return min(paths, k + math.ceil(math.sqrt(k)) + 1)


def var_margin(book: Book, params: VarParams, *, devices=None, moves: np.ndarray | None = None) -> VarResult:
    """Monte Carlo VaR/ES of ``book`` with ES contributions (``params.settings.paths`` paths, chunked and
    sharded over ``devices``, default every local device), and historical simulation when
    ``params.historical`` is set. ``var.revaluation: exact_tail`` (default) revalues in full only the paths
    that can be in the tail (``pmjax.scenarios.tail_screen``), with figures equal to ``full``'s; ``moves``: the
    paths' factor moves (``tail_screen.draw_moves``) when accounts share them. Formulas: docs/methodology.md
    sections 7.6-7.9."""
    s = params.settings
    chunk = s.chunk or auto_chunk(book.size, book.quantity.dtype, devices)
    if s.revaluation == "exact_tail":
        losses, report = tail_screen.exact_tail_losses(
            book, params.model, params.scenario, seed=s.seed, paths=s.paths, top=tail_rank(s.paths, s.confidence),
            chunk=chunk, devices=devices, progress=s.progress, moves=moves)
        revaluation = report.section()
    else:
        losses = montecarlo.simulate_losses(book, params.model, params.scenario, paths=s.paths, seed=s.seed,
                                            chunk=chunk, devices=devices, progress=s.progress)
        revaluation = {"mode": "full", "paths": s.paths, "paths_revalued": s.paths}
    est = var_es(losses, s.confidence)
    _, parts = montecarlo.tail_allocation(book, params.model, params.scenario, seed=s.seed, indices=est.tail,
                                          chunk=chunk, devices=devices)
    hs = None
    if params.historical is not None:
        hs = historical_simulation(book, params.historical, params.historical_dates, s.confidence)
    return VarResult(losses, est, parts, params, hs, revaluation)


def var_margin_accounts(books: Book, params: VarParams, *, devices=None) -> list[VarResult]:
    """``var_margin`` of every account of ``books`` (host arrays stacked on a leading accounts axis, padded to
    one bucket, so every account reuses the compiled code) on one shared set of paths, as a clearing house
    computes it: with ``exact_tail`` the paths' factor moves are drawn once and each account is screened on
    its own grids and revalued in full on its own tail. Each result equals ``var_margin`` of that account's
    book alone (the same padded size) exactly."""
    s = params.settings
    first = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], books)
    moves = None
    if s.revaluation == "exact_tail":
        chunk = s.chunk or auto_chunk(first.size, first.quantity.dtype, devices)
        moves = tail_screen.draw_moves(params.model, first, params.scenario, seed=s.seed, paths=s.paths,
                                       chunk=chunk, devices=devices, progress=False)
    return [var_margin(jax.tree_util.tree_map(lambda a, i=i: np.asarray(a)[i], books), params, devices=devices,
                       moves=moves) for i in range(np.asarray(books.quantity).shape[0])]


def historical_simulation(book: Book, scenarios: HistoricalScenarios, dates: np.ndarray,
                          confidence: float) -> HistoricalResult:
    """VaR/ES and contributions of ``book`` over the historical days (``pmjax.scenarios.historical``)."""
    losses = scenario_losses(book, scenarios)
    est = var_es(losses, confidence)
    _, parts = scenario_tail_allocation(book, scenarios, est.tail)
    return HistoricalResult(dates, losses, est, parts)


def _figures(est: TailEstimate, contributions: np.ndarray, n_positions: int) -> dict:
    return {"var": est.var, "es": est.es, "var_stderr": est.var_stderr, "es_stderr": est.es_stderr,
            "tail_size": est.k, "contributions": [float(c) for c in contributions[:n_positions]]}


def var_section(result: VarResult, *, n_positions: int, currency: str) -> dict:
    """The SPEC section 3 ``var`` document. Keys: model, confidence, horizon_days, paths, seed, var, es,
    var_stderr, es_stderr, tail_size, contributions (per position, the first ``n_positions`` book rows,
    summing to es), currency, antithetic, nu (student_t), scenario (the model's inputs), revaluation (mode,
    paths revalued in full, the screen's bound: ``tail_screen.ScreenReport``), pnl_quantiles and pnl_histogram
    (P&L, gain positive; with exact_tail, paths outside the revalued ones enter with their screened loss) and
    historical (days, start, end, the figures, worst_days)."""
    s = result.params.settings
    doc = {"model": s.model, "confidence": s.confidence, "horizon_days": s.horizon_days,
           "paths": s.paths, "seed": s.seed, **_figures(result.estimate, result.contributions, n_positions),
           "currency": currency, "antithetic": s.antithetic}
    if s.horizon_days == int(s.horizon_days):
        doc["horizon_days"] = int(s.horizon_days)
    if s.model == "student_t":
        doc["nu"] = s.nu
    doc["scenario"] = result.params.info
    doc["revaluation"] = dict(result.revaluation)
    doc["pnl_quantiles"] = pnl_quantiles(result.losses)
    doc["pnl_histogram"] = pnl_histogram(result.losses)
    hs = result.historical
    if hs is not None:
        worst = hs.estimate.tail[: min(5, hs.estimate.k)]
        doc["historical"] = {"days": len(hs.losses), "start": str(hs.dates[0]), "end": str(hs.dates[-1]),
                             **_figures(hs.estimate, hs.contributions, n_positions),
                             "worst_days": [{"date": str(hs.dates[i]), "loss": float(hs.losses[i])} for i in worst]}
    return doc
