"""Deribit's ``private/pme/simulate`` responses: config from their ``model_params``, the inputs that reproduce
one, and every derived number beside Deribit's (docs/deribit_grid.md).

``python -m pmjax.apps.pme_simulate RESPONSE.json`` prints the comparison and exits 0 when the largest gap is
at most 1e-9.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import jax
import jax.numpy as jnp

from pmjax.apps.margin import deribit_report
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, parse_instrument
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.io.config import default_config
from pmjax.io.market import market_from_dict

#: which ``model_params`` block each parameter lives in (``config_from_model_params``)
_PAIR_KEYS = ("price_range", "volatility_range_up", "volatility_range_down", "min_volatility_for_shock_up",
              "short_term_vega_power", "long_term_vega_power", "extended_table_factor", "m_inc",
              "max_delta_shock", "delta_total_liq_shock_threshold")
_CURRENCY_KEYS = ("annualised_move_risk", "min_annualised_move", "extended_dampener", "pnl_offset",
                  "max_offsetable_pnl")
_GENERAL_KEYS = ("buckets_count", "mm_factor")


def config_from_model_params(model_params: dict, base: dict | None = None) -> dict:
    """A ``deribit:`` config section from Deribit's ``model_params`` (``private/pme/simulate``).

    Each ``currency_pair`` ``<u>_usd`` block, with the ``currency`` block of its settlement coin ``<u>`` and
    the ``general`` block, becomes the entry of underlying U; underlyings it lacks keep ``base``'s entry.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()}
    general = model_params.get("general", {})
    for pair, block in model_params.get("currency_pair", {}).items():
        coin = pair.split("_")[0]
        u = coin.upper()
        if u not in UNDERLYINGS:
            continue
        currency = model_params.get("currency", {}).get(coin, {})
        entry = dict(out.get(u, {}))
        entry.update({k: block[k] for k in _PAIR_KEYS if k in block})
        entry.update({k: currency[k] for k in _CURRENCY_KEYS if k in currency})
        entry.update({k: general[k] for k in _GENERAL_KEYS if k in general})
        out[u] = entry
    return out


def pme_simulate_inputs(result: dict, base_config: dict | None = None):
    """(portfolio, market, config) reproducing a ``private/pme/simulate`` ``result``: its positions (coins),
    its index prices, dated futures' forwards from the ticker's mark prices, its ``model_params`` (over
    ``base_config``'s ``deribit:`` section), as of ``general.timestamp``; margin currency = its margin coin.
    Options need implied vols, which the response does not carry: they raise ``InputError``."""
    src = "private/pme/simulate result"
    mp = result["model_params"]
    as_of = dt.datetime.fromtimestamp(mp["general"]["timestamp"] / 1000.0, tz=dt.timezone.utc)
    positions = [Position(parse_instrument(name, source=src, field="portfolio.position"), float(q))
                 for name, q in result["portfolio"]["position"].items()]
    if any(p.instrument.is_option for p in positions):
        raise InputError("has options, whose implied vols the response does not carry: value it on a market",
                         source=src, field="portfolio.position")
    underlyings = {}
    for pair, spot in result["index_price"].items():
        u = pair.split("_")[0].upper()
        forwards = {p.instrument.expiry.isoformat(): result["ticker"][p.instrument.name]["mark_price"]
                    for p in positions if p.instrument.underlying == u and p.instrument.kind == "future"}
        underlyings[u] = {"spot": spot, "forwards": forwards, "vol": {"atm": 0.5}}
    market = market_from_dict({"as_of": as_of.isoformat(), "underlyings": underlyings}, source=src)
    coin = next(iter(result.get("margins", {"usd": None}))).upper()
    portfolio = make_portfolio(positions, account="pme-simulate", margin_currency=coin if coin in UNDERLYINGS
                               else "USD", source=src)
    base = base_config if base_config is not None else default_config()
    config = dict(base, deribit=config_from_model_params(mp, base.get("deribit")))
    return portfolio, market, config


def compare_with_pme_simulate(result: dict, dtype=jnp.float64) -> list[tuple[str, float, float]]:
    """(name, pmjax, Deribit) for every number of a ``private/pme/simulate`` result that the grid derives."""
    portfolio, market, config = pme_simulate_inputs(result)
    coin = portfolio.margin_currency.lower()
    details = result["margins"][coin]["initial_margin_details"]
    addons = {portfolio.margin_currency: details.get("mmp_margin", 0) + details.get("open_orders_margin", 0)
              + details.get("spot_margin", 0)}
    ours = deribit_report(portfolio, market, config, dtype, initial_addons=addons)
    rows = []
    for name, vecs in result["initial_risk_vectors"].items():
        for table in ("standard", "extended"):
            for k, (a, b) in enumerate(zip(ours["by_instrument"][name][table], vecs[table], strict=True)):
                rows.append((f"initial_risk_vectors.{name}.{table}[{k}]", a, b))
    for kind in ("pre_aggregated_risk_vectors", "aggregated_risk_vectors"):
        for key, vecs in result.get(kind, {}).items():
            mine = ours["by_underlying"][key.split("_")[0].upper()]
            mine = mine["pre_aggregated"] if kind.startswith("pre") else mine
            for table in ("standard", "extended"):
                for k, (a, b) in enumerate(zip(mine[table], vecs[table], strict=True)):
                    rows.append((f"{kind}.{key}.{table}[{k}]", a, b))
    u = ours["by_underlying"][portfolio.margin_currency]
    rmd = details["risk_matrix_margin_details"]
    for k in ("worst_case", "roll_shock", "delta_shock"):
        rows.append((f"risk_matrix_margin_details.{k}", u[k], rmd[k]))
    rows.append(("risk_matrix_margin", u["risk_matrix_margin"], details["risk_matrix_margin"]))
    rows.append(("maintenance_margin", u["maintenance"], result["margins"][coin]["maintenance_margin"]))
    rows.append(("initial_margin", u["initial"], result["margins"][coin]["initial_margin"]))
    return rows


def main(argv=None) -> int:
    """``python -m pmjax.apps.pme_simulate RESPONSE.json``: every derived number beside Deribit's, and the largest gap."""
    jax.config.update("jax_enable_x64", True)  # a program entry point, as the pmjax CLI: float64
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pmjax.apps.pme_simulate PME_SIMULATE_RESPONSE.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        doc = json.load(fh)
    result = doc.get("response", doc).get("result", doc)
    rows = compare_with_pme_simulate(result)
    for name, a, b in rows:
        print(f"{name:60s} {a:>24.17g} {b:>24.17g} {abs(a - b):9.2g}")
    gap = max(abs(a - b) for _, a, b in rows)
    print(f"{len(rows)} numbers, max |pmjax - Deribit| = {gap:.3g}")
    return 0 if gap <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
