"""``pmjax margin PORTFOLIO --market M [--method ...] [--what-if TRADES]`` (SPEC section 3)."""

from __future__ import annotations

import importlib
import threading

from pmjax.apps.names import MARGIN_METHODS as METHODS
from pmjax.apps.names import TOP_NAKED
from pmjax.cli.app import dtype_of, notices
from pmjax.core.errors import InputError
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("portfolio", help="portfolio file (.yaml, .yml, .json, .csv)")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market file or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--method", default="all", help=f"comma-separated: {','.join(METHODS)} or all (default all)")
    p.add_argument("--config", default=None, help="YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="VaR/ES confidence (default: config var.confidence)")
    p.add_argument("--what-if", dest="what_if", default=None, metavar="TRADES",
                   help='candidate trades "INSTRUMENT:QTY[,INSTRUMENT:QTY...]": incremental margin per method')
    p.add_argument("--scenarios", default=None, metavar="F",
                   help="YAML/JSON named joint shocks (e.g. configs/scenarios/stress_days.yaml): the account's "
                        "P&L under each")
    p.add_argument("--detail", action="store_true",
                   help="list every rules strategy and naked leg (default: counts by strategy type and the "
                        f"{TOP_NAKED} largest naked legs)")
    p.add_argument("--risk-parameters", dest="risk_parameters", default=None, metavar="FILE",
                   help="SPAN on an exchange's risk arrays (SPEC section 6 YAML/JSON) instead of pmjax's pricing: "
                        "positions name its contracts, quantities in contracts, figures in its currency")


def parse_methods(text: str) -> list[str]:
    names = list(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))  # span,SPAN: once
    if not names:
        raise InputError(f"no method given (choose from {', '.join(METHODS)} or all)", source="--method")
    if "all" in names:
        return list(METHODS)
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise InputError(f"unknown method(s) {', '.join(bad)} (choose from {', '.join(METHODS)} or all)",
                         source="--method")
    return names


def var_overrides(args, config: dict) -> dict:
    """--paths/--seed/--confidence over the config's var section, validated (errors name the flag)."""
    var = dict(config.get("var") or {})  # load_config has checked that it is a mapping
    if args.paths is not None:
        if not 100 <= args.paths <= 2**32 - 2:
            raise InputError(f"must be in [100, 2**32 - 2], got {args.paths}", source="--paths")
        var["paths"] = args.paths
    if args.seed is not None:
        if not 0 <= args.seed <= 2**63 - 1:
            raise InputError(f"must be in [0, 2**63 - 1], got {args.seed}", source="--seed")
        var["seed"] = args.seed
    if args.confidence is not None:
        if not 0.5 <= args.confidence < 1.0:
            raise InputError(f"must be in [0.5, 1), got {args.confidence}", source="--confidence")
        var["confidence"] = args.confidence
    return {**config, "var": var}


def load_inputs(args):
    """(portfolio, market, config, dtype) from the command line, checked against each other (an expired
    position is reported in the portfolio file); notices go to stderr, with or without --json."""
    return resolved_inputs(args)[:4]


def resolved_inputs(args):
    """``load_inputs`` and the portfolio's positions resolved against the market (for ``margin_document``)."""
    from pmjax.core.book import resolve_portfolio
    from pmjax.io.config import load_config
    from pmjax.io.market import load_market
    from pmjax.io.portfolio import load_portfolio

    portfolio = load_portfolio(args.portfolio)
    market = load_market(args.market)
    config = var_overrides(args, load_config(args.config))
    resolved = resolve_portfolio(portfolio, market)
    notices(market.notices + portfolio.notices)
    return portfolio, market, config, dtype_of(args), resolved


def supplied_inputs(args):
    """(contract portfolio, risk parameters) of ``--risk-parameters`` (span only; no market, what-if or scenarios)."""
    from pmjax.io.risk_parameters import load_contract_portfolio
    from pmjax.io.span_pa2 import load_risk_file

    methods = ["span"] if args.method == "all" else parse_methods(args.method)
    if methods != ["span"]:
        raise InputError("with --risk-parameters only span is computed (the file's arrays replace pmjax's pricing)",
                         source="--method")
    for flag in ("what_if", "scenarios"):
        if getattr(args, flag, None) is not None:
            raise InputError("does not apply with --risk-parameters", source="--" + flag.replace("_", "-"))
    rp = load_risk_file(args.risk_parameters)
    return load_contract_portfolio(args.portfolio, rp), rp


