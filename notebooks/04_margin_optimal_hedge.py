# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 Margin-optimal hedge: the trades that lower SPAN, Deribit and VaR margin most
#
# `pmjax.hedge` finds the trades, over a set of listed contracts, that minimise one method's margin plus the
# trading cost. Each margin is, at its core, a maximum (or a tail average) of functions that are linear in the
# quantities, so the core problem is a linear program (HiGHS); the parts that are not linear are then applied by
# the exact measure and a pattern search ("polish") moves the trades while the exact figure falls. This notebook
# hedges the seed portfolio (`examples/seed_portfolio.yaml`) on the bundled 2026-01-02 Deribit market with
# futures and perpetuals, and looks at what the hedge trades, what it costs in notional and fees, and how
# minimising one exchange's margin moves the other's. `PMJAX_NOTEBOOK_SMALL=1` runs fewer points and VaR paths.
# Runs as a plain script: `python notebooks/04_margin_optimal_hedge.py`.

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
import pmjax  # noqa: E402
from pmjax.apps.tables import table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] if "__file__" in globals() else pathlib.Path.cwd().parent
OUT = pathlib.Path(os.environ.get("PMJAX_NOTEBOOK_OUT", ROOT / "notebook-out"))  # committed: =reports/notebooks
OUT.mkdir(parents=True, exist_ok=True)
SMALL = os.environ.get("PMJAX_NOTEBOOK_SMALL") == "1"
FUTURES = "futures,perpetuals"
T0 = time.perf_counter()


def trades_text(r) -> str:
    """The trades of a hedge, one "contract qty" each, largest first."""
    if not r.trades:
        return "(no trade)"
    return ", ".join(f"{t.instrument.name} {t.quantity:+.4g}"
                     for t in sorted(r.trades, key=lambda t: -abs(t.quantity)))


# %% [markdown]
# ## The book: the seed portfolio and its margins
#
# Long 1 BTC against a short 30-day call, long 1 ETH, long ETH puts and a short ETH iron condor, margined in USD.

# %%
market = pmjax.load_market("deribit-20260102")
config = pmjax.load_config()
portfolio = pmjax.load_portfolio(str(ROOT / "examples" / "seed_portfolio.yaml"))
margins = pmjax.compute_margins(portfolio, market, config, ["span", "deribit"], dtype=jax.numpy.float64)
span0, deribit0 = float(margins["span"]["total"]), float(margins["deribit"]["initial"])
print(f"{portfolio.account}: {len(portfolio.positions)} positions, margin currency {portfolio.margin_currency}")
print(f"SPAN total {span0:,.2f} USD | Deribit initial {deribit0:,.2f} USD")

# %% [markdown]
# ## The marginal map first
#
# The derivative of SPAN's total with respect to buying one coin of each listed future or perpetual
# (`pmjax.hedge_map`). A negative entry means buying lowers the margin; a positive one means selling does. The
# table ranks the contracts by the margin a trade in the lowering direction saves per 1,000 USD of notional (a
# BTC coin is worth many ETH coins, so per coin would favour BTC). It is a local view, one contract at a
# time and for a small trade; the hedge below looks at all contracts together and at finite sizes, but its
# choices follow this list: sell the coins whose sale saves most. Futures of one underlying share SPAN's scan, so
# they tie (one row each); the near-month ones also move SPAN's charge on near-month delta, which is an absolute
# value, so they lead for a small trade but not necessarily for the hedge's size.

# %%
hmap = pmjax.hedge_map(portfolio, market, config, methods=("span",), kinds=("futures", "perpetuals"))
grad = hmap.marginal["span"]
per_notional = np.abs(grad) / np.array([market.spot(i.underlying) for i in hmap.instruments]) * 1e3
order = np.argsort(-per_notional, kind="stable")
groups = {}  # contracts with the same derivative (futures of one coin share SPAN's scan) shown as one row
for i in order:
    groups.setdefault((hmap.instruments[i].underlying, round(float(grad[i]), 6)), []).append(i)
rows = [[hmap.instruments[g[0]].name + (f" (+{len(g) - 1} tied)" if len(g) > 1 else ""), float(grad[g[0]]),
         "buy" if grad[g[0]] < 0 else "sell", float(per_notional[g[0]])] for g in list(groups.values())[:5]]
