"""Backtest every margin measure on the real BTC/ETH history: each day's margin against the loss over the
margin period of risk (``mpor_days``: 1, the default, or 2 days).

Construction (documented choices):

- Days: every UTC day d with Binance closes and Deribit DVOL of both BTC and ETH on d and d + h (h =
  ``mpor_days``), from ``min_window_days`` (30) after DVOL's start (2021-03-24) on, so the Monte Carlo model
  has a month of DVOL changes behind it. (The scan-range calibration itself backtests 2018-2026 on closes
  alone: ``pmjax.apps.calibrate``.)
- Market of day d, synthetic: spot = the close of d, every forward = spot (no carry). Vols (``smile``):
  ``skewed`` (default): the smile of ``pmjax.apps.backtest_smile`` (its ``FITTED`` rule) from that
  underlying's DVOL on d and its trailing 7-day log return ln(close(d) / close(d-7)): at-the-money term
  structure, skew and curvature fitted on the Deribit chains; ``flat``: every implied vol = DVOL on d (the
  first backtest; DVOL is the 30-day ATM-like implied vol).
- Books (``pmjax.apps.backtest_books``) are re-struck every day at fixed moneyness and fixed days to
  expiry, so the book is the same risk every day (a stationary book): each leg's strike = moneyness x
  spot, time to expiry = its days / 365; ten books, five long delta or short vol (four BTC only) and five
  short delta, long vol, 4 days to expiry, deep out of the money, ETH only. 1 coin per leg.
- Realized P&L of day d: the book of d revalued in full (``kernel.position_pnl``) at the close of d + h:
  spot and forwards scale by close(d+h)/close(d), time advances h days, and each option's vol becomes
  (flat) its vol + DVOL(d+h) - DVOL(d), or (skewed) the smile of day d + h (its DVOL and trailing return)
  at the option's new ln(K / F) and time to expiry; floored at 1%. Loss = -P&L (USD). The P&L is so no
  longer the flat model's own: skew and term structure move with the market.
- Margin of day d, each a cover of the loss over d .. d + h (USD), every measure on the market of day d
  with its smile (the legs' vols):
  ``span``: SPAN ``risk`` (scan + charges - credits; ``total`` = risk - NOV is set against cash with the
  options' value in equity, so ``risk`` is what covers a loss) with each day's price scan range from
  ``calibrate.price_scan_ranges`` (horizon h days) set at the close of d (no look-ahead), the vol scan
  range and the other keys from the config (the calibrated ``configs/span.yaml``: its vol range is
  in-sample; x sqrt(h) and scenario time h days for h > 1); the extreme multiple X is cut to 0.95 / P on
  the days when X P would exceed 95% (ETH's range reached 0.36 the day after 2021-05-19, and 3 x 0.36
  would take spot below zero);
  ``deribit``: the Deribit portfolio-margin grid's initial margin (``configs/deribit.yaml``; its fixed
  grid whatever h);
  ``var``/``es``: Monte Carlo Student-t (nu 4) VaR and ES at the coverage over h days, ``paths`` paths per
  day (default 2,000, seeded per date), the SPEC section 4 model with each underlying's vol = its DVOL on
  d, vol of vol and the correlations of (returns, DVOL log changes) over the trailing ``window_days``
  (365, at least 30) up to d, its horizon h / 365 years (one draw scaled by sqrt(h), not h daily steps);
  the model moves each option's vol by its underlying's vol change (a parallel shift of the smile);
  ``rules``: rules-based initial margin (``configs/rules.yaml``) plus the net option value NOV (long
  positive, short negative). Like SPAN's total = risk - NOV, the rules requirement is set against cash
  with the options' value outside it: a short option's requirement includes its premium, which buys it
  back, and a credit spread's strike width less its credit is its largest loss. (A long option whose
  premium the rules charge counts twice, so the rules cover is overstated by the long options' value.)
  Coins held are collateral under the rules (equity, no requirement), so the rules are n/a for a book
  that holds coins: their requirement does not stand against the coins' own loss.
- Exceedance: loss(d -> d+h) > margin(d); Kupiec and Christoffersen tests as in ``pmjax.apps.calibrate``
  (for h = 2 consecutive days' losses overlap, so exceedances cluster by construction).

Days are a leading batch axis: the stacked books go through vmapped, jitted SPAN, Deribit, P&L and
Monte Carlo kernels (Monte Carlo in chunks of ``chunk_days`` days); only rules runs day by day.
Formulas: docs/methodology.md sections 10.5 and 10.6.
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
from pmjax.apps.backtest_books import FIRST_BOOKS, MORE_BOOKS, Leg, day_portfolio, representative_books, seed_legs
from pmjax.apps.backtest_report import write_report, write_summary
from pmjax.apps.backtest_smile import FITTED, SmileRule
from pmjax.apps.stress import deribit_margin_sharded
from pmjax.io import history
from pmjax.scenarios import montecarlo
from pmjax.scenarios.mc_models import ScenarioParams, StudentTModel, path_shock
from pmjax.core.book import OPTION, Book, bucket_size, pad_book
from pmjax.core.errors import InputError
from pmjax.core.instruments import KINDS, UNDERLYINGS
from pmjax.core.kernel import Shock, no_shock, position_pnl, position_values, scenario_pnl
from pmjax.core.units import DAY, DAYS_PER_YEAR
from pmjax.measures.deribit import deribit_params
from pmjax.scenarios.grids import VOL_FLOOR

MEASURES = ("span", "deribit", "var", "es", "rules")
#: the largest SPAN extreme move (a fraction of spot) a rolling range may give
MAX_EXTREME_MOVE = 0.95
SMILES = ("skewed", "flat")
MPOR_DAYS = (1, 2)


# ---------------------------------------------------------------- the days


@dataclasses.dataclass(frozen=True)
class Days:
    """Market data of the backtest days, (d,) or (d, u) in ``UNDERLYINGS`` order."""

    dates: np.ndarray
    spot: np.ndarray
    dvol: np.ndarray
    next_spot: np.ndarray  # (d, u): at the end of the margin period of risk, ``horizon_days`` later
    next_dvol: np.ndarray
    price_scan_range: np.ndarray  # (d, u): the calibrated range (of the horizon) set at the close of each day
    vol: np.ndarray  # (d, u) Monte Carlo: annual return vol (= dvol)
    vol_of_vol: np.ndarray  # (d, u)
    correlation: np.ndarray  # (d, 2u, 2u) of (returns, DVOL log changes)
    ret: np.ndarray | None = None  # (d, u): the trailing return the skew rule reads, ln(S_t / S_{t-n})
    next_ret: np.ndarray | None = None  # (d, u): the same at the end of the horizon
    horizon_days: int = 1  # the margin period of risk
    smile: SmileRule | None = None  # None: flat at DVOL

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
    smile: str = "skewed"  # skewed (``backtest_smile.FITTED``) | flat (every vol = DVOL, the first backtest)
    mpor_days: int = 1  # margin period of risk: the loss from the close of d to the close of d + mpor_days

    def rule(self) -> SmileRule | None:
        """The smile rule of ``smile`` (None: flat), checking ``smile`` and ``mpor_days``."""
        if self.smile not in SMILES:
            raise InputError(f"smile must be one of {', '.join(SMILES)}, got {self.smile!r}", field="smile")
        if self.mpor_days not in MPOR_DAYS:
            raise InputError(f"mpor_days must be 1 or 2, got {self.mpor_days!r}", field="mpor_days")
        return FITTED if self.smile == "skewed" else None


def backtest_days(settings: BacktestSettings = BacktestSettings(),
                  calibration: calibrate.CalibrationSettings | None = None) -> Days:
    """The backtest days with everything the measures need, from the bundled history."""
    rule, h = settings.rule(), settings.mpor_days
    cal_settings = calibration or calibrate.CalibrationSettings(coverage=settings.coverage, horizon_days=h)
    closes = {u: calibrate.daily_grid(history.bundled_close(u))[0] for u in UNDERLYINGS}
    dvols = {u: calibrate.daily_grid(history.bundled_dvol(u))[0] for u in UNDERLYINGS}
    ranges = {u: calibrate.price_scan_ranges(history.bundled_close(u), cal_settings) for u in UNDERLYINGS}
    joint = history.align([closes[u] for u in UNDERLYINGS] + [dvols[u] for u in UNDERLYINGS])
    nu_ = len(UNDERLYINGS)
    lv = joint.values
    # returns and DVOL log changes dated by their end day (row t: from t-1 to t); the grid is daily
    moves = np.vstack([np.full((1, 2 * nu_), np.nan), np.log(lv[1:] / lv[:-1])])
    first = settings.min_window_days
    idx = np.arange(first, len(lv) - h)  # a day with min_window_days moves behind it and h days after it
    dates = joint.dates[idx]
    keep = history.date_mask(dates, settings.start, settings.end)
    idx = idx[keep]
    if len(idx) == 0:
        raise InputError(f"no backtest days between {settings.start} and {settings.end} (history "
                         f"{joint.dates[first]} .. {joint.dates[-1 - h]})", field="start")
    rng = np.stack([ranges[u].range[np.searchsorted(ranges[u].dates, joint.dates[idx])] for u in UNDERLYINGS], 1)
    vov = np.empty((len(idx), nu_))
    corr = np.empty((len(idx), 2 * nu_, 2 * nu_))
    for k, t in enumerate(idx):
        w = moves[max(1, t - settings.window_days + 1): t + 1]
        vov[k] = w[:, nu_:].std(axis=0, ddof=1) * math.sqrt(DAYS_PER_YEAR)
        corr[k] = montecarlo.nearest_correlation(np.corrcoef(w.T))[0]
    n = (rule or SmileRule()).lookback_days
    ret = np.full((len(lv), nu_), np.nan)
    ret[n:] = np.log(lv[n:, :nu_] / lv[:-n, :nu_])  # ret[t]: ln(S_t / S_{t-n}); first >= 30 > n days in
    return Days(joint.dates[idx], lv[idx, :nu_], lv[idx, nu_:], lv[idx + h, :nu_], lv[idx + h, nu_:], rng,
                lv[idx, nu_:], vov, corr, ret[idx], ret[idx + h], h, rule)


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
        vol=f(np.where(is_option, leg_vols(legs, days), 0.5)),
        underlying_spot=f(days.spot),
        margin_coin=jnp.full((d,), -1, jnp.int32),
    )
    return pad_book(book, bucket_size(n))


def leg_vols(legs: list[Leg], days: Days) -> np.ndarray:
    """(d, n) each leg's implied vol on each day: DVOL (flat) or the smile's at ln(K/F) = ln(moneyness) (F = spot)
    and the leg's days to expiry (non-options: DVOL, unused)."""
    u = np.array([UNDERLYINGS.index(g.underlying) for g in legs], np.int32)
    flat = days.dvol[:, u]
    if days.smile is None:
        return flat
    opt = np.array([g.kind == "option" for g in legs])
    lk = np.log(np.array([g.moneyness if g.kind == "option" else 1.0 for g in legs]))
    years = np.array([g.days / DAYS_PER_YEAR if g.kind == "option" else 1.0 for g in legs])
    return np.where(opt, days.smile.vol(flat, days.ret[:, u], lk, years), flat)