def render_supplied(doc: dict) -> str:
    from pmjax.apps.tables import fmt, table

    cur = doc["currency"]
    span = doc["span"]
    parts = [table([[p["contract"], p["quantity"], p["value"], p["delta"]] for p in doc["positions"]],
                   ["contract", "quantity (contracts)", f"value ({cur})", "composite delta"],
                   title=f"Account {doc['account']} on {doc['risk_parameters']} (supplied risk arrays)"),
             span_table(span["by_underlying"], "commodity"),
             f"SPAN total {fmt(span['total'])} {cur} (risk {fmt(span['risk'])}, net option value {fmt(span['nov'])})"]
    return "\n\n".join(parts)


def span_table(by: dict, label: str = "underlying") -> str:
    """SPAN by commodity, with the inter-credit inputs (time, volatility and price risk)."""
    from pmjax.apps.tables import table

    return table([[u, v["scan_risk"], v["worst_scenario"], v["intra_spread"], v["spot_charge"], v["time_risk"],
                   v["volatility_risk"], v["price_risk"], v["inter_credit"], v["short_option_minimum"],
                   v["composite_delta"], v["risk"]] for u, v in by.items()],
                 [label, "scan", "worst", "intra", "spot", "time", "vol", "price", "inter credit", "SOM",
                  "comp. delta", "risk"], title=f"SPAN by {label}")


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:  # said where it is needed (rules falls back to greedy with a notice)
        pass


def run(args):
    from pmjax.core.collection import collection_paused

    with collection_paused():  # a big book is many small objects: no collections while it is loaded and margined
        return _run(args)


def _run(args):
    supplied = getattr(args, "risk_parameters", None) is not None
    methods = None if supplied else parse_methods(args.method)
    if methods is not None and "rules" in methods:
        # rules' optimal pairing needs scipy's solver: import it on a thread while JAX is imported here
        # (both spend much of their import time loading shared libraries, outside the GIL)
        threading.Thread(target=_import_quietly, args=("scipy.optimize",), daemon=True).start()
    from pmjax.apps.margin import HEADLINE, compute_margins, margin_document
    from pmjax.apps.stress import account_scenario_pnl
    from pmjax.core.book import years_to_expiry
    from pmjax.io.portfolio import parse_trades
    from pmjax.scenarios.named import load_scenarios

    if supplied:
        from pmjax.apps.supplied import supplied_margin_document

        cp, rp = supplied_inputs(args)
        doc = supplied_margin_document(cp, rp, dtype=dtype_of(args))
        return doc, render_supplied(doc)
    trades = parse_trades(args.what_if) if args.what_if is not None else None  # "" is an error, not "none"
    portfolio, market, config, dtype, resolved = resolved_inputs(args)
    for i, t in enumerate(trades or []):
        years_to_expiry(t.instrument, market, source="--what-if", field=f"trade {i + 1}")
    scenarios = load_scenarios(args.scenarios) if getattr(args, "scenarios", None) else []
    doc = margin_document(portfolio, market, config, methods, dtype=dtype, resolved=resolved)
    if scenarios:
        doc["scenarios"] = account_scenario_pnl(portfolio, market, scenarios, dtype=dtype)
    if trades is not None:
        after = compute_margins(portfolio.with_trades(trades), market, config, methods, dtype=dtype)
        before_fig = {m: HEADLINE[m](doc[m]) for m in methods}
        after_fig = {m: HEADLINE[m](after[m]) for m in methods}
        doc["what_if"] = {"trades": [{"instrument": t.instrument.name, "quantity": t.quantity} for t in trades],
                          "before": before_fig, "after": after_fig,
                          "incremental": {m: after_fig[m] - before_fig[m] for m in methods}}
    pairing_notice = doc.get("rules", {}).get("pairing_detail", {}).get("notice")
    if pairing_notice:
        notices([pairing_notice])
    return doc, render(doc, methods, detail=getattr(args, "detail", False))


