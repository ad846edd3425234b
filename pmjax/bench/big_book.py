"""Bench rows ``margin_10k_positions_{rules,span,deribit}``: one market maker's account of ``big_book``
positions (10,000 in the medium and full presets; ``books.random_rules_portfolio`` on the bundled chain),
each method warm as ``pmjax margin`` computes it (the portfolio in, the JSON section out), seconds.

Baselines, timed in the same run: rules against the greedy pairing (``rules.pairing: greedy``, pure Python);
SPAN and the Deribit grid against numpy SPAN (``baselines.numpy_span``) of the same book, the numpy
full-revaluation grid nearest to them (16 scenarios; Deribit's grid has 27 + 8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pmjax.bench.baselines import host_book, numpy_span
from pmjax.bench.books import random_rules_portfolio
from pmjax.bench.rows import median_seconds

NAMES = ("margin_10k_positions_rules", "margin_10k_positions_span", "margin_10k_positions_deribit")


def _row(name, n, seconds, baseline, baseline_seconds, **extra) -> dict:
    return {"name": name, "size": f"{n} positions", "unit": "s", "pmjax": seconds, "baseline": baseline,
            "baseline_value": baseline_seconds, "speedup": baseline_seconds / seconds if seconds else None,
            "seconds": seconds, "positions": n, **extra}


def bench_big_book(dtype, sz: dict, ndtr, ndtr_name: str, only) -> list[dict]:
    """The ``margin_10k_positions_*`` rows named in ``only`` (warm medians over ``sz["repeats"]``)."""
    from pmjax.apps.margin import deribit_report, span_report
    from pmjax.core.book import book_from_portfolio
    from pmjax.io.config import deep_merge, load_config
    from pmjax.io.market import load_market
    from pmjax.measures.rules import rules_margin, rules_params
    from pmjax.measures.span import span_params

    n, reps = sz.get("big_book", 10_000), max(1, min(sz["repeats"], 3))
    market, config = load_market(), load_config()
    portfolio = random_rules_portfolio(n, market, seed=20)
    rows = []
    if "margin_10k_positions_rules" in only:
        opt, greedy = rules_params(config), rules_params(deep_merge(config, {"rules": {"pairing": "greedy"}}))
        result = rules_margin(portfolio, market, opt)
        t_opt = median_seconds(lambda: rules_margin(portfolio, market, opt), reps, warmup=0)
        t_greedy = median_seconds(lambda: rules_margin(portfolio, market, greedy), reps, warmup=0)
        rows.append(_row("margin_10k_positions_rules", n, t_opt, "greedy pairing (rules.pairing: greedy)", t_greedy,
                         pairing=result.pairing.get("method"), initial=result.initial,
                         greedy_initial=result.pairing.get("greedy_initial"),
                         saving_vs_greedy=result.pairing.get("saving_vs_greedy"),
                         lp_variables=result.pairing.get("variables"), lp_seconds=result.pairing.get("seconds")))
    if only & {"margin_10k_positions_span", "margin_10k_positions_deribit"}:
        book, _ = book_from_portfolio(portfolio, market, dtype=dtype)
        stacked = host_book(jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], book))
        sp = span_params(config, dtype=dtype)
        base = median_seconds(lambda: numpy_span(stacked, sp, ndtr), reps)
        label = f"numpy SPAN of the same book ({ndtr_name})"
        for name, fn in (("margin_10k_positions_span", lambda: span_report(portfolio, market, config, dtype=dtype,
                                                                            positions=True)),
                         ("margin_10k_positions_deribit", lambda: deribit_report(portfolio, market, config,
                                                                                 dtype=dtype))):
            if name in only:
                rows.append(_row(name, n, median_seconds(fn, reps), label, base, precision=str(jnp.dtype(dtype))))
    return rows


__all__ = ["NAMES", "bench_big_book"]
