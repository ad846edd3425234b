# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 Batch stress test: many accounts under the historical stress days, SPAN and Deribit
#
# Synthetic desk accounts (random long/short books of the bundled market's listed BTC and ETH options,
# perpetuals and futures) are padded to one bucket, stacked along an accounts axis and run through SPAN,
# the Deribit grid and the four named stress days of `configs/scenarios/stress_days.yaml` in jitted, vmapped calls
# (`pmjax.batch`, `pmjax.apps.stress`). On a GPU the same code runs there (JAX's default device). Sizes:
# `PMJAX_NB_ACCOUNTS` (default 4,096; 48 with `PMJAX_NOTEBOOK_SMALL=1`).
# Runs as a plain script: `python notebooks/03_gpu_batch_stress.py`.

# %%
import os
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64: pmjax changes no JAX setting by itself
from pmjax.batch.accounts import build_batch  # noqa: E402
from pmjax.scenarios.named import load_scenarios
from pmjax.apps.stress import span_batch, stress_pnl
from pmjax.batch.sharding import vmapped  # noqa: E402
from pmjax.measures.deribit import deribit_margin, deribit_params  # noqa: E402
from pmjax.io.config import CONFIG_DIR, load_config  # noqa: E402
from pmjax.core.instruments import Instrument  # noqa: E402
from pmjax.io.market import load_market  # noqa: E402
from pmjax.core.portfolio import Position, make_portfolio  # noqa: E402
from pmjax.measures.span import span_params  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"
N_ACCOUNTS = int(os.environ.get("PMJAX_NB_ACCOUNTS", 48 if SMALL else 4096))
print("device:", jax.devices()[0], "| accounts:", N_ACCOUNTS)

# %% [markdown]
# ## Accounts: random books of listed contracts

# %%
market = load_market()
config = load_config()
listed = []
for u in ("BTC", "ETH"):
    listed += [Instrument(u, "option", "inverse", e, k, r) for e, k in market.listed_strikes(u, 0.35)
               for r in ("call", "put")]
    listed += [Instrument(u, "perpetual", "inverse")] + [Instrument(u, "future", "inverse", e)
                                                         for e in market.underlying(u).forwards
                                                         if market.years_to(e) > 0]
rng = np.random.default_rng(0)
portfolios = []
for i in range(N_ACCOUNTS):
    picks = rng.choice(len(listed), size=int(rng.integers(2, 15)), replace=False)
    pos = [Position(listed[p], float(rng.choice([-1, 1]) * rng.integers(1, 6) * (1 if listed[p].underlying == "BTC"
                                                                                   else 10))) for p in picks]
    portfolios.append(make_portfolio(pos, account=f"acct-{i:05d}", source="synthetic", merge_notice=False))
scenarios = load_scenarios(str(CONFIG_DIR / "scenarios" / "stress_days.yaml"))
print(f"{len(listed)} listed contracts; {len(scenarios)} stress days: {', '.join(s.name for s in scenarios)}")

# %% [markdown]
# ## One batch: SPAN, Deribit, stress P&L (first call compiles; the second is timed)

# %%
t0 = time.perf_counter()
batch = build_batch(portfolios, market)
t_build = time.perf_counter() - t0
params = span_params(config)
dparams = deribit_params(config)
timings = {}
for run in range(2):
    t0 = time.perf_counter()
    span = span_batch(batch, params)
    timings["span"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    deribit = vmapped(deribit_margin)(batch.books, dparams)  # jit(vmap(deribit_margin)) over the accounts
    deribit.initial.block_until_ready()
    timings["deribit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pnl = stress_pnl(batch, scenarios)
    timings["stress"] = time.perf_counter() - t0
print(f"built {batch.n_accounts} books of {batch.size} rows in {t_build:.2f} s; " + ", ".join(
    f"{k} {v * 1e3:.1f} ms ({batch.n_accounts / v:,.0f} accounts/s)" for k, v in timings.items()))
span_total = np.asarray(span.total)
deribit_initial = np.asarray(deribit.initial)[: batch.n_accounts]
worst_stress_loss = np.maximum(-pnl.min(axis=1), 0.0)
nov = np.asarray(span.nov)
stress_cover = worst_stress_loss / np.where(np.asarray(span.risk) > 0, np.asarray(span.risk), np.nan)
print(f"worst stress-day loss over SPAN risk: median {np.nanmedian(stress_cover):.2f}, "
      f"share of accounts whose SPAN risk covers every stress day: {np.nanmean(stress_cover <= 1):.1%}")
for j, s in enumerate(scenarios):
    print(f"  {s.name}: total P&L of all accounts {pnl[:, j].sum():,.0f} USD, worst account {pnl[:, j].min():,.0f}")

# %% [markdown]
# ## Figures

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
ax = axes[0]
ax.scatter(np.asarray(span.risk), worst_stress_loss, s=6, alpha=0.5)
lim = float(max(np.max(np.asarray(span.risk)), np.max(worst_stress_loss))) * 1.05
ax.plot([0, lim], [0, lim], color="k", ls=":")
ax.set_xlabel("SPAN risk (USD)")
ax.set_ylabel("worst stress-day loss (USD)")
ax.set_title("stress-day loss vs SPAN risk")
ax = axes[1]
ax.scatter(span_total, deribit_initial, s=6, alpha=0.5, color="C1")
lim = float(max(span_total.max(), deribit_initial.max())) * 1.05
ax.plot([0, lim], [0, lim], color="k", ls=":")
ax.set_xlabel("SPAN total (USD)")
ax.set_ylabel("Deribit initial (USD)")
ax.set_title("Deribit grid vs SPAN")
ax = axes[2]
ax.boxplot([-pnl[:, j] for j in range(len(scenarios))], showfliers=False)
ax.set_xticks(range(1, len(scenarios) + 1), [s.name[:10] for s in scenarios])
ax.set_ylabel("loss (USD)")
ax.set_title("account losses per stress day")
fig.tight_layout()
fig.savefig(OUT / "03_batch_stress.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Throughput against the number of accounts

# %%
sizes = [n for n in (16, 64, 256, 1024, 4096, 16384) if n <= N_ACCOUNTS] or [N_ACCOUNTS]
rates = []
for n in sizes:
    sub = build_batch(portfolios[:n], market, size=batch.size)
    span_batch(sub, params)  # compile this bucket
    t0 = time.perf_counter()
    span_batch(sub, params)
    rates.append(n / (time.perf_counter() - t0))
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(sizes, rates, marker="o")
ax.set_xlabel("accounts per call")
ax.set_ylabel("SPAN accounts / s")
ax.set_title(f"SPAN throughput on {jax.devices()[0].platform}")
fig.tight_layout()
fig.savefig(OUT / "03_span_throughput.png", dpi=80 if SMALL else 110)
print(dict(zip(sizes, [round(r) for r in rates])))
print("figures in", OUT)
