"""Backtest every margin measure on the real BTC/ETH history: each day's margin against the next day's P&L.

Construction (documented choices):

- Days: every UTC day d with Binance closes and Deribit DVOL of both BTC and ETH on d and d + 1, from
  ``min_window_days`` (30) after DVOL's start (2021-03-24) on, so the Monte Carlo model has a month of
  DVOL changes behind it. (The scan-range calibration itself backtests 2018-2026 on closes alone:
  ``pmjax.apps.calibrate``.)
- Market of day d, synthetic: spot = the close of d, every forward = spot (no carry), every implied vol
  = that underlying's DVOL on d (a flat smile: DVOL is the 30-day ATM-like implied vol).
- Books are re-struck every day at fixed moneyness and fixed days to expiry, so the book is the same
  risk every day (a stationary book): each leg's strike = moneyness x spot, time to expiry = its days
  / 365. ``BOOKS``: outright long 1 BTC (spot), covered call (long 1 BTC, short 1 call 110% 30 days),
  short straddle (short 1 call and 1 put at the money, 30 days), short put spread (short 95% put, long
  90% put, 30 days), and the seed BTC/ETH portfolio of ``demo.seed_portfolio`` (its strikes over the
  seed's prices as moneyness, 30 and 60 days). Options are inverse (Deribit's); 1 coin per leg.
- Realized P&L of day d: the book of d revalued in full (``kernel.position_pnl``) at the close of
  d + 1: spot and forwards scale by close(d+1)/close(d), every vol moves by DVOL(d+1) - DVOL(d)
  (floored at 1%), time advances one day. Loss = -P&L (USD).
- Margin of day d, each a cover of the next day's loss (USD):
  ``span``: SPAN ``risk`` (scan + charges - credits; ``total`` = risk - NOV is set against cash with the
  options' value in equity, so ``risk`` is what covers a loss) with each day's price scan range from
  ``calibrate.price_scan_ranges`` set at the close of d (no look-ahead), the vol scan range and the
  other keys from the config (the calibrated ``configs/span.yaml``: its vol range is in-sample); the
  extreme multiple X is cut to 0.95 / P on the days when X P would exceed 95% (ETH's range reached 0.36
  the day after 2021-05-19, and 3 x 0.36 would take spot below zero);
  ``deribit``: the Deribit portfolio-margin grid's initial margin (``configs/deribit.yaml``);
  ``var``/``es``: Monte Carlo Student-t (nu 4) VaR and ES at the coverage, ``paths`` paths per day
  (default 2,000, seeded per date), the SPEC section 4 model with each underlying's vol = its DVOL on
  d, vol of vol and the correlations of (returns, DVOL log changes) over the trailing
  ``window_days`` (365, at least 30) up to d;
  ``rules``: rules-based initial margin (``configs/rules.yaml``) plus the net option value NOV (long
  positive, short negative). Like SPAN's total = risk - NOV, the rules requirement is set against cash
  with the options' value outside it: a short option's requirement includes its premium, which buys it
  back, and a credit spread's strike width less its credit is its largest loss. (A long option whose
  premium the rules charge counts twice, so the rules cover is overstated by the long options' value.)
  Coins held are collateral under the rules (equity, no requirement), so the rules are n/a for a book
  that holds coins: their requirement does not stand against the coins' own loss.
- Exceedance: loss(d -> d+1) > margin(d); Kupiec and Christoffersen tests as in ``pmjax.apps.calibrate``.

Days are a leading batch axis: the stacked books go through vmapped, jitted SPAN, Deribit, P&L and
Monte Carlo kernels (Monte Carlo in chunks of ``chunk_days`` days); only rules runs day by day.
Formulas: docs/methodology.md section 10.5.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pmjax.apps import calibrate
from pmjax.apps.stress import deribit_margin_sharded
from pmjax.io import history
from pmjax.scenarios import montecarlo
from pmjax.scenarios.mc_models import ScenarioParams, StudentTModel, path_shock
from pmjax.core.book import OPTION, Book, bucket_size, pad_book
from pmjax.core.errors import InputError
from pmjax.core.instruments import KINDS, UNDERLYINGS, Instrument
from pmjax.core.kernel import Shock, no_shock, position_pnl, position_values, scenario_pnl
from pmjax.core.units import DAY, DAYS_PER_YEAR, SECONDS_PER_DAY
from pmjax.measures.deribit import deribit_params
from pmjax.scenarios.grids import VOL_FLOOR

MEASURES = ("span", "deribit", "var", "es", "rules")
#: the largest SPAN extreme move (a fraction of spot) a rolling range may give
MAX_EXTREME_MOVE = 0.95


@dataclasses.dataclass(frozen=True)
class Leg:
    """One leg of a stationary book: strike = moneyness x spot, expiry ``days`` ahead, ``quantity`` coins."""

    underlying: str
    kind: str  # option | future | perpetual | spot
    quantity: float
    right: str | None = None
    moneyness: float = 1.0
    days: float = 0.0
    settlement: str = "inverse"


def seed_legs() -> list[Leg]:
    """``demo.seed_portfolio`` as stationary legs: its strikes over the seed's prices, its 30/60 days."""
    from pmjax.apps.demo import SEED_SPOT, seed_portfolio
    from pmjax.core.market import Market, UnderlyingMarket

    as_of = dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc)
    mkt = Market(as_of, {u: UnderlyingMarket(s, rate=0.0, atm=0.5) for u, s in SEED_SPOT.items()})
    out = []
    for p in seed_portfolio(mkt, scale_to_market=False).positions:
        i = p.instrument
        days = (i.expiry - as_of).total_seconds() / SECONDS_PER_DAY if i.expiry else 0.0
        out.append(Leg(i.underlying, i.kind, p.quantity, i.right, (i.strike or SEED_SPOT[i.underlying])
                       / SEED_SPOT[i.underlying], days, i.settlement))
    return out


