"""Margin on an exchange's supplied SPAN risk arrays (``--risk-parameters FILE``, SPEC section 6): one account's
document (``pmjax margin``, ``pmjax report``) and many accounts at once (``pmjax stress``), through the pure
``pmjax.measures.span_arrays.span_array_margin`` (jitted once per book bucket; vmapped over accounts)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.batch.sharding import map_accounts, vmapped
from pmjax.core.book import bucket_size
from pmjax.io.accounts import load_accounts
from pmjax.io.risk_parameters import ContractPortfolio, RiskParameters, contract_portfolio_from_dict, \
    load_contract_portfolio
from pmjax.measures.span_arrays import SpanArrayParams, contract_book, span_array_margin, span_array_params, \
    span_array_section

_span_array_margin_jit = jax.jit(span_array_margin)


def supplied_span(portfolio: ContractPortfolio, rp: RiskParameters, *, dtype=jnp.float64,
                  params: SpanArrayParams | None = None) -> dict:
    """The ``span`` section of one account on the file's arrays."""
    params = span_array_params(rp, dtype=dtype) if params is None else params
    return span_array_section(_span_array_margin_jit(contract_book(portfolio, params, dtype=dtype), params), params,
                              portfolio)


def supplied_margin_document(portfolio: ContractPortfolio, rp: RiskParameters, *, dtype=jnp.float64) -> dict:
    """``pmjax margin --risk-parameters``'s document: the account, its positions (contracts; value = quantity x
    price, delta = quantity x composite delta), and the ``span`` section, in the file's currency."""
    span = supplied_span(portfolio, rp, dtype=dtype)
    positions = [{"instrument": row["contract"], "contract": row["contract"], "quantity": row["quantity"],
                  "value": row["value"], "delta": row["composite_delta"]} for row in span["by_position"]]
    return {"account": portfolio.account, "as_of": str(rp.notes.get("as_of", "")), "currency": rp.currency,
            "market": f"risk parameters {os.path.basename(rp.source)}", "risk_parameters": rp.source,
            "positions": positions, "span": span}


def load_contract_accounts(path: str, rp: RiskParameters) -> list[ContractPortfolio]:
    """Accounts in the file's contracts: a directory of portfolio files, a multi-account file (``accounts:``) or
    one portfolio file (``pmjax.io.accounts.load_accounts`` with the contract readers)."""
    return load_accounts(path, load_file=lambda f: load_contract_portfolio(f, rp),
                         from_dict=lambda doc, source: contract_portfolio_from_dict(doc, rp, source=source))


def supplied_stress(accounts: list[ContractPortfolio], rp: RiskParameters, *, dtype=jnp.float64,
                    chunk: int = 1024) -> list[dict]:
    """The ``span`` section of every account, in one vmapped, chunked call over books padded to one bucket."""
    params = span_array_params(rp, dtype=dtype)
    size = bucket_size(max(max(len(a.positions) for a in accounts), 1))
    books = [contract_book(a, params, size=size, dtype=dtype) for a in accounts]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *books)
    result = map_accounts(vmapped(span_array_margin), stacked, (params,), chunk=min(chunk, len(accounts)))
    host = jax.tree_util.tree_map(np.asarray, result)
    return [span_array_section(jax.tree_util.tree_map(lambda x: x[i], host), params, a)
            for i, a in enumerate(accounts)]
