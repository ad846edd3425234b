"""`pmjax demo`: the seed's strategies and book on the bundled market, every method side by side, the seed book's
values and Greeks, the like-for-like comparison with its computed notes, and the report written."""

import contextlib
import io
import json
import os

import jax.numpy as jnp
import pytest

from pmjax.cli.app import build_parser, main
from pmjax.io.config import load_config
from pmjax.apps.demo import SEED_SPOT, rescaled_market, seed_strategies
from pmjax.apps.margin import compute_margins
from pmjax.apps.report import GREEK_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--out", str(out), "--json"])
    assert rc == 0
    return json.loads(buf.getvalue()), out


def test_default_out_is_reports_demo():
    assert build_parser().parse_args(["demo"]).out == os.path.join("reports", "demo")


def test_tables_structure_and_both_levels(demo, market):
    doc, _ = demo
    assert {"strategies", "books", "seed_portfolio", "greeks", "applicable", "like_for_like_notes", "notes",
            "files"} <= set(doc)
    levels = {s["level"] for s in doc["strategies"]}
    assert levels == {"BTC 70,000 (seed)", f"BTC {market.spot('BTC'):,.0f}"}
    names = {s["strategy"] for s in doc["strategies"]}
    assert len(names) == 4 and len(doc["strategies"]) == 8
    for lvl in levels:
        assert {s["strategy"] for s in doc["strategies"] if s["level"] == lvl} == names
    keys = {"rules", "span_risk", "span_total", "deribit", "var", "es", "span_risk_below_rules",
            "span_risk_below_rules_pct", "span_total_below_rules", "span_total_below_rules_pct", "positions",
            "recognised"}
    for s in doc["strategies"] + doc["books"]:
        assert keys - {"positions", "recognised"} <= set(s)
        assert s["span_risk_below_rules"] == pytest.approx(s["rules"] - s["span_risk"], rel=1e-12)
        assert s["span_total_below_rules"] == pytest.approx(s["rules"] - s["span_total"], rel=1e-12)
        assert s["span_total_below_rules_pct"] == pytest.approx(100 * s["span_total_below_rules"] / s["rules"])
    for s in doc["strategies"]:
        assert keys <= set(s)
    assert len(doc["books"]) == 2
    # the seed account qualifies: the applicable requirement is portfolio margin's SPAN total
    app, seed = doc["applicable"], doc["seed_portfolio"]
    assert seed["qualification"]["qualifies"] is True
    assert app["regime"] == "portfolio margin" and app["margin"] == pytest.approx(seed["span"]["total"])


def test_seed_books_rules_same_with_spot_as_position_or_collateral(demo, market):
    """Issue 14 item 1: the seed's 1 BTC and 1 ETH count as collateral however they are written, so both book rows
    have the same rules figure: the BTC covers the short call (nothing), the ETH condor its wider wing (90 USD at
    2,780/2,690 against 80 at 3,300/3,380) and the two long ETH puts their premium (was 92,370: the spot's value)."""
    doc, _ = demo
    full, oo = doc["books"]
    puts = next(p for p in doc["greeks"]["positions"] if p["quantity"] == 2.0)  # value: 2 x mark
    assert full["rules"] == pytest.approx(oo["rules"], rel=1e-12)
    assert full["rules"] == pytest.approx(90.0 + puts["value"], rel=1e-9)


def test_report_files_written(demo):
    doc, out = demo
    files = doc["files"]
    assert os.path.dirname(files["html"]) == str(out)
    for name in ("html", "json", "margin_bars", "risk_heatmap", "pnl_histogram", "contributions"):
        path = files[name]
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
        if path.endswith(".png"):
            with open(path, "rb") as fh:
                assert fh.read(8) == PNG_MAGIC, name
    html = (out / "report.html").read_text()
    for text in ("SPAN total below rules (like for like)", "Values and Greeks", "Worst scenarios",
                 "Rules: split by position", "Applicable requirement"):
        assert text in html, text
    saved = json.loads((out / "report.json").read_text())
    assert {"strategies", "books", "greeks", "like_for_like_notes", "applicable", "worst_scenarios"} <= set(saved)


