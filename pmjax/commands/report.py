"""``pmjax report PORTFOLIO --market M --out DIR``: HTML report with plots and the JSON beside it."""

from __future__ import annotations

from ..cli import dtype_of, notice
from ..config import load_config
from ..market import DEFAULT_MARKET, load_market
from ..measures import METHODS, compute_margins, position_summary, qualification
from ..portfolio import load_portfolio
from ..report import comparison, write_report
from ..tables import table
from .margin import var_overrides


def add_arguments(p):
    p.add_argument("portfolio", help="portfolio file (.yaml, .yml, .json, .csv)")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market file or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--out", required=True, help="directory for report.html, its PNG plots and report.json")
    p.add_argument("--config", default=None, help="YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="VaR/ES confidence (default: config var.confidence)")


def run(args):
    portfolio = load_portfolio(args.portfolio)
    market = load_market(args.market)
    config = var_overrides(args, load_config(args.config))
    dtype = dtype_of(args)
    if not args.json:
        for n in market.notices + portfolio.notices:
            notice(n)
    doc = {"account": portfolio.account, "as_of": market.as_of.isoformat(), "currency": portfolio.margin_currency,
           "market": market.source, "positions": position_summary(portfolio, market, dtype)}
    doc.update(compute_margins(portfolio, market, config, list(METHODS), dtype=dtype))
    doc["qualification"] = qualification(portfolio, market, config, dtype=dtype)
    paths = write_report(doc, args.out)
    rows = comparison(doc)
    text = table([[r["label"], r["margin"], None if r["gain_vs_rules"] is None else f"{100 * r['gain_vs_rules']:.1f}%"]
                  for r in rows], ["method", f"margin ({doc['currency']})", "gain vs rules"],
                 title=f"Account {doc['account']}: {doc['qualification']['reason']}")
    return {**doc, "comparison": rows, "files": paths}, text + "\n\nwritten: " + ", ".join(paths.values())