def realized_shocks(book: Book, days: Days) -> Shock:
    """Each day's realized move to the close ``horizon_days`` later: spot ratio, the vol change (flat: the DVOL
    change; skewed: the smile of the later day at the option's new moneyness and time to expiry, less its vol
    today), the horizon's time."""
    dtype = book.quantity.dtype
    d, h = len(days), days.horizon_days
    rows, u = np.arange(d)[:, None], np.asarray(book.underlying)
    shift = (days.next_dvol - days.dvol)[rows, u]
    if days.smile is not None:
        later = np.asarray(book.expiry_years) - h * DAY
        live = (np.asarray(book.kind) == OPTION) & (later > 0)
        safe = np.where(live, later, 1.0)
        spot_later = np.asarray(book.forward) * (days.next_spot / days.spot)[rows, u]
        lk = np.where(live, np.log(np.asarray(book.strike) / np.where(live, spot_later, 1.0)), 0.0)
        vol_later = days.smile.vol(days.next_dvol[rows, u], days.next_ret[rows, u], lk, safe)
        shift = np.where(live, vol_later - np.asarray(book.vol), shift)
    return Shock(jnp.asarray(days.next_spot / days.spot, dtype), jnp.asarray(shift, dtype),
                 jnp.full((d,), h * DAY, dtype), jnp.full((d,), VOL_FLOOR, dtype))


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
    h = days.horizon_days
    if h != 1:  # an h-day period of risk: the config's 1-day ranges x sqrt(h), time decay over h days
        root = math.sqrt(h)
        params = eqx.tree_at(lambda p: (p.price_scan_range, p.vol_scan_range, p.horizon_days), params,
                             (params.price_scan_range * root, params.vol_scan_range * root, params.horizon_days * h))
    if settings.span_ranges == "rolling":  # the calibrated h-day range (``Days.price_scan_range``)
        params = eqx.tree_at(lambda p: p.price_scan_range, params, jnp.asarray(days.price_scan_range, dtype))
    if settings.span_ranges == "rolling" or h != 1:
        # SPAN's extreme scenarios move spot by -X P: keep X P <= MAX_EXTREME_MOVE on the wildest days
        # (ETH's range reached 0.36 after 2021-05-19) rather than letting spot go negative
        multiple = jnp.minimum(params.extreme_move_multiple, MAX_EXTREME_MOVE / params.price_scan_range)
        params = eqx.tree_at(lambda p: p.extreme_move_multiple, params, multiple)
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
        horizon_years=f(np.full(d, days.horizon_days * DAY)), nu=f(np.full(d, settings.nu)))


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


