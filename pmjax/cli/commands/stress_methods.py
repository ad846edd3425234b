"""The methods of ``pmjax stress``: each runs one margin method over an ``AccountBatch`` and gives its JSON sections
and summary columns (imported when the command runs; ``pmjax.cli.commands.stress`` parses the arguments)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from pmjax.apps.stress import deribit_margin_sharded, deribit_sections, span_batch, span_sections
from pmjax.batch.accounts import AccountBatch
from pmjax.batch.sharding import deribit_chunk, map_accounts, span_chunk, vmapped
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.market import Market
from pmjax.measures.deribit import deribit_params
from pmjax.measures.span import span_params
from pmjax.measures.tims import tims_margin, tims_params, tims_section
from pmjax.measures.var import var_margin_accounts, var_params, var_section


@dataclasses.dataclass
class MethodOutput:
    """What a method gives the stress command: one JSON section per account (in batch order), and the
    columns it adds to the summary table (one row per account)."""

    sections: list[dict]
    header: list[str]
    rows: list[list]


def span_method(batch: AccountBatch, market: Market, config: dict, dtype) -> MethodOutput:
    """SPAN of every account: the SPEC ``span`` section each, and scan risk / total / worst scenario."""
    params = span_params(config, dtype=dtype)
    sections = span_sections(batch, span_batch(batch, params))
    rows = []
    for s in sections:
        by = s["by_underlying"]
        worst = " ".join(f"{u}:{by[u]['worst_scenario']}" for u in UNDERLYINGS if u in by)
        rows.append([sum(b["scan_risk"] for b in by.values()), s["total"], worst])
    return MethodOutput(sections, ["span scan risk", "span total", "worst scenario"], rows)


def deribit_method(batch: AccountBatch, market: Market, config: dict, dtype) -> MethodOutput:
    """The Deribit portfolio-margin grid of every account: the SPEC ``deribit`` section each."""
    params = deribit_params(config, dtype=dtype)
    # accounts per call from the memory at hand (a multiple of the device count), sharded over every local
    # device; results do not depend on it
    result = deribit_margin_sharded(batch.books, params, chunk=deribit_chunk(batch.size, dtype))
    sections = deribit_sections(batch, result, params)
    return MethodOutput(sections, ["deribit initial", "deribit maintenance"],
                        [[s["initial"], s["maintenance"]] for s in sections])


def var_method(batch: AccountBatch, market: Market, config: dict, dtype) -> MethodOutput:
    """Monte Carlo VaR/ES of every account on one shared set of paths (``var_margin_accounts``): the SPEC
    ``var`` section each (historical simulation off: ``pmjax margin`` reports it per account)."""
    params = var_params(config, market=market, dtype=dtype, historical=False)
    books = jax.tree_util.tree_map(lambda a: np.asarray(a)[: batch.n_accounts], batch.books)
    results = var_margin_accounts(books, params)
    sections = [var_section(r, n_positions=len(p.positions), currency=p.margin_currency)
                for r, p in zip(results, batch.portfolios)]
    return MethodOutput(sections, ["var VaR", "var ES", "paths revalued"],
                        [[s["var"], s["es"], s["revaluation"]["paths_revalued"]] for s in sections])


def tims_method(batch: AccountBatch, market: Market, config: dict, dtype) -> MethodOutput:
    """The TIMS-style preset of every account (``tims_margin`` vmapped over the batch): the ``tims`` section each."""
    params = tims_params(config, dtype=dtype)
    result = map_accounts(vmapped(tims_margin), batch.books, (params,), chunk=span_chunk(batch.size, dtype))
    host = jax.tree_util.tree_map(np.asarray, result)
    sections = [tims_section(jax.tree_util.tree_map(lambda x: x[i], host),
                             {x.instrument.underlying for x in p.positions}) for i, p in enumerate(batch.portfolios)]
    return MethodOutput(sections, ["tims total"], [[s["total"]] for s in sections])


#: method name -> batch function (the names: ``pmjax.cli.commands.stress.METHODS``)
METHODS: dict[str, Callable[[AccountBatch, Market, dict, object], MethodOutput]] = {
    "span": span_method, "deribit": deribit_method, "var": var_method, "tims": tims_method}
