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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.io import history
from pmjax.scenarios import montecarlo
from pmjax.core.book import Book, book_from_portfolio
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio, Position

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


# ---------------------------------------------------------------- Monte Carlo


@dataclasses.dataclass
class MonteCarloResult:
    """A Monte Carlo run: the loss of every path, its tail estimate and per-position ES contributions."""

    losses: np.ndarray
    estimate: TailEstimate
    contributions: np.ndarray  # per book row (padding rows 0)
    spec: montecarlo.ModelSpec
    params: montecarlo.ScenarioParams
    info: dict
    seed: int


#: on a CPU, path x position revaluations per compiled call: 2^22 (4,096 paths x 1,024 positions) ran
#: 10-15% faster than 16,384 or 65,536 paths on this project's 2-core CPU (float32 and float64), the
#: intermediates staying nearer the cache; at most 65,536 paths a call
CPU_REVALUATIONS_PER_CALL = 1 << 22
CPU_CHUNK_CAP = 1 << 16
#: an accelerator keeps more paths in flight
AUTO_CHUNK_CAP_ACCELERATOR = 1 << 20


def auto_chunk(rows: int, dtype, devices=None) -> int:
    """``var.chunk: auto``: paths per compiled call for a ``rows``-row book: the largest power of two whose
    estimated footprint (``pmjax.sharding.mc_chunk``) fits a quarter of the memory free now, capped on a
    CPU at ``CPU_REVALUATIONS_PER_CALL / rows`` (and 65,536) paths, on an accelerator at 2^20. The figures
    do not depend on it (paths are drawn per index)."""
    import jax

    from pmjax.batch.sharding import mc_chunk

    devices = list(devices) if devices is not None else jax.local_devices()
    if devices[0].platform == "cpu":
        cap = min(CPU_CHUNK_CAP, 1 << max(0, (CPU_REVALUATIONS_PER_CALL // max(rows, 1)).bit_length() - 1))
        cap = max(cap, len(devices))
    else:
        cap = AUTO_CHUNK_CAP_ACCELERATOR
    return mc_chunk(rows, dtype, n_devices=len(devices), cap=cap)


def monte_carlo(book: Book, market: Market, settings: montecarlo.VarSettings, *, devices=None,
                model=None) -> MonteCarloResult:
    """Simulate ``settings.paths`` paths of ``book`` and estimate VaR/ES with ES contributions.

    ``model``: a (spec, params, info) triple from ``montecarlo.build_model`` to reuse (e.g. the same
    model for a what-if book); built from ``market`` and ``settings`` when None.
    """
    dtype = book.quantity.dtype
    spec, params, info = model if model is not None else montecarlo.build_model(market, settings, dtype=dtype)
    chunk = settings.chunk or auto_chunk(book.size, dtype, devices)
    losses = montecarlo.simulate_losses(book, spec, params, paths=settings.paths, seed=settings.seed,
                                        chunk=chunk, devices=devices, progress=settings.progress)
    est = var_es(losses, settings.confidence)
    _, parts = montecarlo.tail_allocation(book, spec, params, seed=settings.seed, indices=est.tail,
                                          chunk=chunk, devices=devices)
    return MonteCarloResult(losses, est, parts, spec, params, info, settings.seed)


# ---------------------------------------------------------------- historical simulation


@dataclasses.dataclass
class HistoricalResult:
    """Historical simulation: each day's joint moves applied to today's book."""

    dates: np.ndarray
    losses: np.ndarray
    estimate: TailEstimate
    contributions: np.ndarray


def historical(book: Book, market: Market, settings: montecarlo.VarSettings, params=None) -> HistoricalResult:
    """VaR/ES from the actual joint h-day moves of BTC and ETH closes and of their DVOL (log changes;
    overlapping windows for h > 1) over the history window, applied to today's book (no random draws).

    Each day's DVOL log change shifts the underlying's smile by atm_vol (exp(change) - 1); days without
    DVOL (before 2021-03-24) are not used. ``params``: the scenario model's arrays (for atm_vol and the
    vol floor); built from the market when None.
    """
    if params is None:
        _, params, _ = montecarlo.build_model(market, dataclasses.replace(settings, model="normal"),
                                              dtype=book.quantity.dtype)
    h = settings.horizon_days
    if h != int(h):
        raise ValueError(f"historical simulation needs a whole number of days, got {h}")
    start, end = montecarlo.history_window(settings, market)
    us = montecarlo.UNDERLYINGS
    joint = history.bundled_joint_returns(us, h=int(h), start=start, end=end, dvol=True)
    returns, vol_changes = joint.values[:, : len(us)], joint.values[:, len(us):]
    if not settings.vol_moves:
        vol_changes = np.zeros_like(vol_changes)
    shocks = montecarlo.historical_shocks(book, params, returns, vol_changes, h)
    losses = montecarlo.explicit_losses(book, shocks)
    est = var_es(losses, settings.confidence)
    _, parts = montecarlo.explicit_tail_allocation(book, shocks, est.tail)
    return HistoricalResult(joint.dates, losses, est, parts)


# ---------------------------------------------------------------- report


def _figures(est: TailEstimate, contributions: np.ndarray, n_positions: int) -> dict:
    return {"var": est.var, "es": est.es, "var_stderr": est.var_stderr, "es_stderr": est.es_stderr,
            "tail_size": est.k, "contributions": [float(c) for c in contributions[:n_positions]]}


def var_report(portfolio: Portfolio, market: Market, config: dict | None = None, *, paths: int | None = None,
               seed: int | None = None, confidence: float | None = None, dtype=jnp.float64, devices=None,
               progress: bool | None = None, historical_simulation: bool | None = None) -> dict:
    """The SPEC section 3 ``var`` document for one account.

    ``config``: the merged configuration (``pmjax.config.load_config``), its ``var`` section and
    ``horizon_days``; ``paths``, ``seed``, ``confidence`` override it when given. Keys: model,
    confidence, horizon_days, paths, seed, var, es, var_stderr, es_stderr, contributions (per position
    of ``portfolio``, in order, summing to es), and also currency, tail_size, nu (student_t),
    antithetic, scenario (the model's inputs: vols, vol of vol, correlations, history window),
    pnl_quantiles and pnl_histogram (P&L, gain positive) and historical (historical simulation:
    days, start, end, var, es, var_stderr, es_stderr, contributions, worst_days).
    """
    settings = montecarlo.var_settings(config, paths=paths, seed=seed, confidence=confidence, progress=progress)
    book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    n_pos = len(portfolio.positions)
    model = montecarlo.build_model(market, settings, dtype=dtype)
    mc = monte_carlo(book, market, settings, devices=devices, model=model)
    doc = {"model": settings.model, "confidence": settings.confidence, "horizon_days": settings.horizon_days,
           "paths": settings.paths, "seed": settings.seed, **_figures(mc.estimate, mc.contributions, n_pos),
           "currency": portfolio.margin_currency, "antithetic": settings.antithetic}
    if settings.horizon_days == int(settings.horizon_days):
        doc["horizon_days"] = int(settings.horizon_days)
    if settings.model == "student_t":
        doc["nu"] = settings.nu
    doc["scenario"] = mc.info
    doc["pnl_quantiles"] = pnl_quantiles(mc.losses)
    doc["pnl_histogram"] = pnl_histogram(mc.losses)
    run_hs = settings.historical if historical_simulation is None else historical_simulation
    if run_hs and settings.horizon_days == int(settings.horizon_days):
        hs = historical(book, market, settings, params=mc.params)
        worst = hs.estimate.tail[: min(5, hs.estimate.k)]
        doc["historical"] = {"days": len(hs.losses), "start": str(hs.dates[0]), "end": str(hs.dates[-1]),
                             **_figures(hs.estimate, hs.contributions, n_pos),
                             "worst_days": [{"date": str(hs.dates[i]), "loss": float(hs.losses[i])} for i in worst]}
    return doc


# ---------------------------------------------------------------- memory footprint


def synthetic_options_portfolio(market: Market, n_options: int = 100, *, seed: int = 0) -> Portfolio:
    """``n_options`` distinct listed BTC and ETH options of ``market`` (inverse, every listed expiry and
    strike within 30% of the forward), with random long and short quantities: a stand-in desk book."""
    from pmjax.core.instruments import Instrument
    from pmjax.core.portfolio import make_portfolio

    rng = np.random.default_rng(seed)
    listed = []
    for u in ("BTC", "ETH"):
        listed += [(u, e, k) for e, k in market.listed_strikes(u, 0.3)]
    if len(listed) * 2 < n_options:
        raise ValueError(f"the market lists {len(listed)} strikes near the money; need {n_options // 2}")
    picks = rng.choice(len(listed) * 2, size=n_options, replace=False)
    positions = []
    for p in picks:
        u, e, k = listed[p // 2]
        qty = float(rng.choice([-1.0, 1.0]) * rng.integers(1, 10) * (1.0 if u == "BTC" else 10.0))
        positions.append(Position(Instrument(u, "option", "inverse", e, k, "call" if p % 2 else "put"), qty))
    return make_portfolio(positions, account=f"synthetic-{n_options}-options", source="synthetic")


def measure_footprint(paths: int = 1_000_000, n_options: int = 100, *, chunk: int = 65_536,
                      model: str = "student_t", dtype=jnp.float64, market: Market | None = None) -> dict:
    """Run ``paths`` Monte Carlo paths of a ``n_options``-option book in chunks on the default device and
    report the process's peak resident memory (``resource.getrusage``, MiB) before and after, the
    wall time (compile included, and a second timed run) and revaluations per second."""
    import resource
    import time

    from pmjax.io.market import load_market

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB

    market = market or load_market()
    portfolio = synthetic_options_portfolio(market, n_options)
    settings = montecarlo.var_settings({"var": {"model": model, "paths": paths, "chunk": chunk,
                                                "historical": False}})
    book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
    before = peak_mib()
    t0 = time.perf_counter()
    losses = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk, progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk, progress=False)
    second = time.perf_counter() - t0
    est = var_es(losses, settings.confidence)
    return {"paths": paths, "options": n_options, "book_rows": book.size, "chunk": chunk, "model": model,
            "dtype": str(jnp.dtype(dtype)), "device": str(jax.devices()[0]),
            "peak_rss_mib_before": round(before, 1), "peak_rss_mib": round(peak_mib(), 1),
            "seconds_first_run": round(first, 2), "seconds": round(second, 2),
            "revaluations_per_s": paths * n_options / second, "es": est.es, "var": est.var}


if __name__ == "__main__":  # python -m pmjax.var [paths] [options] [chunk]
    import json
    import sys

    args = [int(a) for a in sys.argv[1:4]]
    print(json.dumps(measure_footprint(*args[:2], **({"chunk": args[2]} if len(args) > 2 else {})), indent=1))