#: the smile nodes of ``day_market`` without legs: days to expiry and moneyness K / F
SMILE_NODE_DAYS = (1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0)
SMILE_NODE_MONEYNESS = tuple(np.round(np.arange(0.5, 1.5001, 0.05), 2))


def day_market(days: Days, t: int, legs: list[Leg] | None = None):
    """The synthetic market of day ``t`` (spot, no carry), as of its close. Flat: every vol = DVOL (``atm``).
    Skewed: a smile per expiry, its points the smile rule's vols: at the legs' expiries and strikes when
    ``legs`` are given (the exact vols of ``stacked_books``), else on the ``SMILE_NODE_*`` grid (the market
    interpolates between nodes: section 2)."""
    from pmjax.core.market import Market, Smile, UnderlyingMarket

    day = days.dates[t].astype("datetime64[D]").item()
    as_of = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    unds = {u: UnderlyingMarket(float(days.spot[t, j]), rate=0.0, atm=float(days.dvol[t, j]))
            for j, u in enumerate(UNDERLYINGS)}
    if days.smile is not None:
        nodes = [g for g in legs if g.kind == "option"] if legs is not None else [
            Leg(u, "option", 0.0, "call", m, n)
            for u in UNDERLYINGS for n in SMILE_NODE_DAYS for m in SMILE_NODE_MONEYNESS]
        for u in UNDERLYINGS:
            by_expiry: dict = {}
            mine = [g for g in nodes if g.underlying == u]
            vols = leg_vols(mine, days)[t] if mine else []
            for g, v in zip(mine, vols):
                by_expiry.setdefault(as_of + dt.timedelta(days=g.days), {})[g.moneyness * unds[u].spot] = float(v)
            unds[u].smiles = {e: Smile(np.array(sorted(kv)), np.array([kv[k] for k in sorted(kv)]))
                              for e, kv in by_expiry.items()}
    return Market(as_of, unds, source=f"synthetic {day}")