def test_greeks_totals_are_position_sums(demo):
    g = demo[0]["greeks"]
    assert [p["instrument"] for p in g["positions"]] == [p["instrument"] for p in demo[0]["seed_portfolio"]["positions"]]
    for k in GREEK_COLUMNS:
        for u, tot in g["by_underlying"].items():
            rows = [p for p in g["positions"] if p["instrument"].split("-")[0].split("_")[0] == u]
            assert tot[k] == pytest.approx(sum(p[k] for p in rows), rel=1e-12, abs=1e-12), (u, k)
        assert sum(t[k] for t in g["by_expiry"].values()) == pytest.approx(
            sum(p[k] for p in g["positions"]), rel=1e-12, abs=1e-12)
    # the positions' values are the margin document's (USD book)
    for p, q in zip(g["positions"], demo[0]["seed_portfolio"]["positions"]):
        assert p["value"] == pytest.approx(q["value"], rel=1e-12) and p["delta"] == pytest.approx(q["delta"], rel=1e-12)
    # an option has vega, spot none
    assert any(p["vega"] != 0 for p in g["positions"]) and all(
        p["vega"] == 0 for p in g["positions"] if "-" not in p["instrument"])


def test_like_for_like_signs_and_notes(demo, market):
    """Re-derive each strategy's SPAN total against rules initial at the seed's BTC level: every strategy whose
    SPAN total exceeds rules is reported with a negative like-for-like saving and named by the notes, with the
    short option minimum it pays where that binds (the iron condor) and its scan risk otherwise."""
    doc, _ = demo
    config = load_config()
    m = rescaled_market(market, "BTC", SEED_SPOT["BTC"])
    rows = {s["strategy"]: s for s in doc["strategies"] if s["level"] == "BTC 70,000 (seed)"}
    notes = doc["like_for_like_notes"]
    worse = []
    for p in seed_strategies(m, scale_to_market=False):
        d = compute_margins(p, m, config, ["rules", "span"], dtype=jnp.float64)
        rules, total = d["rules"]["initial"], d["span"]["total"]
        row = rows[p.account]
        assert row["rules"] == pytest.approx(rules, rel=1e-12) and row["span_total"] == pytest.approx(total, rel=1e-9)
        assert (row["span_total_below_rules"] < 0) == (total > rules)
        assert (row["span_risk_below_rules"] > 0) == (d["span"]["risk"] < rules)
        if total > rules:
            worse.append(p.account)
            u = d["span"]["by_underlying"]["BTC"]
            som = u["short_option_minimum"]
            named = [n for n in notes if n.startswith(f"Portfolio margin does not beat rules for the {p.account} "
                                                      "at BTC 70,000")]
            assert len(named) == 1, notes
            if som > u["scan_risk"] + u["intra_spread"] + u["spot_charge"] - u["inter_credit"]:
                assert u["risk"] == pytest.approx(som)  # the short option minimum binds
                assert som == pytest.approx(config["span"]["underlyings"]["BTC"]["short_option_minimum"]
                                            * m.spot("BTC"))
                assert f"{som:,.0f}" in named[0] and "short option minimum" in named[0]
                assert f"{rules + d['span']['nov']:,.0f}" in named[0]  # the capped loss net of the premium
            else:
                assert f"scan risk {d['span']['risk']:,.0f}" in named[0]
    assert any("iron condor" in w for w in worse)
    assert "above it for" in notes[0] and all(w in notes[0] for w in worse)


def test_why_figures_differ_uses_computed_numbers(demo, market):
    doc, _ = demo
    notes = " ".join(doc["notes"])
    assert f"{market.spot('BTC') / SEED_SPOT['BTC']:.3f}x" in notes
    full, oo = doc["books"]
    share = 100 * (full["span_risk"] - oo["span_risk"]) / full["span_risk"]
    assert f"({share:.0f}% of it from the spot's price risk)" in notes


def test_demo_text_shows_both_bases_and_greeks(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 0
    for text in ("SPAN risk below rules", "SPAN total below rules (like for like)", "values and greeks by position",
                 "totals by underlying", "vanna", "volga", "Applicable requirement", "Like for like:",
                 "does not beat rules", "written:"):
        assert text in out, text
