# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 Margin backtest: every measure against the next day's P&L
#
# `pmjax.apps.backtest` walks ten stationary books (re-struck every day at fixed moneyness and days to expiry on
# a synthetic market: spot = the day's close, forwards = spot, vols = a skewed smile built from the day's DVOL and
# trailing 7-day return, or flat at DVOL) through the history and compares each day's margin (SPAN with the day's
# calibrated range, the Deribit grid, Monte Carlo VaR and ES, rules) with the loss over the margin period of risk
# (1 or 2 days), revalued in full at the later close, DVOL and smile. Days are a vmapped batch axis.
# `PMJAX_NOTEBOOK_SMALL=1` runs a month with few paths; the full run takes the whole DVOL period
# (2021-04 .. 2026-01). Runs as a plain script: `python notebooks/02_margin_backtest.py`.

# %%
import dataclasses
import os
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64: pmjax changes no JAX setting by itself
from pmjax.apps import backtest as B  # noqa: E402
from pmjax.apps import backtest_smile as BS  # noqa: E402
from pmjax.apps import calibrate as C  # noqa: E402
from pmjax.apps.tables import table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"
settings = (B.BacktestSettings(start="2022-10-25", end="2022-11-20", paths=256) if SMALL
            else B.BacktestSettings(paths=int(os.environ.get("PMJAX_BACKTEST_PATHS", 2000))))

# %% [markdown]
# ## The skewed smile and its fit to the Deribit chains
#
# sigma = A(T) + s_t x + c x^2 / A30 with x = ln(K/F)/sqrt(T) (clipped to +-2), A30 = alpha DVOL, A(T) = A30 (1 +
# (beta0 + beta1 r) ln(T / 30d)) and the skew rule s_t = a + b r, r the trailing 7-day log return. Fitted by
# least squares on the bundled 2026-01-02 and 2026-02-06 chains; the 2020-05-21 BTC chain (shared data only,
# before DVOL) is held out. RMSE in vol points: with A30 = alpha DVOL (as in the backtest), with A30 = the
# chain's own 30-day ATM (the shape alone), and the flat smile at DVOL of the first backtest.

# %%
shared = ROOT.parent / "shared" / "data"
points = BS.chain_points(str(shared))
print(BS.FITTED)
print(table([[r["chain"], r["underlying"], r["points"], "yes" if r["in_fit"] else "held out", f"{r['ret_7d']:+.3f}",
              f"{r['skew']:+.4f}", f"{r['rmse_dvol']:.2f}", f"{r['rmse_chain_atm']:.2f}", f"{r['rmse_flat_dvol']:.2f}"]
             for r in BS.fit_table(BS.FITTED, points)],
            ["chain", "und", "points", "fit", "r 7d", "skew", "RMSE dvol", "RMSE chain ATM", "RMSE flat"]))
fit_points = [p for p in points if p.chain != "2020-05-21"]
fig, axes = plt.subplots(1, len(fit_points), figsize=(4 * len(fit_points), 3.6), sharey=False)
for ax, p in zip(np.atleast_1d(axes), fit_points):
    for days_out, color in ((3, "C0"), (30, "C1"), (90, "C2")):
        tenors = np.unique(p.years)
        t = tenors[np.argmin(np.abs(tenors * 365 - days_out))]
        m = p.years == t
        ax.plot(p.log_moneyness[m], 100 * p.iv[m], ".", color=color, ms=3, label=f"chain {t * 365:.0f}d")
        lk = np.linspace(p.log_moneyness[m].min(), p.log_moneyness[m].max(), 50)
        ax.plot(lk, 100 * BS.FITTED.vol(p.dvol, p.ret, lk, t), "-", color=color, lw=1)
        ax.plot(lk, 100 * BS.FITTED.vol(p.atm30 / BS.FITTED.alpha, p.ret, lk, t), ":", color=color, lw=1)
    ax.axhline(100 * p.dvol, color="k", lw=0.6, ls="--", label="DVOL (flat)")
    ax.set_title(f"{p.underlying} {p.chain} (r7d {p.ret:+.2f})", fontsize=9)
    ax.set_xlabel("ln(K/F)")
