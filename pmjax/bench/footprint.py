"""Monte Carlo memory footprint: ``python -m pmjax.bench.footprint [paths] [options] [chunk]`` runs
``paths`` paths of a synthetic ``options``-option book in chunks and prints peak RSS and timings (JSON)."""

from __future__ import annotations

import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import book_from_portfolio
from pmjax.core.instruments import Instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio, Position, make_portfolio
from pmjax.io.market import load_market
from pmjax.measures.var import var_es
from pmjax.scenarios import montecarlo


def synthetic_options_portfolio(market: Market, n_options: int = 100, *, seed: int = 0) -> Portfolio:
    """``n_options`` distinct listed BTC and ETH options of ``market`` (inverse, every listed expiry and
    strike within 30% of the forward), with random long and short quantities: a stand-in desk book."""
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


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def measure_footprint(paths: int = 1_000_000, n_options: int = 100, *, chunk: int = 65_536,
                      model: str = "student_t", dtype=jnp.float64, market: Market | None = None) -> dict:
    """Run ``paths`` Monte Carlo paths of a ``n_options``-option book in chunks on the default device and
    report the process's peak resident memory (``resource.getrusage``, MiB) before and after, the
    wall time (compile included, and a second timed run) and revaluations per second."""
    market = market or load_market()
    portfolio = synthetic_options_portfolio(market, n_options)
    settings = montecarlo.var_settings({"var": {"model": model, "paths": paths, "chunk": chunk,
                                                "historical": False}})
    book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
    before = _peak_mib()
    t0 = time.perf_counter()
    losses = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk, progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk, progress=False)
    second = time.perf_counter() - t0
    est = var_es(losses, settings.confidence)
    return {"paths": paths, "options": n_options, "book_rows": book.size, "chunk": chunk, "model": model,
            "dtype": str(jnp.dtype(dtype)), "device": str(jax.devices()[0]),
            "peak_rss_mib_before": round(before, 1), "peak_rss_mib": round(_peak_mib(), 1),
            "seconds_first_run": round(first, 2), "seconds": round(second, 2),
            "revaluations_per_s": paths * n_options / second, "es": est.es, "var": est.var}


def main(argv=None) -> int:
    """``python -m pmjax.bench.footprint [paths] [options] [chunk]``: the footprint as JSON on stdout."""
    jax.config.update("jax_enable_x64", True)
    args = [int(a) for a in (sys.argv[1:] if argv is None else argv)[:3]]
    print(json.dumps(measure_footprint(*args[:2], **({"chunk": args[2]} if len(args) > 2 else {})), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
