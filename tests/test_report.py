"""Issue 5: the comparison, the HTML report and its plots, the demo's strategy table."""

import base64
import io
import json
import re
import shutil
import subprocess

import jax.numpy as jnp
import matplotlib.image as mpimg
import numpy as np
import pytest

from pmjax.cli import main
from pmjax.config import load_config
from pmjax.demo import rescaled_market, seed_portfolio, seed_strategies
from pmjax.measures import compute_margins
from pmjax.report import comparison

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def assert_real_png(data: bytes):
    """A decodable PNG of real size whose pixels are not all one colour."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert np.ptp(img[..., :3]) > 0.1  # something was drawn


@pytest.mark.parametrize("scale", [False, True])
def test_each_hedged_seed_strategy_has_span_risk_below_rules(market, scale):
    m = market if scale else rescaled_market(market, "BTC", 70_000.0)
    config = load_config()
    for p in seed_strategies(m, scale_to_market=scale):
        d = compute_margins(p, m, config, ["rules", "span"], dtype=jnp.float64)
        assert d["span"]["risk"] < d["rules"]["initial"], p.account
        assert d["rules"]["strategies"], f"rules recognised no strategy in {p.account}"


def test_seed_strategies_at_seed_level_use_the_seed_strikes(market):
    m = rescaled_market(market, "BTC", 70_000.0)
    assert m.spot("BTC") == 70_000.0 and market.spot("BTC") != 70_000.0
    names = [[x.instrument.name for x in p.positions] for p in seed_strategies(m, scale_to_market=False)]
    assert names[0] == ["BTC-30JAN26-70000-P", "BTC-30JAN26-69000-P"]
    assert names[1] == ["BTC-30JAN26-72000-C", "BTC-30JAN26-73000-C", "BTC-30JAN26-68000-P", "BTC-30JAN26-67000-P"]
    # the rescaled market keeps the smile in moneyness: the 70k put there has the vol the 89k put has here
    e = m.underlying("BTC").smiles
    k = 70_000.0
    f = market.spot("BTC") / 70_000.0
    expiry = sorted(e)[5]
    assert m.vol("BTC", expiry, k) == pytest.approx(market.vol("BTC", expiry, k * f), rel=1e-12)


def test_comparison_gains_against_rules():
    doc = {"rules": {"initial": 200.0}, "span": {"total": 50.0}, "deribit": {"initial": 100.0},
           "var": {"var": 20.0, "es": 40.0}}
    rows = {r["method"]: r for r in comparison(doc)}
    assert rows["span"]["gain_vs_rules"] == pytest.approx(0.75)
    assert rows["deribit"]["saving_vs_rules"] == pytest.approx(100.0)
    assert rows["es"]["margin"] == 40.0 and rows["rules"]["gain_vs_rules"] == 0.0


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, market):
    out = tmp_path_factory.mktemp("report")
    pf = out / "book.yaml"
    book = seed_portfolio(market)
    pf.write_text("account: seed\ncollateral: {USD: 50000}\npositions:\n" + "".join(
        f"  - {{instrument: {p.instrument.name}, quantity: {p.quantity}}}\n" for p in book.positions))
    assert main(["report", str(pf), "--out", str(out / "r"), "--paths", "4000", "--json"]) == 0
    return out / "r"


def test_report_writes_html_json_and_real_plots(report_dir):
    html = (report_dir / "report.html").read_text()
    doc = json.loads((report_dir / "report.json").read_text())
    assert {"rules", "span", "deribit", "var", "comparison", "qualification"} <= set(doc)
    assert doc["qualification"]["qualifies"] is True
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert {a for a, _ in imgs} == {"margin_bars", "risk_heatmap", "pnl_histogram", "contributions"}
    for name, data in imgs:
        png = base64.b64decode(data)
        assert_real_png(png)
        assert (report_dir / f"report_{name}.png").read_bytes() == png
    assert sum(doc["var"]["contributions"]) == pytest.approx(doc["var"]["es"], rel=1e-6)
    assert "{img:" not in html and html.count("<table>") >= 5


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(report_dir, tmp_path):
    shot = tmp_path / "shot.png"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--window-size=1200,3000", f"--screenshot={shot}", (report_dir / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    assert_real_png(shot.read_bytes())
