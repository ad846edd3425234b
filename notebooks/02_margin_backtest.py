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
# `pmjax.apps.backtest` walks stationary books (re-struck every day at fixed moneyness and days to expiry on a
# synthetic market: spot = the day's close, forwards = spot, flat vol = the day's DVOL) through the history
# and compares each day's margin (SPAN with the day's calibrated range, the Deribit grid, Monte Carlo VaR
# and ES, rules) with the loss of the next day, revalued in full at the next close and DVOL. Days are a
# vmapped batch axis. `PMJAX_NOTEBOOK_SMALL=1` runs a month with few paths; the full run takes the whole
# DVOL period (2021-04 .. 2026-01). Runs as a plain script: `python notebooks/02_margin_backtest.py`.

# %%
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
from pmjax.apps import calibrate as C  # noqa: E402
from pmjax.apps.tables import table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"
settings = (B.BacktestSettings(start="2022-10-25", end="2022-11-20", paths=256) if SMALL
            else B.BacktestSettings(paths=int(os.environ.get("PMJAX_BACKTEST_PATHS", 2000))))

# %% [markdown]
# ## Run

# %%
t0 = time.perf_counter()
result = B.run_backtest(settings=settings)
days = result.days
print(f"{len(days)} days {days.dates[0]} .. {days.dates[-1]}, {len(result.books)} books, "
      f"{', '.join(settings.measures)} in {time.perf_counter() - t0:.1f} s")

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
print("figures in", OUT)