def representative_books() -> dict[str, list[Leg]]:
    """The backtested books (module docstring)."""
    call = functools.partial(Leg, "BTC", "option", right="call", days=30.0)
    put = functools.partial(Leg, "BTC", "option", right="put", days=30.0)
    return {
        "long BTC": [Leg("BTC", "spot", 1.0, settlement="linear")],
        "covered call": [Leg("BTC", "spot", 1.0, settlement="linear"), call(-1.0, moneyness=1.10)],
        "short straddle": [call(-1.0, moneyness=1.0), put(-1.0, moneyness=1.0)],
        "short put spread": [put(-1.0, moneyness=0.95), put(1.0, moneyness=0.90)],
        "seed BTC/ETH": seed_legs(),
    }


# ---------------------------------------------------------------- the days


@dataclasses.dataclass(frozen=True)
class Days:
    """Market data of the backtest days, (d,) or (d, u) in ``UNDERLYINGS`` order."""

    dates: np.ndarray
    spot: np.ndarray
    dvol: np.ndarray
    next_spot: np.ndarray
    next_dvol: np.ndarray
    price_scan_range: np.ndarray  # (d, u): the calibrated range set at the close of each day
    vol: np.ndarray  # (d, u) Monte Carlo: annual return vol (= dvol)
    vol_of_vol: np.ndarray  # (d, u)
    correlation: np.ndarray  # (d, 2u, 2u) of (returns, DVOL log changes)

    def __len__(self) -> int:
        return len(self.dates)


@dataclasses.dataclass(frozen=True)
class BacktestSettings:
    """What ``run_backtest`` evaluates: the days, the coverage, the Monte Carlo size and the SPAN ranges."""

    start: object = None  # first backtest day kept (a date or ISO string; None: from the first day with history)
    end: object = None  # last day kept (None: up to the last day that has a next day)
    coverage: float = 0.99  # VaR / scan-range coverage the exceedances are tested against
    paths: int = 2000  # Monte Carlo paths per day
    seed: int = 0
    nu: float = 4.0  # Student-t degrees of freedom of the Monte Carlo returns
    window_days: int = 365  # rolling window of the Monte Carlo volatility and correlation estimates
    min_window_days: int = 30  # days of moves a day needs behind it to be backtested
    span_ranges: str = "rolling"  # rolling (calibrated day by day) | config
    measures: tuple[str, ...] = MEASURES
    chunk_days: int = 64


