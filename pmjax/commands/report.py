"""``pmjax report PORTFOLIO --market M --out DIR``: HTML report with plots and the JSON beside it."""

from __future__ import annotations

from ..market import DEFAULT_MARKET
from ..measures import METHODS, margin_document
from ..report import comparison, write_report
from ..tables import table
from .margin import load_inputs


def add_arguments(p):
    p.add_argument("portfolio", help="portfolio file (.yaml, .yml, .json, .csv)")
    p.add_argument("--market", default=DEFAULT_MARKET, help=f"market file or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--out", required=True, help="directory for report.html, its PNG plots and report.json")
    p.add_argument("--config", default=None, help="YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="Monte Carlo paths (default: config var.paths)")
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (default: config var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="VaR/ES confidence (default: config var.confidence)")


def run(args):
    portfolio, market, config, dtype = load_inputs(args)
    doc = margin_document(portfolio, market, config, list(METHODS), dtype=dtype)
    paths = write_report(doc, args.out)
    rows = comparison(doc)
    text = table([[r["label"], r["margin"], None if r["gain_vs_rules"] is None else f"{100 * r['gain_vs_rules']:.1f}%"]
                  for r in rows], ["method", f"margin ({doc['currency']})", "gain vs rules"],
                 title=f"Account {doc['account']}: {doc['qualification']['reason']}")
    return {**doc, "comparison": rows, "files": paths}, text + "\n\nwritten: " + ", ".join(paths.values())