print(table(rows, ["contract", "d SPAN / d coin bought", "lowers SPAN", "saved per 1,000 USD traded"],
            title=f"the 5 futures/perpetuals whose trade lowers SPAN most (USD; SPAN {hmap.headline['span']:,.2f})"))
buyers = [hmap.instruments[i].name for i in np.flatnonzero(grad < 0)]
print(f"contracts whose purchase lowers SPAN: {', '.join(buyers) if buyers else 'none'} "
      f"({'buying any of them raises SPAN, so the hedge sells' if not buyers else 'see the hedge below'})")

# %% [markdown]
# ## One hedge per method
#
# Minimise SPAN, minimise Deribit, and minimise the larger of the two (`method="span,deribit"`), each with
# futures and perpetuals. Each exchange sees risk through its own scenarios: SPAN's scan is per underlying and
# charges near-month delta, Deribit's grid and roll shock weigh the expiries differently, so the hedge that is
# best for one can raise the other's margin. The joint hedge gives up some of each one's best to keep both low.

# %%
hedges, seconds = {}, {}
for method in ("span", "deribit", "span,deribit"):
    t0 = time.perf_counter()
    hedges[method] = pmjax.hedge(portfolio, market, config, method=method, instruments=FUTURES)
    seconds[method] = time.perf_counter() - t0
rows = [[m, len(r.trades), r.notional, r.before["span"], r.after["span"], r.before["deribit"], r.after["deribit"],
         seconds[m]] for m, r in hedges.items()]
print(table(rows, ["minimise", "trades", "notional", "SPAN before", "SPAN after", "Deribit before", "Deribit after",
                   "s"], title="hedges with futures and perpetuals (USD)"))
for m, r in hedges.items():
    print(f"  {m}: {trades_text(r)} | LP {r.lp['kind']} {r.lp['seconds'] * 1e3:.1f} ms, objective at the LP "
          f"solution {r.lp['objective_at_solution']:,.2f}, exact {r.lp['exact_objective']:,.2f}, after polish "
          f"{r.polish['objective_after']:,.2f} ({r.polish['iterations']} iterations)")
for m, other in (("span", "deribit"), ("deribit", "span")):
    r = hedges[m]
    move = r.after[other] - r.before[other]
    print(f"minimising {m} moves {other} by {move:+,.2f} USD ({move / r.before[other]:+.0%})")

# %% [markdown]
# ## Efficient frontier: SPAN against the notional traded
#
# Cap the gross notional of the trades (`max_notional`) at fractions of the unconstrained SPAN hedge's notional.
# The slope is the margin each dollar of notional buys; a bend shows where the cheaper reductions run out.
# Deribit's initial margin of the same hedged books is drawn alongside: for this book the SPAN hedge raises it.