def backtest_days(settings: BacktestSettings = BacktestSettings(),
                  calibration: calibrate.CalibrationSettings | None = None) -> Days:
    """The backtest days with everything the measures need, from the bundled history."""
    cal_settings = calibration or calibrate.CalibrationSettings(coverage=settings.coverage)
    closes = {u: calibrate.daily_grid(history.bundled_close(u))[0] for u in UNDERLYINGS}
    dvols = {u: calibrate.daily_grid(history.bundled_dvol(u))[0] for u in UNDERLYINGS}
    ranges = {u: calibrate.price_scan_ranges(history.bundled_close(u), cal_settings) for u in UNDERLYINGS}
    joint = history.align([closes[u] for u in UNDERLYINGS] + [dvols[u] for u in UNDERLYINGS])
    nu_ = len(UNDERLYINGS)
    lv = joint.values
    # returns and DVOL log changes dated by their end day (row t: from t-1 to t); the grid is daily
    moves = np.vstack([np.full((1, 2 * nu_), np.nan), np.log(lv[1:] / lv[:-1])])
    first = settings.min_window_days
    idx = np.arange(first, len(lv) - 1)  # a day with min_window_days moves behind it and a next day
    dates = joint.dates[idx]
    keep = history.date_mask(dates, settings.start, settings.end)
    idx = idx[keep]
    if len(idx) == 0:
        raise InputError(f"no backtest days between {settings.start} and {settings.end} (history "
                         f"{joint.dates[first]} .. {joint.dates[-2]})", field="start")
    rng = np.stack([ranges[u].range[np.searchsorted(ranges[u].dates, joint.dates[idx])] for u in UNDERLYINGS], 1)
    vov = np.empty((len(idx), nu_))
    corr = np.empty((len(idx), 2 * nu_, 2 * nu_))
    for k, t in enumerate(idx):
        w = moves[max(1, t - settings.window_days + 1): t + 1]
        vov[k] = w[:, nu_:].std(axis=0, ddof=1) * math.sqrt(DAYS_PER_YEAR)
        corr[k] = montecarlo.nearest_correlation(np.corrcoef(w.T))[0]
    return Days(joint.dates[idx], lv[idx, :nu_], lv[idx, nu_:], lv[idx + 1, :nu_], lv[idx + 1, nu_:], rng,
                lv[idx, nu_:], vov, corr)


def stacked_books(legs: list[Leg], days: Days, *, dtype=jnp.float64) -> Book:
    """The book of every day (a leading days axis), padded to the legs' bucket size (USD margin)."""
    n, d = len(legs), len(days)

    def col(f):
        return np.array([f(g) for g in legs])

    u = col(lambda g: UNDERLYINGS.index(g.underlying)).astype(np.int32)
    spot = days.spot[:, u]  # (d, n)
    is_option = col(lambda g: g.kind == "option")
    rep = lambda a: np.broadcast_to(a, (d, n)).copy()  # noqa: E731
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    book = Book(
        underlying=jnp.asarray(rep(u)),
        kind=jnp.asarray(rep(col(lambda g: KINDS.index(g.kind)).astype(np.int32))),
        inverse=jnp.asarray(rep(col(lambda g: g.settlement == "inverse"))),
        is_call=jnp.asarray(rep(col(lambda g: g.right == "call"))),
        strike=f(np.where(is_option, spot * col(lambda g: g.moneyness), 1.0)),
        quantity=f(rep(col(lambda g: g.quantity))),
        expiry_years=f(rep(col(lambda g: g.days / DAYS_PER_YEAR))),
        spot=f(spot), forward=f(spot),
        vol=f(np.where(is_option, days.dvol[:, u], 0.5)),
        underlying_spot=f(days.spot),
        margin_coin=jnp.full((d,), -1, jnp.int32),
    )
    return pad_book(book, bucket_size(n))


def realized_shocks(book: Book, days: Days) -> Shock:
    """Each day's realized move to the next close: spot ratio, DVOL change, one day."""
    dtype = book.quantity.dtype
    d = len(days)
    shift = (days.next_dvol - days.dvol)[np.arange(d)[:, None], np.asarray(book.underlying)]
    return Shock(jnp.asarray(days.next_spot / days.spot, dtype), jnp.asarray(shift, dtype),
                 jnp.full((d,), DAY, dtype), jnp.full((d,), VOL_FLOOR, dtype))


@jax.jit
def _pnl(books: Book, shocks: Shock):
    return jax.vmap(lambda b, s: position_pnl(b, s).sum())(books, shocks)


@jax.jit
def _net_option_value(books: Book):
    """NOV per day: the value of the options, long positive, short negative (USD)."""
    def one(b):
        return jnp.sum(jnp.where(b.kind == OPTION, position_values(b, no_shock(b)), 0.0))
    return jax.vmap(one)(books)


# ---------------------------------------------------------------- measures


