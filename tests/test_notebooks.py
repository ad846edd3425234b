"""The research notebooks (jupytext percent scripts in notebooks/) run end to end as plain scripts on small
settings and write their figures."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01_scan_range_calibration.py": ["01_rolling_scan_ranges.png", "01_cumulative_exceedances.png",
                                     "01_dvol_changes.png", "01_procyclicality.png"],
    "02_margin_backtest.py": ["02_margin_vs_loss.png", "02_exceedances.png", "02_loss_over_margin_seed.png",
                              "02_smile_fit.png", "02_smile_mpor_exceedances.png"],
    "03_gpu_batch_stress.py": ["03_batch_stress.png", "03_span_throughput.png"],
    "04_margin_optimal_hedge.py": ["04_notional_frontier.png", "04_cost_sensitivity.png"],
}


def test_notebooks_are_jupytext_percent_scripts():
    assert sorted(p.name for p in (REPO / "notebooks").glob("*.py")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        text = (REPO / "notebooks" / name).read_text(encoding="utf-8")
        assert "format_name: percent" in text and text.count("\n# %%") >= 4


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_on_small_settings(name, tmp_path):
    env = dict(os.environ, PMJAX_NOTEBOOK_SMALL="1", PMJAX_NOTEBOOK_OUT=str(tmp_path), MPLBACKEND="Agg",
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run([sys.executable, str(REPO / "notebooks" / name)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for png in NOTEBOOKS[name]:
        f = tmp_path / png
        assert f.exists() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    if name.startswith("01"):
        assert "out of sample" in proc.stdout and "procyclicality of the vol range" in proc.stdout
    if name.startswith("02"):
        assert "Kupiec 95% acceptance region" in proc.stdout and "seed BTC/ETH" in proc.stdout
    if name.startswith("03"):
        assert "accounts/s" in proc.stdout and "ftx collapse" in proc.stdout
    if name.startswith("04"):
        assert "seed hedge:" in proc.stdout and "Rockafellar-Uryasev" in proc.stdout
