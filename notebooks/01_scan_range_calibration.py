# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 Scan-range calibration on BTC/ETH history, in and out of sample
#
# The SPAN price and vol scan ranges of each underlying, calibrated with `pmjax.apps.calibrate` from the bundled
# Binance closes (2017-08-17 .. 2026-01-06) and Deribit DVOL (2021-03-24 .. 2026-04-06), under two rules:
#
# - **daily**: range_t = max(q_t sigma_t, floor_t), re-set every close; q_t the 99% quantile of absolute moves
#   standardized by the EWMA forecast of the day before they started, floor_t the 95% quantile of ten years of
#   absolute moves (EMIR's ten-year lookback);
# - **through the cycle (TTC, what `pmjax calibrate --out` writes and `configs/span.yaml` ships)**: re-set quarterly,
#   1.25 x max(99% quantile of ten years of absolute moves with 25% of the weight on the most stressed 60 days,
#   the daily rule's mean range over the last year), the 25% buffer used up when that rises above the range in
#   force (EMIR Art. 28(1)(a), (b) and (c)).
#
# Each range is set at a close from data up to it and applied one day later (`lag_days` 1) to the next day's move.
# The model is calibrated on data up to 2021-12-31 and tested in sample and out of sample (2022-01 .. 2026); the
# TTC range keeps being re-set every quarter after the split, from data up to each re-set.
# Runs as a plain script too: `python notebooks/01_scan_range_calibration.py` (figures in `notebook-out/`, or
# `$PMJAX_NOTEBOOK_OUT`: `reports/notebooks` rewrites the committed ones).

# %%
import dataclasses
import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pmjax.apps import calibrate as C  # noqa: E402
from pmjax.apps import calibrate_ranges as R  # noqa: E402
from pmjax.apps.tables import table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"
SPLIT = "2021-12-31"

# %% [markdown]
# ## Calibrate (the same call as `pmjax calibrate --history bundled --split 2021-12-31`)

# %%
settings = C.CalibrationSettings(coverage=0.99, horizon_days=1, lag_days=1)
data = C.load_history([C.BUNDLED])
cal = C.calibrate(data, settings, split=SPLIT)


def fmt(p):
    return "n/a" if p is None else f"{p:.4f}"


def mark_exceedances(ax, dates, move, daily, ttc):
    """Dots where |move| exceeded the daily rule's range, crosses where it exceeded the TTC range."""
    for rng, style, label in ((daily, dict(s=14, color="C3", zorder=3), "daily-rule"),
                              (ttc, dict(s=40, marker="x", color="k", zorder=4), "TTC")):
        hit = np.abs(move) > rng
        ax.scatter(np.asarray(dates)[hit], np.abs(move)[hit], **style, label=f"{label} exceedances ({int(hit.sum())})")


rows = []
for u, e in cal.doc["underlyings"].items():
    for what, key in (("price", "backtest"), ("vol", "vol_backtest")):
        for rule, prefix in (("TTC", ""), ("daily", "daily_")):
            for period, k in (("in sample", prefix + key), ("out of sample", f"{prefix}{key}_oos"),
                              ("frozen config", f"{prefix}{key}_frozen_oos")):
                b = e[k]
                if b is None:
                    rows.append([u, what, rule, period, "none (below)", 0, "", "", "", "", "", ""])
                    print(f"{u} {what} {rule} {period}: {e[f'{k}_na']}")
                    continue
                cost = f" (x{b['cost_vs_daily']:.2f})" if b.get("cost_vs_daily") else ""
                rows.append([u, what, rule, period, f"{b['start']}..{b['end']}", b["days"],
                             f"{b['exceedances']} ({b['up_exceedances']}+/{b['down_exceedances']}-)",
                             f"{b['expected']:.1f}", fmt(b["kupiec_p"]), fmt(b["christoffersen_p"]),
                             b["traffic_light"], f"{b['mean_range']:.4f}{cost}"])
print(table(rows, ["underlying", "range", "rule", "backtest", "period", "days", "exceed", "expected",
                   "kupiec p (exact, one-sided)", "christoffersen p", "light", "mean range (x daily)"],
            title=f"99% one-day ranges applied a day after they are set; calibrated on data up to {SPLIT}"))
