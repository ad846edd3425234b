"""The SPAN risk parameter file: per-contract risk arrays of every listed contract of a market, as a
clearing house publishes its SPAN file (``pmjax stress --risk-parameter-file``). Figures are those of
``pmjax.measures.span.span_margin`` on a book of 1 coin long of each contract (formulas: docs/methodology.md
section 5)."""

from __future__ import annotations

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from pmjax.core.book import bucket_size, make_book, resolve
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument
from pmjax.core.units import DAYS_PER_YEAR
from pmjax.measures.span import SpanParams, span_margin, span_params
from pmjax.scenarios.grids import N_SPAN_SCENARIOS

#: one account (a book of the same bucket size and dtype reuses the compiled code)
_span_margin_jit = jax.jit(span_margin)


def _f(x) -> float:
    return float(np.asarray(x)) + 0.0  # + 0.0 turns -0.0 into 0.0


def listed_contracts(market) -> list[Instrument]:
    """Every contract the market lists: each option of every smile (call and put, inverse), the future of
    each expiry with a forward (inverse), and the perpetual, per underlying."""
    out = []
    for u in UNDERLYINGS:
        if u not in market.underlyings:
            continue
        m = market.underlyings[u]
        for e in sorted(m.smiles):
            for k in m.smiles[e].strikes:
                for right in ("call", "put"):
                    out.append(Instrument(u, "option", "inverse", e, float(k), right))
        for e in sorted(m.forwards):
            out.append(Instrument(u, "future", "inverse", e))
        out.append(Instrument(u, "perpetual", "inverse"))
    return [i for i in out if i.expiry is None or market.years_to(i.expiry) >= 0]


RISK_FILE_COLUMNS = ("instrument", "underlying", "kind", "settlement", "expiry", "strike", "right", "days",
                     "forward", "vol", "price_usd", "composite_delta", "tier", "spot_month") + tuple(
    f"L{i}" for i in range(1, N_SPAN_SCENARIOS + 1))


def risk_parameter_rows(market, params: SpanParams) -> list[dict]:
    """Risk array (USD losses, weights applied) and composite delta of 1 coin long of every listed contract."""
    dtype = params.price_scan_range.dtype
    contracts = listed_contracts(market)
    if not contracts:
        raise InputError("the market lists no contracts", source=market.source)
    resolved = resolve(contracts, [1.0] * len(contracts), market)
    book = make_book(resolved, market, "USD", dtype=dtype, size=bucket_size(len(resolved)))
    r = jax.tree_util.tree_map(np.asarray, _span_margin_jit(book, params))
    rows = []
    for i, p in enumerate(resolved):
        inst = p.instrument
        row = {"instrument": inst.name, "underlying": inst.underlying, "kind": inst.kind,
               "settlement": inst.settlement, "expiry": inst.expiry.isoformat() if inst.expiry else "",
               "strike": inst.strike if inst.strike is not None else "", "right": inst.right or "",
               "days": p.expiry_years * DAYS_PER_YEAR, "forward": p.forward, "vol": p.vol if inst.is_option else "",
               "price_usd": float(r.position_value[i]) if inst.is_option else 0.0,
               "composite_delta": float(r.position_composite_delta[i]), "tier": int(r.position_tier[i]) + 1,
               "spot_month": bool(r.position_in_spot_month[i])}
        for s in range(N_SPAN_SCENARIOS):
            row[f"L{s + 1}"] = _f(r.position_risk_array[s, i])
        rows.append(row)
    return rows


def span_file_document(market, config: dict, params: SpanParams, rows: list[dict]) -> dict:
    """SPEC section 6's document of ``rows``: a risk parameter file ``--risk-parameters`` loads (contracts of one
    coin each, USD), with the market, the scenarios and the SPAN parameters as provenance."""
    span = config.get("span") or {}
    unds = {str(u).upper(): v for u, v in (span.get("underlyings") or {}).items()}
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    commodities = {}
    for i, u in enumerate(UNDERLYINGS):
        if u not in market.underlyings:
            continue
        spot = market.spot(u)
        commodities[u] = {"intra_spread_charge": float(p.intra_spread_rate[i] * spot),
                          "spot_charge": float(p.spot_rate[i] * spot),
                          "short_option_minimum": float(p.short_option_minimum[i] * spot),
                          "som_method": str(unds.get(u, {}).get("som_method", "max")).lower()}
    inter = [{"legs": {UNDERLYINGS[int(a)]: float(ra), UNDERLYINGS[int(b)]: float(rb)}, "credit_rate": float(c)}
             for (a, b), (ra, rb), c in zip(np.asarray(params.inter_legs), p.inter_ratios, p.inter_credit_rate)
             if UNDERLYINGS[int(a)] in commodities and UNDERLYINGS[int(b)] in commodities]
    contracts = []
    for r in rows:
        kind = r["right"] if r["kind"] == "option" else r["kind"]
        c = {"id": r["instrument"], "commodity": r["underlying"], "type": kind, "tier": r["tier"],
             "spot_month": r["spot_month"], "delta": r["composite_delta"],
             "price": r["price_usd"] if r["kind"] == "option" else None,
             "risk_array": [r[f"L{s + 1}"] for s in range(N_SPAN_SCENARIOS)]}
        c.update({k: v for k, v in r.items() if not k.startswith("L") and k not in c and k != "spot_month"})
        contracts.append(c)
    grid = jax.tree_util.tree_map(np.asarray, params.grid)
    return {"currency": "USD", "commodities": commodities, "contracts": contracts, "inter_spreads": inter,
            "as_of": market.as_of.isoformat(), "market": market.source, "quantity": 1.0, "losses_positive": True,
            "scenarios": {u: {"price_move": grid.price_move[i].tolist(), "vol_shift": grid.vol_shift[i].tolist(),
                              "weight": grid.weight[i].tolist()} for i, u in enumerate(UNDERLYINGS)},
            "horizon_days": float(params.horizon_days), "parameters": config.get("span")}


def risk_parameter_file(market, config: dict, path: str, dtype=jnp.float64) -> list[dict]:
    """Write the market's SPAN risk parameter file (per-contract risk arrays of 1 coin long, USD) to ``path``:
    CSV for ``.csv`` (one row per contract); for ``.json``/``.yaml``/``.yml`` SPEC section 6's layout, which
    ``--risk-parameters`` reads back (``span_file_document``). Written whole or not at all. Returns the rows."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json", ".yaml", ".yml"):
        raise InputError(f"unknown file type {ext!r} for a risk parameter file (use .json, .yaml or .csv)",
                         source=path)
    params = span_params(config, dtype=dtype)
    rows = risk_parameter_rows(market, params)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="" if ext == ".csv" else None, encoding="utf-8") as fh:
            if ext == ".csv":
                w = csv.DictWriter(fh, fieldnames=list(RISK_FILE_COLUMNS))
                w.writeheader()
                w.writerows(rows)
            elif ext == ".json":
                json.dump(span_file_document(market, config, params, rows), fh, indent=1)
            else:
                yaml.safe_dump(span_file_document(market, config, params, rows), fh, sort_keys=False)
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"cannot write file: {e.strerror}", source=path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows


__all__ = ["RISK_FILE_COLUMNS", "listed_contracts", "risk_parameter_file", "risk_parameter_rows", "span_file_document"]