def rules_tables(r: dict, cur: str, detail: bool = False) -> list[str]:
    """The rules section as text: strategies counted by type and the largest naked legs, with a pointer to
    the full lists (``detail``: every strategy and naked leg, one line each)."""
    from pmjax.apps.tables import largest_naked, pairing_line, strategy_counts, table

    out = [table(strategy_counts(r), ["strategy", "count", "coins", f"initial ({cur})", f"maintenance ({cur})"],
                 title=f"Rules strategies by type ({pairing_line(r, cur)})")]
    naked = r.get("naked", [])
    if detail:
        out.append(table([[s["id"], s["type"], " / ".join(f"{g['instrument']} {g['quantity']:+g}" for g in s["legs"]),
                           s["initial"], s["maintenance"]] for s in r.get("strategies", [])],
                         ["id", "strategy", "legs", f"initial ({cur})", f"maintenance ({cur})"],
                         title="Rules: every strategy"))
    shown = naked if detail else largest_naked(r)
    title = ("Rules: every naked leg" if detail or len(shown) == len(naked)
             else f"Rules: the {len(shown)} largest of {len(naked):,} naked legs")
    if not naked:
        out.append("Rules: no naked legs (every coin of every leg is in a strategy).")
    else:
        out.append(table([[n["instrument"], n["quantity"], n["initial"], n["maintenance"]] for n in shown],
                         ["instrument", "quantity", f"initial ({cur})", f"maintenance ({cur})"], title=title))
    if not detail and (len(shown) < len(naked) or len(r.get("strategies", [])) > len(strategy_counts(r))):
        out.append("Every strategy and naked leg: add --detail, or --json (rules.strategies, rules.naked).")
    return out


def render(doc: dict, methods: list[str], detail: bool = False) -> str:
    from pmjax.apps.tables import coin_span_note, fmt, table

    cur = doc["currency"]
    parts = [table([[p["instrument"], p["quantity"], p["value"], p["delta"]] for p in doc["positions"]],
                   ["instrument", "quantity", f"value ({cur})", "delta (coins)"],
                   title=f"Account {doc['account']} on {doc['market']} as of {doc['as_of']}")]
    rows = []
    for m in methods:
        d = doc[m]
        if m == "rules":
            rows.append(["rules", d["initial"], d["maintenance"],
                         f"{len(d.get('strategies', [])):,} strategies, {len(d.get('naked', [])):,} naked legs "
                         f"({d.get('pairing', 'none')} pairing)"])
        elif m == "span":
            rows.append(["span", d["total"], None, f"risk {fmt(d['risk'])}, nov {fmt(d['nov'])}"])
        elif m == "deribit":
            rows.append(["deribit", d["initial"], d["maintenance"], ""])
        elif m == "tims":
            rows.append(["tims", d["total"], None, ", ".join(
                f"{u}: point {v['worst_point']} ({100 * v['worst_move']:+.2f}%), minimum {fmt(v['minimum'])}"
                for u, v in d["by_underlying"].items())])
        elif m == "var":
            rows.append([f"var {d['model']}", d["es"], None,
                         f"VaR {fmt(d['var'])} +- {fmt(d['var_stderr'])}, ES +- {fmt(d['es_stderr'])} "
                         f"at {d['confidence']:g}, {d['paths']:,} paths"])
    parts.append(table(rows, ["method", f"initial ({cur})", f"maintenance ({cur})", "detail"],
                       title="Margin by method (span: total; var: expected shortfall)"))
    if "rules" in methods and doc["rules"].get("mode") != "deribit_standard":
        parts += rules_tables(doc["rules"], cur, detail)
    if "span" in methods:
        parts.append(span_table(doc["span"]["by_underlying"]))
        if coin_span_note(cur):
            parts.append(coin_span_note(cur))
    if "deribit" in methods:
        du = doc["deribit"]["by_underlying"]
        parts.append(table([[u, v.get("currency", u), "+".join(v.get("settlements", [])), v["worst_case"],
                             v["roll_shock"], v["delta_shock"], v["risk_matrix_margin"]] for u, v in du.items()],
                           ["pool", "unit", "settled in", "worst case", "roll shock", "delta shock",
                            "risk matrix margin"],
                           title=f"Deribit grid by pool ({doc['deribit'].get('pooling', 'cross')} pooling, "
                                 "each pool in its unit)"))
    if "scenarios" in doc:
        parts.append(table([[k, v] for k, v in doc["scenarios"].items()], ["scenario", f"P&L ({cur})"],
                           title="P&L under each named scenario (gain positive; every underlying moves at once)"))
    if "qualification" in doc:
        parts.append("Qualification: " + doc["qualification"]["reason"])
    if "what_if" in doc:
        w = doc["what_if"]
        parts.append(table([[m, w["before"][m], w["after"][m], w["incremental"][m]] for m in methods],
                           ["method", "before", "after", "incremental"],
                           title="What-if: " + ", ".join(f"{t['instrument']} {t['quantity']:+g}" for t in w["trades"])))
    return "\n\n".join(parts)