for u, e in cal.doc["underlyings"].items():
    t = e["ttc"]
    print(f"{u}: TTC at {e['as_of']} (re-set {t['price']['reset']}): price scan range {e['price_scan_range']:.4f} "
          f"(stress-weighted ten-year q99 {t['price']['lookback_quantile']:.4f}, "
          f"last year's daily mean {t['price']['daily_mean']:.4f}), "
          f"vol scan range {e['vol_scan_range']:.4f}; daily rule: price {e['daily_price_scan_range']:.4f}, vol "
          f"{e['daily_vol_scan_range']:.4f}; one-sided coverage limit over {e['backtest_oos']['days']} days: "
          f"{C.coverage_limit(e['backtest_oos']['days'], 0.99)} exceedances")
for s in cal.doc["inter_spreads"]:
    print(f"inter spread {s['legs']}: credit_rate {s['credit_rate']:.3f}, correlation {s['correlation']:.3f}, "
          f"beta {s['beta']:.3f} (data {s['start']}..{s['end']})")

# %% [markdown]
# ## Rolling ranges as applied against the realized moves

# %%
split_day = np.datetime64(SPLIT).astype(object)
fig, axes = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
for ax, (u, pr) in zip(axes, cal.prices.items()):
    applied = R.applied_range(pr)
    t = np.nonzero(np.isfinite(applied) & np.isfinite(pr.move))[0]
    dates = pr.dates[t].astype("datetime64[D]").astype(object)
    ttc = R.applied_range(cal.ttc_prices[u])[t]
    ax.plot(dates, np.abs(pr.move[t]), lw=0.5, color="0.6", label="|next-day move|")
    ax.plot(dates, applied[t], lw=1.0, color="C0", label="daily scan range (set two closes before the move ends)")
    ax.plot(dates, pr.floor[t - 1], lw=0.8, ls="--", color="C2", label="ten-year floor")
    ax.plot(dates, ttc, lw=1.6, color="C4", label="through-the-cycle range (re-set quarterly)")
    mark_exceedances(ax, dates, pr.move[t], applied[t], ttc)
    ax.axvline(split_day, color="k", ls=":", lw=1)
    ax.set_ylabel(f"{u} one-day move")
    ax.set_ylim(0, min(0.45, float(np.nanmax(np.abs(pr.move[t]))) * 1.05))
    ax.legend(loc="upper right", fontsize=8)
axes[0].set_title(f"99% one-day SPAN price scan range, daily (EWMA-scaled, floored) and through the cycle, lag 1, "
                  f"vs the realized move; split {SPLIT}")
fig.tight_layout()
fig.savefig(OUT / "01_rolling_scan_ranges.png", dpi=80 if SMALL else 120)

# %% [markdown]
# ## Exceedances through time: the cumulative count against its expectation, in and out of sample

# %%
fig, ax = plt.subplots(figsize=(10, 4))
for u, pr in cal.prices.items():
    days = R.backtest_days(pr, 0, pr.last)
    dates = pr.dates[days].astype("datetime64[D]").astype(object)
    ax.step(dates, np.cumsum(np.abs(pr.move[days]) > R.applied_range(pr)[days]), where="post", label=f"{u} price")
    ax.step(dates, np.cumsum(np.abs(pr.move[days]) > R.applied_range(cal.ttc_prices[u])[days]), where="post", lw=2,
            label=f"{u} price, TTC")
for u, vr in cal.vols.items():
    days = R.backtest_days(vr, 0, vr.last)
    dates = vr.dates[days].astype("datetime64[D]").astype(object)
    ax.step(dates, np.cumsum(np.abs(vr.move[days]) > R.applied_range(vr)[days]), where="post", ls="--",
            label=f"{u} vol")
pr = cal.prices["BTC"]
days = R.backtest_days(pr, 0, pr.last)
ax.plot(pr.dates[days].astype(object), 0.01 * np.arange(1, len(days) + 1), color="k", ls=":",
        label="expected (1% a day)")
ax.axvline(split_day, color="k", lw=0.8)
ax.set_ylabel("cumulative exceedances")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "01_cumulative_exceedances.png", dpi=80 if SMALL else 120)

