# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 Scan-range calibration on BTC/ETH history
#
# The SPAN price scan range of each underlying, calibrated day by day from the bundled Binance closes
# (2017-08-17 .. 2026-01-06) with `pmjax.apps.calibrate`: range_t = max(q_t sigma_t, floor_t), q_t the 99% quantile
# of EWMA-standardized absolute daily moves, floor_t the 95% quantile of ten years of absolute moves. Each
# range is set at a close and tested against the next day's move (no look-ahead). The vol scan range comes
# from DVOL changes. Runs as a plain script too: `python notebooks/01_scan_range_calibration.py`
# (figures in `notebook-out/`, or `$PMJAX_NOTEBOOK_OUT`: `reports/notebooks` rewrites the committed ones).

# %%
import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pmjax.apps import calibrate as C  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"

# %% [markdown]
# ## Calibrate (the same call as `pmjax calibrate --history bundled`)

# %%
settings = C.CalibrationSettings(coverage=0.99, horizon_days=1)
cal = C.calibrate(C.load_history([C.BUNDLED]), settings)
for u, e in cal.doc["underlyings"].items():
    b = e["backtest"]
    lo, hi = C.kupiec_region(b["days"], settings.coverage)
    print(f"{u}: price scan range {e['price_scan_range']:.4f} (floor {e['long_run_floor']:.4f}, vol-scaled "
          f"{e['scaled_range']:.4f}), vol scan range {e['vol_scan_range']:.4f}; backtest {b['start']}..{b['end']}: "
          f"{b['exceedances']} exceedances in {b['days']} days, expected {b['expected']:.2f}, Kupiec region "
          f"{lo}..{hi}, Kupiec p {b['kupiec_p']:.3f}, Christoffersen p {b['christoffersen_p']:.3f}")
for s in cal.doc["inter_spreads"]:
    print(f"inter spread {s['legs']}: credit_rate {s['credit_rate']:.3f}, correlation {s['correlation']:.3f}, "
          f"beta {s['beta']:.3f}")

# %% [markdown]
# ## Rolling ranges against the realized moves

# %%
fig, axes = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
for ax, (u, pr) in zip(axes, cal.prices.items()):
    t = pr.tested
    dates = pr.dates[t].astype("datetime64[D]").astype(object)
    ax.plot(dates, np.abs(pr.move[t]), lw=0.5, color="0.6", label="|next-day move|")
    ax.plot(dates, pr.range[t], lw=1.2, color="C0", label="scan range (set the day before)")
    ax.plot(dates, pr.floor[t], lw=0.8, ls="--", color="C2", label="long-run floor")
    hit = pr.hits[t]
    ax.scatter(np.asarray(dates)[hit], np.abs(pr.move[t])[hit], s=14, color="C3", zorder=3,
               label=f"exceedances ({int(hit.sum())})")
    ax.set_ylabel(f"{u} one-day move")
    ax.set_ylim(0, min(0.45, float(np.nanmax(np.abs(pr.move[t]))) * 1.05))
    ax.legend(loc="upper right", fontsize=8)
axes[0].set_title("99% one-day SPAN price scan range (EWMA-scaled, floored) vs the realized move")
fig.tight_layout()
fig.savefig(OUT / "01_rolling_scan_ranges.png", dpi=80 if SMALL else 120)

# %% [markdown]
# ## Exceedances through time: the cumulative count against its expectation

# %%
fig, ax = plt.subplots(figsize=(10, 4))
for u, pr in cal.prices.items():
    t = pr.tested
    dates = pr.dates[t].astype("datetime64[D]").astype(object)
    ax.step(dates, np.cumsum(pr.hits[t]), where="post", label=f"{u} exceedances")
ax.plot(dates, 0.01 * np.arange(1, len(dates) + 1), color="k", ls=":", label="expected (1% a day)")
ax.set_ylabel("cumulative exceedances")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "01_cumulative_exceedances.png", dpi=80 if SMALL else 120)

# %% [markdown]
# ## Vol scan range: DVOL changes and their 99% quantile

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (u, vr) in zip(axes, cal.vols.items()):
    ch = vr.change[np.isfinite(vr.change)]
    ax.hist(ch, bins=120, color="C0", alpha=0.8)
    for x in (-vr.vol_scan_range, vr.vol_scan_range):
        ax.axvline(x, color="C3", ls="--")
    ax.set_yscale("log")
    ax.set_title(f"{u} DVOL one-day change; vol scan range +-{vr.vol_scan_range:.3f}")
fig.tight_layout()
fig.savefig(OUT / "01_dvol_changes.png", dpi=80 if SMALL else 120)
print("figures in", OUT)