def _span_params_by_day(config: dict, days: Days, settings: BacktestSettings, dtype):
    from pmjax.measures.span import span_params

    base = span_params(config, dtype=dtype)
    d = len(days)
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (d,) + x.shape), base)
    if settings.span_ranges == "rolling":
        rng = jnp.asarray(days.price_scan_range, dtype)
        # SPAN's extreme scenarios move spot by -X P: keep X P <= MAX_EXTREME_MOVE on the wildest days
        # (ETH's range reached 0.36 after 2021-05-19) rather than letting spot go negative
        multiple = jnp.minimum(params.extreme_move_multiple, MAX_EXTREME_MOVE / rng)
        params = eqx.tree_at(lambda p: (p.price_scan_range, p.extreme_move_multiple), params, (rng, multiple))
    return params


@jax.jit
def _span_risk(books, params):
    from pmjax.measures.span import span_margin

    return jax.vmap(lambda b, p: span_margin(b, p).risk)(books, params)


def span_cover(books: Book, days: Days, config: dict, settings: BacktestSettings) -> np.ndarray:
    """SPAN risk per day (USD)."""
    if settings.span_ranges not in ("rolling", "config"):
        raise InputError(f"span_ranges must be rolling or config, got {settings.span_ranges!r}", field="span_ranges")
    params = _span_params_by_day(config, days, settings, books.quantity.dtype)
    return np.asarray(_span_risk(books, params), np.float64)


def deribit_cover(books: Book, config: dict) -> np.ndarray:
    """Deribit portfolio-margin initial margin per day (USD)."""
    params = deribit_params(config, dtype=books.quantity.dtype)
    result = deribit_margin_sharded(books, params, chunk=books.quantity.shape[0], devices=jax.local_devices()[:1])
    return np.asarray(result.initial, np.float64)