# %%
free = hedges["span"]
fractions = (0.0, 0.35, 1.0) if SMALL else (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
frontier = []
for f in fractions:
    if f == 0.0:  # no trade: the book as it is
        frontier.append((0.0, free.before["span"], free.before["deribit"]))
        continue
    r = free if f == 1.0 else pmjax.hedge(portfolio, market, config, method="span", instruments=FUTURES,
                                          max_notional=f * free.notional, compare=("span", "deribit"))
    frontier.append((r.notional, r.after["span"], r.after["deribit"]))
frontier = np.array(frontier)
print(table([[f, *row] for f, row in zip(fractions, frontier)],
            ["cap / free notional", "notional", "SPAN after", "Deribit after"], title="notional frontier (USD)"))
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.plot(frontier[:, 0], frontier[:, 1], marker="o", label="SPAN total (minimised)")
ax.plot(frontier[:, 0], frontier[:, 2], marker="s", ls="--", label="Deribit initial (same books)")
ax.set_xlabel("gross notional traded (USD)")
ax.set_ylabel("margin (USD)")
ax.set_title("seed portfolio: SPAN hedge vs notional cap")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "04_notional_frontier.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## Cost sensitivity
#
# A trading cost in basis points of notional enters the objective: a trade is kept only while the margin it
# saves exceeds what it costs. Small trades that save little (the dust of the polish) go first; a trade that
# saves far more than its cost stays, and the objective (SPAN after plus cost) rises by at most the cost. Once the
# cost exceeds the saving per dollar of every contract, there is no trade and the objective is the unhedged SPAN.

# %%
costs = (0.0, 100.0) if SMALL else (0.0, 5.0, 20.0, 100.0)
by_cost = [free if c == 0.0 else pmjax.hedge(portfolio, market, config, method="span", instruments=FUTURES,
                                             cost_bps=c, compare=("span",)) for c in costs]
print(table([[c, len(r.trades), r.notional, r.cost, r.after["span"], r.objective["after"]]
             for c, r in zip(costs, by_cost)],
            ["cost bps", "trades", "notional", "cost", "SPAN after", "objective"], title="SPAN hedge vs cost (USD)"))
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.plot(costs, [r.objective["after"] for r in by_cost], marker="o", label="objective: SPAN after + cost")
ax.plot(costs, [r.after["span"] for r in by_cost], marker="s", ls="--", label="SPAN after")
ax.axhline(free.before["span"], color="k", ls=":", label="SPAN unhedged")
ax.set_xscale("symlog", linthresh=5.0)
ax.set_xlabel("trading cost (bps of notional)")
ax.set_ylabel("USD")
ax.set_title("seed portfolio: SPAN hedge vs trading cost")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "04_cost_sensitivity.png", dpi=80 if SMALL else 110)

# %% [markdown]
# ## At most K trades
#
# `max_trades` adds a binary variable per contract (a mixed-integer program): one or two contracts often capture
# most of the unconstrained hedge's saving, with fewer tickets.

# %%
rows = []
for k in (1, 2):
    r = pmjax.hedge(portfolio, market, config, method="span", instruments=FUTURES, max_trades=k,
                    compare=("span", "deribit"))
    rows.append([f"max {k}", r.lp["kind"], len(r.trades), r.notional, r.after["span"], r.after["deribit"]])
    print(f"  max_trades={k}: {trades_text(r)}")
rows.append(["free", free.lp["kind"], len(free.trades), free.notional, free.after["span"], free.after["deribit"]])
print(table(rows, ["trades", "program", "n", "notional", "SPAN after", "Deribit after"],
            title=f"SPAN hedge with at most K trades (before: SPAN {free.before['span']:,.2f} USD)"))

# %% [markdown]
# ## A VaR hedge
#
# Monte Carlo expected shortfall over a fixed set of simulated paths is the average of the worst k path losses.
# Rockafellar and Uryasev showed it equals min over a of a + (1/k) sum_p max(L_p - a, 0), which is linear in the
# trades once each path's loss is: so minimising ES over fixed paths is exactly a linear program.

# %%
n_paths = 4000 if SMALL else 20000
t0 = time.perf_counter()
rv = pmjax.hedge(portfolio, market, config, method="var", instruments=FUTURES, paths=n_paths, seed=7,
                 compare=("span", "deribit"))
print(f"VaR hedge over {n_paths:,} paths ({time.perf_counter() - t0:.1f} s): {trades_text(rv)}")
print(f"ES {rv.before['var']:,.2f} -> {rv.after['var']:,.2f} USD | SPAN {rv.before['span']:,.2f} -> "
      f"{rv.after['span']:,.2f} | Deribit {rv.before['deribit']:,.2f} -> {rv.after['deribit']:,.2f}")
print("ES over a fixed set of paths is exactly a linear program (Rockafellar-Uryasev): LP objective "
      f"{rv.lp['objective_at_solution']:,.2f}, exact ES of the LP trades {rv.lp['exact_objective']:,.2f}")

# %% [markdown]
# ## Summary

# %%
rs, rd = hedges["span"], hedges["deribit"]
print(f"seed hedge: SPAN {rs.before['span']:,.2f} -> {rs.after['span']:,.2f} USD ({len(rs.trades)} trades), "
      f"Deribit {rd.before['deribit']:,.2f} -> {rd.after['deribit']:,.2f} USD ({len(rd.trades)} trades), "
      f"futures and perpetuals only")
print(f"figures in {OUT} ({time.perf_counter() - T0:.0f} s)")