np.atleast_1d(axes)[0].set_ylabel("implied vol %")
np.atleast_1d(axes)[0].legend(fontsize=6)
fig.suptitle("Chain marks (dots), the smile from DVOL (line) and from the chain's 30-day ATM (dotted)", fontsize=9)
fig.tight_layout()
fig.savefig(OUT / "02_smile_fit.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Run: the skewed smile and a 1-day period of risk (the default), then flat and 2 days beside it

# %%
t0 = time.perf_counter()
result = B.run_backtest(settings=settings)
days = result.days
print(f"{len(days)} days {days.dates[0]} .. {days.dates[-1]}, {len(result.books)} books, "
      f"{', '.join(settings.measures)} in {time.perf_counter() - t0:.1f} s")
others = {}
for smile, h in (("flat", 1), ("skewed", 2), ("flat", 2)):
    t0 = time.perf_counter()
    others[f"{smile} {h}d"] = B.run_backtest(settings=dataclasses.replace(settings, smile=smile, mpor_days=h))
    print(f"{smile} smile, {h}-day MPOR in {time.perf_counter() - t0:.1f} s")
runs = {"skewed 1d": result, **others}

# %% [markdown]
# ## Exceedance table (coverage 99%)

# %%
rows = result.table()
lo, hi = C.kupiec_region(len(days), settings.coverage)
print(f"Kupiec 95% acceptance region for {len(days)} days: {lo} .. {hi} exceedances")
print(table([[r["book"], r["measure"], r["exceedances"] if r["applicable"] else "n/a", round(r["expected"], 2),
              f"{r['kupiec_p']:.3f}", f"{r['christoffersen_p']:.3f}", round(r["mean_margin"], 1)] for r in rows],
            ["book", "measure", "exceed", "expected", "kupiec p", "christ. p", "mean margin USD"]))

# %% [markdown]
# ## Margin against the next day's loss, per book

# %%
dates = days.dates.astype("datetime64[D]").astype(object)
books = list(result.books)
fig, axes = plt.subplots(len(books), 1, figsize=(12, 2.6 * len(books)), sharex=True)
for ax, b in zip(np.atleast_1d(axes), books):
    loss = -result.pnl[b]
    ax.fill_between(dates, 0, np.maximum(loss, 0), color="0.6", lw=0, label="next-day loss")
    for m, c in result.cover[b].items():
        if np.any(c != 0):
            ax.plot(dates, c, lw=0.9, label=m)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel(f"{b}\nUSD")
    ax.legend(loc="upper left", fontsize=7, ncol=6)
np.atleast_1d(axes)[0].set_title("Each day's margin vs the loss to the next close (1 coin per leg)")
fig.tight_layout()
fig.savefig(OUT / "02_margin_vs_loss.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Exceedances per measure and book

# %%
measures = list(settings.measures)
fig, ax = plt.subplots(figsize=(10, 4))
width = 0.8 / len(measures)
for k, m in enumerate(measures):
    xs = np.arange(len(books)) + k * width
    by = {r["book"]: r for r in rows if r["measure"] == m}
    # a measure that asks nothing of a book (Deribit on a spot holding) is left out
    ax.bar(xs, [by[b]["exceedances"] if by[b]["applicable"] else np.nan for b in books], width, label=m)
ax.axhline((1 - settings.coverage) * len(days), color="k", ls=":", label="expected")
ax.set_xticks(np.arange(len(books)) + 0.4 - width / 2, books, fontsize=8)
ax.set_ylabel("exceedances")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "02_exceedances.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Loss over margin (a ratio above 1 is an exceedance) for the seed BTC/ETH book

# %%
b = "seed BTC/ETH"
fig, ax = plt.subplots(figsize=(10, 4))
loss = -result.pnl[b]
for m, c in result.cover[b].items():
    ratio = loss / np.where(c > 0, c, np.nan)
    if not np.isfinite(ratio).any():  # no day with a positive margin (rules: the coins held cover the book)
        continue
    ax.hist(np.clip(ratio[np.isfinite(ratio)], -1.5, 1.5), bins=60, histtype="step", label=m)
ax.axvline(1.0, color="k", ls=":")
ax.set_xlabel("next-day loss / margin")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "02_loss_over_margin_seed.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Exceedances per book: skewed smile against flat, 1-day against 2-day period of risk

# %%
fig, axes = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
for ax, m in zip(axes, ("var", "span")):
    width = 0.8 / len(runs)
    for k, (name, res) in enumerate(runs.items()):
        by = {r["book"]: r for r in res.table() if r["measure"] == m}
        ax.bar(np.arange(len(books)) + k * width, [by[b]["exceedances"] for b in books], width, label=name)
        ax.axhline((1 - settings.coverage) * len(res.days), color=f"C{k}", ls=":", lw=0.8)
    ax.set_ylabel(f"{m} exceedances")
    ax.legend(fontsize=8, ncol=4)
axes[-1].set_xticks(np.arange(len(books)) + 0.4 - width / 2, books, fontsize=7, rotation=20)
axes[0].set_title("Exceedances (dotted: expected) by smile and margin period of risk")
fig.tight_layout()
fig.savefig(OUT / "02_smile_mpor_exceedances.png", dpi=80 if SMALL else 110)
for name, res in runs.items():
    loss = {b: -res.pnl[b] for b in books}
    print(f"{name}: mean loss USD " + ", ".join(f"{b} {np.mean(np.maximum(loss[b], 0)):.0f}" for b in books))
print("figures in", OUT)