# %% [markdown]
# ## Vol scan range: EWMA-scaled DVOL changes with a floor, as applied

# %%
fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
for ax, (u, vr) in zip(axes, cal.vols.items()):
    applied = R.applied_range(vr)
    t = np.nonzero(np.isfinite(applied) & np.isfinite(vr.move))[0]
    dates = vr.dates[t].astype("datetime64[D]").astype(object)
    ax.plot(dates, np.abs(vr.move[t]), lw=0.5, color="0.6", label="|next-day DVOL change|")
    ax.plot(dates, applied[t], lw=1.0, color="C1", label="daily vol scan range (lag 1)")
    ttc = R.applied_range(cal.ttc_vols[u])[t]
    ax.plot(dates, ttc, lw=1.6, color="C4", label="through-the-cycle vol range")
    mark_exceedances(ax, dates, vr.move[t], applied[t], ttc)
    ax.set_ylabel(f"{u} DVOL points (decimal)")
    ax.legend(loc="upper right", fontsize=8)
axes[0].set_title("99% one-day vol scan range, daily and through the cycle, vs the realized DVOL change")
fig.tight_layout()
fig.savefig(OUT / "01_dvol_changes.png", dpi=80 if SMALL else 120)

# %% [markdown]
# ## Anti-procyclicality (EMIR RTS 153/2013 Art. 28): the vol range under each tool
#
# `floor` (ten-year lookback, the default), `stress` (25% weight on the largest range of the lookback) and
# `buffer` (25% on top, used up when the range rises) on the daily rule, and the through-the-cycle range.
# Peak-to-trough ratio and the largest 10-day increase of each; the out-of-sample backtest of each.

# %%
variants = [("none", ()), ("floor (default)", ("floor",)), ("floor + buffer", ("floor", "buffer")),
            ("floor + stress", ("floor", "stress")), ("all three", ("floor", "stress", "buffer"))]
fig, axes = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
pc_rows = []
for ax, u in zip(axes, cal.vols):
    for name, tools in variants:
        vr = R.vol_scan_ranges(data.dvols[u], dataclasses.replace(settings, vol_apc=tools), cutoff=SPLIT)
        pc = R.procyclicality(vr)
        oos = R.backtest(vr, R.backtest_days(vr, vr.index(SPLIT), vr.last, forward=True), settings.coverage)
        pc_rows.append([u, name, f"{pc['peak_to_trough']:.1f}", f"{pc['max_increase_10d']:.2f}",
                        f"{pc['max_increase_30d']:.2f}", oos["exceedances"], fmt(oos["kupiec_p"]),
                        fmt(oos["christoffersen_p"])])
        ax.plot(vr.dates.astype(object), vr.range, lw=1.0,
                label=f"{name}: peak/trough {pc['peak_to_trough']:.1f}, 10-day x{pc['max_increase_10d']:.1f}")
    tv = cal.ttc_vols[u]
    pc = R.procyclicality(tv)
    b = cal.doc["underlyings"][u]["vol_backtest_oos"]
    pc_rows.append([u, "through the cycle", f"{pc['peak_to_trough']:.1f}", f"{pc['max_increase_10d']:.2f}",
                    f"{pc['max_increase_30d']:.2f}", b["exceedances"], fmt(b["kupiec_p"]), fmt(b["christoffersen_p"])])
    ax.plot(tv.dates.astype(object), tv.range, lw=2.0, color="k",
            label=f"through the cycle: peak/trough {pc['peak_to_trough']:.1f}, 10-day x{pc['max_increase_10d']:.1f}")
    ax.set_ylabel(f"{u} vol scan range")
    ax.legend(loc="upper right", fontsize=7)
axes[0].set_title("Vol scan range under the anti-procyclicality tools")
fig.tight_layout()
fig.savefig(OUT / "01_procyclicality.png", dpi=80 if SMALL else 120)
print(table(pc_rows, ["underlying", "vol rule / APC", "peak/trough", "10-day x", "30-day x", "OOS exceed", "kupiec p",
                      "christoffersen p"], title="procyclicality of the vol range by tool"))
print("figures in", OUT)
