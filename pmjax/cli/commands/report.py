"""``pmjax report PORTFOLIO --market M --out DIR [--scenarios F]``: HTML report with plots and the JSON beside it."""

from __future__ import annotations

from pmjax.cli.commands.margin import resolved_inputs
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.io.names import DEFAULT_MARKET


def add_arguments(p):
    p.add_argument("portfolio", help="portfolio file (.yaml, .yml, .json, .csv)")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market file or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--out", required=True, help="directory for report.html, its PNG plots and report.json")
    p.add_argument("--config", default=None, help="YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="VaR/ES confidence (default: config var.confidence)")
    p.add_argument("--scenarios", default=None, metavar="F",
                   help="YAML/JSON named joint shocks (e.g. configs/scenarios/stress_days.yaml): the account's "
                        "P&L under each, in the report")
    p.add_argument("--risk-parameters", dest="risk_parameters", default=None, metavar="FILE",
                   help="SPAN on an exchange's risk arrays (SPEC section 6) instead of pmjax's pricing (the report "
                        "then has SPAN only)")
    p.add_argument("--hedge-map", action="store_true",
                   help="add the marginal margin of every listed contract (SPAN and the Deribit grid): the contracts "
                        "that lower and raise each most, and a chart against strike per expiry")


def scenario_results(portfolio, market, scenarios, dtype) -> tuple[dict, list[dict]]:
    """({name: P&L}, as ``pmjax margin --scenarios`` reports it, and one record per scenario with its moves)."""
    from pmjax.apps.stress import account_scenario_pnl

    pnl = account_scenario_pnl(portfolio, market, scenarios, dtype=dtype)
    used = [u for u in UNDERLYINGS if any(p.instrument.underlying == u for p in portfolio.positions)]
    records = []
    for s in scenarios:
        rec = {"scenario": s.name, "days": int(s.days) if float(s.days).is_integer() else s.days}
        for u in used:
            j = UNDERLYINGS.index(u)
            rec[f"{u} price"] = f"{100 * s.price_move[j]:+.1f}%"
            rec[f"{u} vol"] = f"{100 * s.vol_shift[j]:+.1f} pts"
        rec[f"P&L ({portfolio.margin_currency})"] = pnl[s.name]
        records.append(rec)
    return pnl, records


def hedge_map_sections(portfolio, market, config, dtype, extra: dict) -> list[tuple[str, str]]:
    """The report's marginal-margin section (``--hedge-map``): per method the 10 contracts that lower and raise
    the margin most when bought, and a chart of every listed option's marginal margin against strike per expiry
    for each underlying held; the map's JSON (SPEC section 7 rows, ranked) goes into ``extra['hedge_map']``."""
    import base64
    import html

    from pmjax.apps.hedge_map import hedge_map, hedge_map_section, plot_marginal_by_strike
    from pmjax.apps.report import html_table

    hmap = hedge_map(portfolio, market, config, methods=("span", "deribit"), dtype=dtype)
    doc = hedge_map_section(hmap, top=10)
    extra["hedge_map"] = doc
    held = [u for u in UNDERLYINGS if any(p.instrument.underlying == u for p in portfolio.positions)]
    cur = portfolio.margin_currency
    content = (f"<p>d margin / d quantity of each of the {len(hmap.instruments):,} listed contracts ({cur} per coin "
               "bought; negative: buying lowers the margin), from one reverse pass per method "
               "(docs/methodology.md section 11).</p>")
    for m in doc["methods"]:
        for side, label in (("best", "lower it most"), ("worst", "raise it most")):
            rows = [[r["instrument"], r["marginal"]] for r in doc["ranked"][m][side]]
            content += f"<h3>{html.escape(m)}: contracts that {label} when bought</h3>"
            content += html_table(rows, ["instrument", f"d {m} / d quantity ({cur} per coin)"])
        for u in held:
            png = base64.b64encode(plot_marginal_by_strike(hmap, m, u)).decode("ascii")
            content += f'<p><img alt="{m} marginal margin, {u}" src="data:image/png;base64,{png}"></p>'
    return [("Marginal margin of every listed contract", content)]


def run_supplied(args):
    """``--risk-parameters``: the SPAN report of one account on the file's arrays."""
    from pmjax.apps.report import check_out_dir, write_report
    from pmjax.apps.supplied import supplied_margin_document
    from pmjax.cli.app import dtype_of
    from pmjax.cli.commands.margin import render_supplied, supplied_inputs

    if args.hedge_map:
        raise InputError("does not apply with --risk-parameters (the map differentiates pmjax's pricing)",
                         source="--hedge-map")
    args.method, args.what_if = "span", None
    cp, rp = supplied_inputs(args)
    check_out_dir(args.out)
    doc = supplied_margin_document(cp, rp, dtype=dtype_of(args))
    paths = write_report(doc, args.out, notes=[f"SPAN on the supplied risk arrays of {rp.source} (SPEC section 6): "
                                               "quantities in contracts, figures in the file's currency."])
    return {**doc, "files": paths}, render_supplied(doc) + "\n\nwritten: " + ", ".join(paths.values())


def run(args):
    from pmjax.apps.margin import METHODS, margin_document
    from pmjax.apps.report import (applicable_line, applicable_requirement, check_out_dir, comparison,
                                   worst_scenario_rows, worst_scenarios, write_report)
    from pmjax.apps.tables import table
    from pmjax.core.greeks import portfolio_greeks
    from pmjax.scenarios.named import load_scenarios

    if args.risk_parameters is not None:
        return run_supplied(args)
    portfolio, market, config, dtype, resolved = resolved_inputs(args)
    scenarios = load_scenarios(args.scenarios) if args.scenarios else []
    check_out_dir(args.out)  # before anything is computed: a bad --out writes nothing
    doc = margin_document(portfolio, market, config, list(METHODS), dtype=dtype, resolved=resolved)
    records = []
    if scenarios:
        doc["scenarios"], records = scenario_results(portfolio, market, scenarios, dtype)
    greeks = portfolio_greeks(portfolio, market, dtype=dtype)
    spots = {u: market.spot(u) for u in UNDERLYINGS
             if u == portfolio.margin_currency or any(p.instrument.underlying == u for p in portfolio.positions)}
    extra = {"scenario_table": records} if records else {}
    sections = hedge_map_sections(portfolio, market, config, dtype, extra) if args.hedge_map else []
    paths = write_report(doc, args.out, config=config, spots=spots, greeks=greeks, extra_json=extra or None,
                         scenario_records=records or None, extra_sections=sections)
    rows = comparison(doc)
    cur = doc["currency"]
    worst = worst_scenarios(doc, config, spots)
    app = applicable_requirement(doc)
    parts = [f"Account {doc['account']}: {doc['qualification']['reason']}", applicable_line(app),
             table([[r["label"], r["margin"], None if r["gain_vs_rules"] is None else f"{100 * r['gain_vs_rules']:.1f}%",
                     "<- applies" if r["applies"] else ""] for r in rows],
                   ["method", f"margin ({cur})", "gain vs rules", ""],
                   title="Margin by method (rules initial and SPAN total both include option premium)")]
    header, trs = worst_scenario_rows(worst)
    parts.append(table([t[:-1] for t in trs], header[:-1], title="Worst scenarios"))
    if records:
        keys = list(records[0])
        parts.append(table([[r[k] for k in keys] for r in records], keys,
                           title="P&L under each named scenario (gain positive; every underlying moves at once)"))
    out = {**doc, "comparison": rows, "applicable": app, "worst_scenarios": worst, "greeks": greeks,
           "index_prices": spots, "files": paths}
    if records:
        out["scenario_table"] = records
    return out, "\n\n".join(parts) + "\n\nwritten: " + ", ".join(paths.values())