def _scenario_params(days: Days, settings: BacktestSettings, dtype) -> ScenarioParams:
    d, nu_ = len(days), len(UNDERLYINGS)
    chol = np.linalg.cholesky(days.correlation)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return ScenarioParams(
        vol=f(days.vol), atm_vol=f(days.dvol), vol_of_vol=f(days.vol_of_vol), chol=f(chol),
        vol_given_return=f(np.zeros((d, nu_, nu_))), vol_residual_chol=f(np.zeros((d, nu_, nu_))),
        residuals=f(np.zeros((d, 1, nu_))), vol_floor=f(np.full(d, VOL_FLOOR)),
        horizon_years=f(np.full(d, DAY)), nu=f(np.full(d, settings.nu)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _mc_tail(spec, k, books, params, keys, idx):
    def one(book, p, key):
        shocks = jax.vmap(lambda i: path_shock(spec, p, book, key, i))(idx)
        losses = -scenario_pnl(book, shocks).sum(axis=-1)
        top = jax.lax.top_k(losses, k)[0]
        return top[-1], top.mean()
    return jax.vmap(one)(books, params, keys)


def var_es_cover(books: Book, days: Days, settings: BacktestSettings) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo Student-t VaR and ES per day (USD), ``settings.paths`` paths seeded by (seed, date)."""
    from pmjax.measures.var import tail_size

    dtype = books.quantity.dtype
    spec = StudentTModel(antithetic=False)
    params = _scenario_params(days, settings, dtype)
    k = tail_size(settings.paths, settings.coverage)
    idx = jnp.arange(settings.paths, dtype=jnp.uint32)
    ordinal = days.dates.astype("datetime64[D]").astype(np.int64)
    base = jax.random.key(settings.seed)
    keys = jax.vmap(lambda o: jax.random.fold_in(base, o))(jnp.asarray(ordinal, jnp.uint32))
    d, c = len(days), min(settings.chunk_days, len(days))
    var, es = np.empty(d), np.empty(d)
    for s in range(0, d, c):
        sel = np.arange(s, s + c).clip(max=d - 1)  # the last chunk repeats its last day: one shape
        take = lambda x: x[sel]  # noqa: E731
        v, e = _mc_tail(spec, k, jax.tree_util.tree_map(take, books), jax.tree_util.tree_map(take, params),
                        keys[sel], idx)
        m = min(c, d - s)
        var[s:s + m], es[s:s + m] = np.asarray(v)[:m], np.asarray(e)[:m]
    return var, es


def day_market(days: Days, t: int):
    """The synthetic market of day ``t`` (spot, no carry, flat vol = DVOL), as of its close."""
    from pmjax.core.market import Market, UnderlyingMarket

    day = days.dates[t].astype("datetime64[D]").item()
    as_of = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    return Market(as_of, {u: UnderlyingMarket(float(days.spot[t, j]), rate=0.0, atm=float(days.dvol[t, j]))
                          for j, u in enumerate(UNDERLYINGS)}, source=f"synthetic {day}")


def day_portfolio(legs: list[Leg], market):
    """The legs struck on ``market`` as a portfolio (for the rules method)."""
    from pmjax.core.portfolio import Position, make_portfolio

    positions = []
    for g in legs:
        expiry = market.as_of + dt.timedelta(days=g.days) if g.kind in ("option", "future") else None
        strike = g.moneyness * market.spot(g.underlying) if g.kind == "option" else None
        positions.append(Position(Instrument(g.underlying, g.kind, g.settlement, expiry, strike, g.right),
                                  g.quantity))
    return make_portfolio(positions, account="backtest", source="backtest", merge_notice=False)


def rules_cover(legs: list[Leg], books: Book, days: Days, config: dict) -> np.ndarray:
    """Rules-based initial margin plus the net option value, per day (USD)."""
    from pmjax.measures.rules import rules_margin, rules_params

    params = rules_params(config)
    initial = np.array([rules_margin(day_portfolio(legs, m := day_market(days, t)), m, params).initial
                        for t in range(len(days))])
    return initial + np.asarray(_net_option_value(books), np.float64)


# ---------------------------------------------------------------- the backtest


@dataclasses.dataclass
class BacktestResult:
    days: Days
    books: dict[str, list[Leg]]
    pnl: dict[str, np.ndarray]  # book -> (d,) next-day P&L, USD
    cover: dict[str, dict[str, np.ndarray]]  # book -> measure -> (d,) margin, USD
    settings: BacktestSettings

    def table(self) -> list[dict]:
        """One row per book and measure: backtest statistics, mean margin and mean loss on exceedance days."""
        rows = []
        for b, by in self.cover.items():
            loss = -self.pnl[b]
            for m, c in by.items():
                hits = loss > c
                st = calibrate.backtest_stats(hits, self.settings.coverage)
                # a measure that asks nothing of a book (Deribit's coin-margined grid on a spot holding,
                # which is collateral there) is not a test of anything; nor are the rules on a book that holds
                # coins: they are collateral there (equity, docs/methodology.md 8.2), so no rules requirement
                # stands against the coins' own loss, which the book's loss includes
                holds_coins = any(leg.kind == "spot" for leg in self.books[b])
                applicable = bool(np.any(c != 0)) and not (m == "rules" and holds_coins)
                rows.append({"book": b, "measure": m, "applicable": applicable, **st,
                             "mean_margin": float(np.mean(c)),
                             "worst_shortfall": float(np.max(loss - c)) if len(c) else 0.0,
                             "mean_loss": float(np.mean(np.maximum(loss, 0.0)))})
        return rows


def run_backtest(books: dict[str, list[Leg]] | None = None, settings: BacktestSettings = BacktestSettings(),
                 config: dict | None = None, *, days: Days | None = None, dtype=jnp.float64) -> BacktestResult:
    """Walk every book through the days (module docstring); ``config`` defaults to the shipped one."""
    from pmjax.io.config import load_config

    unknown = [m for m in settings.measures if m not in MEASURES]
    if unknown:
        raise InputError(f"unknown measure {unknown[0]!r} (known: {', '.join(MEASURES)})", field="measures")
    config = load_config() if config is None else config
    books = representative_books() if books is None else books
    days = backtest_days(settings) if days is None else days
    pnl, cover = {}, {}
    for name, legs in books.items():
        stacked = stacked_books(legs, days, dtype=dtype)
        pnl[name] = np.asarray(_pnl(stacked, realized_shocks(stacked, days)), np.float64)
        c = {}
        if "span" in settings.measures:
            c["span"] = span_cover(stacked, days, config, settings)
        if "deribit" in settings.measures:
            c["deribit"] = deribit_cover(stacked, config)
        if "var" in settings.measures or "es" in settings.measures:
            var, es = var_es_cover(stacked, days, settings)
            if "var" in settings.measures:
                c["var"] = var
            if "es" in settings.measures:
                c["es"] = es
        if "rules" in settings.measures:
            c["rules"] = rules_cover(legs, stacked, days, config)
        cover[name] = c
    return BacktestResult(days, books, pnl, cover, settings)


__all__ = ["BacktestResult", "BacktestSettings", "Days", "Leg", "MEASURES", "backtest_days", "day_market",
           "day_portfolio", "deribit_cover", "realized_shocks", "representative_books", "rules_cover",
           "run_backtest", "seed_legs", "span_cover", "stacked_books", "var_es_cover", "write_report"]


# ---------------------------------------------------------------- report


def write_report(result: BacktestResult, out_dir: str, *, command: str = "python -m pmjax.apps.backtest") -> dict:
    """Write ``backtest.json`` (settings, days, table, daily series) and ``README.md`` (the table) to ``out_dir``."""
    import json
    import os

    from pmjax.apps.tables import table

    os.makedirs(out_dir, exist_ok=True)
    rows = result.table()
    s = result.settings
    d = result.days
    doc = {"command": command, "coverage": s.coverage, "paths": s.paths, "seed": s.seed, "nu": s.nu,
           "window_days": s.window_days, "span_ranges": s.span_ranges,
           "start": str(d.dates[0]), "end": str(d.dates[-1]), "days": len(d),
           "books": {b: [dataclasses.asdict(g) for g in legs] for b, legs in result.books.items()},
           "table": rows,
           "series": {"dates": [str(x) for x in d.dates],
                      "pnl": {b: np.round(v, 2).tolist() for b, v in result.pnl.items()},  # USD to the cent
                      "cover": {b: {m: np.round(v, 2).tolist() for m, v in by.items()}
                                for b, by in result.cover.items()}}}
    with open(os.path.join(out_dir, "backtest.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    lo, hi = calibrate.kupiec_region(len(d), s.coverage)
    text = table([[r["book"], r["measure"], r["days"], r["exceedances"] if r["applicable"] else "n/a",
                   round(r["expected"], 2), f"{r['kupiec_p']:.3f}" if r["applicable"] else "n/a",
                   f"{r['christoffersen_p']:.3f}" if r["applicable"] else "n/a", round(r["mean_margin"], 2),
                   round(r["mean_loss"], 2)] for r in rows],
                 ["book", "measure", "days", "exceed", "expected", "kupiec p", "christ. p", "mean margin USD",
                  "mean loss USD"])
    readme = f"""# Margin backtest on BTC/ETH history

Produced by `{command}` (module `pmjax.apps.backtest`; the construction is in its docstring).

Days {d.dates[0]} .. {d.dates[-1]} ({len(d)} days: every day with Binance closes and Deribit DVOL of BTC and ETH
on it and the next day, from {s.min_window_days} days after DVOL's start). Each day's margin of a stationary book
(re-struck every day at fixed moneyness and days to expiry on a synthetic market: spot = that day's close,
forwards = spot, flat vol = that day's DVOL) against the loss of the next day (full revaluation at the next
close and DVOL, one day later). An exceedance is loss > margin. Coverage target {s.coverage:.0%}: Kupiec's 95%
acceptance region for {len(d)} days is {lo} .. {hi} exceedances.

Measures: span = SPAN risk with the price scan range calibrated day by day (`pmjax.apps.calibrate`, no look-ahead)
and the shipped vol scan range; deribit = Deribit portfolio-margin initial margin (coin-margined: a spot
holding is the collateral itself and carries no margin there: n/a); var / es = Monte Carlo Student-t (nu {s.nu:g}) at
{s.coverage:.0%}, {s.paths:,} paths per day, vols = DVOL, vol of vol and correlations over the trailing
{s.window_days} days; rules = rules-based initial margin + net option value (coins held are collateral under the
rules, not a margined position: n/a for the books that hold coins).

```
{text}
```
"""
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(readme)
    return doc


#: where ``python -m pmjax.apps.backtest`` writes by default: not the committed ``reports/backtest``
#: (git-ignored; ``--out reports/backtest`` regenerates the recorded run)
DEFAULT_OUT = "backtest-out"


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="python -m pmjax.apps.backtest", description="margin backtest on BTC/ETH history")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"output directory (default {DEFAULT_OUT}/; --out reports/backtest rewrites the recorded run)")
    p.add_argument("--start", default=None)
    p.add_argument("--end", default=None)
    p.add_argument("--paths", type=int, default=2000)
    p.add_argument("--span-ranges", choices=("rolling", "config"), default="rolling")
    return p


def main(argv=None) -> int:
    import sys

    jax.config.update("jax_enable_x64", True)  # the backtest runs in float64

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = BacktestSettings(start=args.start, end=args.end, paths=args.paths, span_ranges=args.span_ranges)
    result = run_backtest(settings=settings)
    command = "python -m pmjax.apps.backtest " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(result, args.out, command=command.strip())
    print(open(f"{args.out}/README.md", encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