def rules_cover(legs: list[Leg], books: Book, days: Days, config: dict) -> np.ndarray:
    """Rules-based initial margin plus the net option value, per day (USD)."""
    from pmjax.measures.rules import rules_margin, rules_params

    params = rules_params(config)
    initial = np.array([rules_margin(day_portfolio(legs, m := day_market(days, t, legs)), m, params).initial
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


__all__ = ["BacktestResult", "BacktestSettings", "Days", "FIRST_BOOKS", "Leg", "MEASURES", "MORE_BOOKS", "MPOR_DAYS",
           "SMILES", "backtest_days", "day_market", "day_portfolio", "deribit_cover", "leg_vols", "realized_shocks",
           "representative_books", "rules_cover", "run_backtest", "seed_legs", "span_cover", "stacked_books",
           "var_es_cover", "write_report", "write_summary"]


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
    p.add_argument("--smile", choices=SMILES, default="skewed",
                   help="skewed: the smile of pmjax.apps.backtest_smile (default); flat: every vol = DVOL")
    p.add_argument("--mpor-days", type=int, choices=MPOR_DAYS, default=1, help="margin period of risk in days")
    p.add_argument("--grid", action="store_true",
                   help="run every smile x MPOR into OUT/<smile>-<h>d/ and write OUT/SUMMARY.md (one column each)")
    p.add_argument("--books", choices=("all", "first"), default="all",
                   help="all ten books, or the first five (FIRST_BOOKS)")
    return p


def main(argv=None) -> int:
    import os
    import sys

    jax.config.update("jax_enable_x64", True)  # the backtest runs in float64

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    books = representative_books()
    if args.books == "first":
        books = {b: books[b] for b in FIRST_BOOKS}
    runs = [(args.smile, args.mpor_days)] if not args.grid else [(sm, h) for sm in SMILES for h in MPOR_DAYS]
    docs = {}
    for smile, h in runs:
        settings = BacktestSettings(start=args.start, end=args.end, paths=args.paths, span_ranges=args.span_ranges,
                                    smile=smile, mpor_days=h)
        out = args.out if not args.grid else os.path.join(args.out, f"{smile}-{h}d")
        command = " ".join(["python -m pmjax.apps.backtest"] + list(argv))
        docs[f"{smile} {h}d"] = write_report(run_backtest(books, settings=settings), out, command=command)
        print(open(os.path.join(out, "README.md"), encoding="utf-8").read())
    if args.grid:
        print(write_summary(docs, os.path.join(args.out, "SUMMARY.md")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
