"""``pmjax bench``: throughput and latency of pmjax's kernels next to numpy implementations of the SAME
computations, timed in the same run (SPEC section 1; the JSON document is described in SPEC section 3).

Rows (``name``, unit):

- ``black76_f32`` / ``black76_f64`` (options/s): price and six Greeks (delta, gamma, vega, theta, vanna,
  volga, as ``kernel.unit_greeks`` defines them) of a book of options by pmjax's closed-form path,
  ``fast_greeks.unit_greeks_fast`` (blocks of 16,384 float32 / 8,192 float64 options, split over every
  local device); ``black76_autodiff_f32`` / ``black76_autodiff_f64``: the same Greeks by the autodiff kernel
  ``kernel.unit_greeks_jit`` on the same book and devices, against the same baseline: ``numpy_unit_greeks``
  (closed forms, vectorised numpy, chunked for the cache, one thread); ``black76_f64_quantlib``: the
  closed-form float64 rate next to QuantLib's ``BlackCalculator`` called per option (when QuantLib is
  importable); ``black76_price_f32``: the price alone (``kernel.black76`` against ``black76_np``), to show
  what the Greeks cost. Each row's ``path`` says what it timed;
- ``span_accounts`` (accounts/s): full SPAN (16-scenario scan, composite delta, tiers, spot charge,
  inter credits, short option minimum, NOV) of many accounts, sharded over the devices; baseline ``numpy_span``;
- ``mc_revaluations`` (position-path revaluations/s): Monte Carlo losses of an options book (draws,
  shocks, full Black-76 revaluation, sum); baseline ``numpy_monte_carlo`` (numpy draws of the same model);
- ``what_if_latency`` (s): median warm latency of ``whatif.whatif_latency`` (SPAN incremental margin of a
  new option on a 100-position account); baseline ``numpy_span`` of the before and after books;
  ``what_if_latency_span_deribit``: the same with SPAN and the Deribit grid; baseline pmjax's regular path
  (resolve, ``make_book``, ``span_margin`` and ``deribit_margin`` of the before and after books: there is
  no numpy Deribit grid);
- ``compile`` (s): trace + lower + compile of ``span_margin_batch`` at the bench chunk shape; baseline: the
  numpy SPAN of one chunk of that shape (so speedup > 1 means compiling costs less than numpy's run).

``speedup`` = baseline time / pmjax time (> 1: pmjax faster). Each timing is the median of several
repeats after a warm-up call, with ``jax.block_until_ready``. The numpy baselines are tested against
pmjax on small sizes (tests/test_bench.py), so they compute the same numbers. The normal CDF of the
baselines is ``scipy.special.ndtr`` when scipy is importable, else ``ndtr_cody`` (W. J. Cody's rational
Chebyshev erfc, vectorised numpy, ~1e-16 relative); each row's ``baseline`` says which.

Devices: every row uses every local device. ``pmjax bench`` calls ``use_all_cpu_cores`` before the JAX
backend starts, so a CPU gets one device per core (XLA's CPU client runs each fusion of a device's program on
one thread: with one device the other cores mostly idle); the header prints the count. Targets
(``TARGETS``) are checked for the platform at hand; the GPU targets are stated in float32 (``pmjax bench
--precision float32``) and a run in another precision reports them not measured.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book, bucket_size
from pmjax.core.kernel import DAY
from pmjax.scenarios.grids import COMPOSITE_DELTA_STEPS, COMPOSITE_DELTA_WEIGHTS

BOOK_FIELDS = ("underlying", "kind", "inverse", "is_call", "strike", "quantity", "expiry_years", "spot", "forward",
               "vol", "underlying_spot", "margin_coin")

# ---------------------------------------------------------------- the normal CDF without scipy

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969) 631-637,
# as in his CALERF (netlib specfun): erf on |x| <= 0.46875, erfc on 0.46875 < |x| < 4 and |x| >= 4
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
_THRESH = 0.46875
_INV_SQRT_PI = 0.56418958354775628695
_INV_SQRT2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794


def _exp_minus_square(y):
    """exp(-y^2) as Cody computes it: exp(-z^2) exp(-(y - z)(y + z)) with z = y rounded down to 1/16,
    which keeps the relative error of the product near machine precision for large y."""
    z = np.trunc(y * 16.0) / 16.0
    return np.exp(-z * z) * np.exp(-(y - z) * (y + z))


def erfc_cody(x) -> np.ndarray:
    """Complementary error function, vectorised numpy (float32 or float64 in, same dtype out)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    y = np.abs(x)
    out = np.empty_like(x)
    near = y <= _THRESH
    far = y >= 4.0
    mid = ~(near | far)
    if near.any():
        xs = x[near]
        z = xs * xs
        num, den = _A[4] * z, z
        for i in range(3):
            num = (num + _A[i]) * z
            den = (den + _B[i]) * z
        out[near] = 1.0 - xs * (num + _A[3]) / (den + _B[3])
    if mid.any():
        ys = y[mid]
        num, den = _C[8] * ys, ys
        for i in range(7):
            num = (num + _C[i]) * ys
            den = (den + _D[i]) * ys
        out[mid] = _exp_minus_square(ys) * (num + _C[7]) / (den + _D[7])
    if far.any():
        ys = y[far]
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            z = 1.0 / (ys * ys)
            num, den = _P[5] * z, z
            for i in range(4):
                num = (num + _P[i]) * z
                den = (den + _Q[i]) * z
            r = (_INV_SQRT_PI - z * (num + _P[4]) / (den + _Q[4])) / ys
            out[far] = np.where(np.isfinite(ys), _exp_minus_square(ys) * r, 0.0)
    return np.where(x < -_THRESH, 2.0 - out, out)


def ndtr_cody(x) -> np.ndarray:
    """Standard normal CDF 0.5 erfc(-x / sqrt 2), numpy only."""
    x = np.asarray(x)
    return 0.5 * erfc_cody(-x * _INV_SQRT2)


def baseline_ndtr(use_scipy: bool | None = None):
    """(normal CDF function, its name) for the numpy baselines: ``scipy.special.ndtr`` when scipy is
    importable (and ``use_scipy`` is not False), else ``ndtr_cody``."""
    if use_scipy is not False:
        try:
            from scipy.special import ndtr

            return ndtr, "scipy.special.ndtr"
        except ImportError:
            if use_scipy:
                raise
    return ndtr_cody, "numpy Cody erfc (no scipy)"


# ---------------------------------------------------------------- numpy valuation (the kernel's formulas)


def host_book(book: Book) -> dict:
    """A ``Book``'s fields as numpy arrays (host copies), keyed by field name."""
    return {f: np.asarray(getattr(book, f)) for f in BOOK_FIELDS}


def _sign(is_call, dtype):
    return np.where(is_call, dtype.type(1.0), dtype.type(-1.0))


def black76_np(F, K, T, vol, is_call, ndtr):
    """Undiscounted Black-76 price, numpy, intrinsic value when vol^2 T is 0 (as ``kernel.black76``).
    Returns (price, sign, d1, sd, live)."""
    dtype = np.result_type(F)
    variance = vol * vol * T
    live = variance > np.finfo(dtype).eps ** 2
    sd = np.sqrt(np.where(live, variance, dtype.type(1.0)))
    d1 = np.log(F / K) / sd + 0.5 * sd
    sign = _sign(is_call, dtype)
    price = sign * (F * ndtr(sign * d1) - K * ndtr(sign * (d1 - sd)))
    return np.where(live, price, np.maximum(sign * (F - K), 0.0)), sign, d1, sd, live


def numpy_unit_greeks(book, ndtr) -> dict:
    """Value and Greeks of one coin of each option of ``book`` (a ``Book`` or ``host_book`` dict, options only),
    USD, by closed forms: the same definitions as ``kernel.unit_greeks`` (delta and gamma move spot and
    forward in proportion; vega, vanna, volga per 1.00 vol; theta the one-day repricing)."""
    b = book if isinstance(book, dict) else host_book(book)
    if np.any(b["kind"] != OPTION):
        raise ValueError("numpy_unit_greeks prices options only")
    F, K, T, vol, S = b["forward"], b["strike"], b["expiry_years"], b["vol"], b["spot"]
    dtype = F.dtype
    price, sign, d1, sd, live = black76_np(F, K, T, vol, b["is_call"], ndtr)
    ratio = np.where(b["inverse"], S / F, dtype.type(1.0))  # inverse: coin premium B76/F worth S each
    pdf = np.where(live, _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1), 0.0)
    sqrt_t = np.sqrt(T)
    value = price * ratio
    delta_f = np.where(live, sign * ndtr(sign * d1), np.where(sign * (F - K) > 0, sign, dtype.type(0.0)))
    vega = F * pdf * sqrt_t * ratio
    safe_sd = np.where(live, sd, dtype.type(1.0))
    theta_price = black76_np(F, K, np.maximum(T - DAY, 0.0), vol, b["is_call"], ndtr)[0]
    return {
        "value": value,
        "delta": delta_f * F * ratio / S,
        "gamma": pdf / safe_sd * F * ratio / (S * S),
        "vega": vega,
        "theta": theta_price * ratio - value,
        "vanna": -F * pdf * (d1 - sd) / vol * ratio / S,
        "volga": vega * d1 * (d1 - sd) / vol,
    }


def _unit_value(b, scale, vol_shift, dt_years, vol_floor, ndtr, derivative: bool):
    """``kernel.unit_value_usd`` in numpy (fields of ``b`` broadcast against ``scale`` and ``vol_shift``), and
    with ``derivative`` also its derivative in the common scale of spot and forwards. Branches of kinds
    the book does not hold are skipped."""
    kind = b["kind"]
    dtype = b["forward"].dtype
    zero = dtype.type(0.0)
    S, F = b["spot"] * scale, b["forward"] * scale
    value = np.zeros(np.broadcast_shapes(np.shape(S), np.shape(vol_shift)), dtype)
    slope = np.zeros_like(value) if derivative else None
    is_opt = kind == OPTION
    if is_opt.any():
        T = np.maximum(b["expiry_years"] - dt_years, 0.0)
        vol = np.maximum(b["vol"] + vol_shift, vol_floor)
        price, sign, d1, _, live = black76_np(F, b["strike"], T, vol, b["is_call"], ndtr)
        ratio = np.where(b["inverse"], b["spot"] / b["forward"], dtype.type(1.0))
        value = np.where(is_opt, price * ratio, value)
        if derivative:
            delta_f = np.where(live, sign * ndtr(sign * d1), np.where(sign * (F - b["strike"]) > 0, sign, zero))
            slope = np.where(is_opt, delta_f * b["forward"] * ratio, slope)
    is_fut = (kind == FUTURE) | (kind == PERPETUAL)
    if is_fut.any():
        value = np.where(is_fut, np.where(b["inverse"], (1.0 - b["forward"] / F) * S, F - b["forward"]), value)
        if derivative:
            slope = np.where(is_fut, np.where(b["inverse"], b["spot"], b["forward"]), slope)
    is_spot = kind == SPOT
    if is_spot.any():
        value = np.where(is_spot, S, value)
        if derivative:
            slope = np.where(is_spot, b["spot"], slope)
    return (value, slope) if derivative else value


def numpy_span(books, params, ndtr) -> dict:
    """SPAN of every account of ``books`` (a stacked ``Book``, leading accounts axis, or its ``host_book``)
    with ``params`` (``span.SpanParams``): ``span.span_core``'s figures, vectorised numpy over accounts."""
    b = books if isinstance(books, dict) else host_book(books)
    p = jax.tree_util.tree_map(np.asarray, params)
    g = jax.tree_util.tree_map(np.asarray, params.grid)
    q, und = b["quantity"], b["underlying"]
    dtype = q.dtype
    one = dtype.type(1.0)
    n_und = b["underlying_spot"].shape[-1]
    one_hot = (und[..., None] == np.arange(n_und)).astype(dtype)  # (a, n, u)
    spot_u = b["underlying_spot"]  # (a, u)
    has_coin = b["margin_coin"] >= 0
    coin = np.maximum(b["margin_coin"], 0)
    coin_price = np.take_along_axis(spot_u, coin[:, None], 1)[:, 0]  # (a,)
    usd_to_mc = np.where(has_coin, one / coin_price, one)
    own_coin = has_coin[:, None] & (und == coin[:, None])  # the position's underlying is the margin coin

    # risk arrays: each position under its own underlying's 16 scenarios, (a, 16, n)
    b3 = {k: v[:, None, :] if v.ndim == 2 else v for k, v in b.items()}
    move = np.moveaxis(g.price_move[und], -1, 1)
    shift = np.moveaxis(g.vol_shift[und], -1, 1)
    weight = np.moveaxis(g.weight[und], -1, 1)
    zero = dtype.type(0.0)
    usd_today = q * _unit_value(b, one, zero, zero, zero, ndtr, False)  # (a, n)
    value_today = np.where(has_coin[:, None], usd_today / coin_price[:, None], usd_today)
    own3 = own_coin[:, None, :]
    usd = q[:, None, :] * _unit_value(b3, 1.0 + move, shift, g.dt, g.vol_floor, ndtr, False)
    scen = np.where(has_coin[:, None, None], usd / (coin_price[:, None, None] * np.where(own3, 1.0 + move, one)), usd)
    losses = -weight * (scen - value_today[:, None, :])
    risk_array = np.einsum("asn,anu->aus", losses, one_hot)
    worst = np.argmax(risk_array, axis=2)
    scan = np.maximum(risk_array.max(axis=2), 0.0)

    # composite delta: 7 price points of the own underlying, vol unchanged, time advanced the horizon
    steps = np.asarray(COMPOSITE_DELTA_STEPS, dtype)
    scale = 1.0 + steps[None, :, None] * p.price_scan_range[und][:, None, :]  # (a, 7, n)
    horizon = p.horizon_days * dtype.type(1.0 / 365.0)
    val, slope = _unit_value(b3, scale, zero, horizon, zero, ndtr, True)
    d = q[:, None, :] * (slope - np.where(own3, val / scale, 0.0)) / b3["spot"]
    cd = np.einsum("k,akn->an", np.asarray(COMPOSITE_DELTA_WEIGHTS, dtype), d)

    # intra-commodity tiers
    days = b["expiry_years"] * 365.0
    days = days + np.maximum(days, 1.0) * (1024 * np.finfo(dtype).eps)
    kind = b["kind"]
    dated = (kind == OPTION) | (kind == FUTURE)
    tiers = p.tiers_days[und]  # (a, n, k)
    tier = np.where(dated, np.sum(tiers <= days[..., None], axis=-1), 0)
    n_tiers = p.tiers_days.shape[1] + 1
    tier_hot = (tier[..., None] == np.arange(n_tiers)).astype(dtype)
    left = np.einsum("anu,ant,an->aut", one_hot, tier_hot, cd)
    spreads = np.zeros(left.shape[:2], dtype)
    for i in range(n_tiers):
        for j in range(i + 1, n_tiers):
            da, db = left[:, :, i].copy(), left[:, :, j].copy()
            s = np.where(da * db < 0, np.minimum(np.abs(da), np.abs(db)), 0.0)
            spreads += s
            left[:, :, i] -= np.sign(da) * s
            left[:, :, j] -= np.sign(db) * s
    intra = spreads * p.intra_spread_rate * spot_u * usd_to_mc[:, None]

    near = dated & (days < p.spot_days[und])
    near_delta = np.einsum("an,anu->au", cd * near, one_hot)
    spot_charge = np.abs(near_delta) * p.spot_rate * spot_u * usd_to_mc[:, None]

    is_option = kind == OPTION
    short = np.maximum(-q, 0.0)
    short_calls = np.einsum("an,anu->au", short * (is_option & b["is_call"]), one_hot)
    short_puts = np.einsum("an,anu->au", short * (is_option & ~b["is_call"]), one_hot)
    som = p.short_option_minimum * spot_u * np.maximum(short_calls, short_puts) * usd_to_mc[:, None]

    net_delta = left.sum(axis=2)
    time_risk = 0.5 * (risk_array[:, :, 0] + risk_array[:, :, 1])
    at = lambda k: np.take_along_axis(risk_array, k[..., None], 2)[..., 0]  # noqa: E731
    vol_risk = np.where(worst >= 14, 0.0, 0.5 * (at(worst) - at(worst ^ 1)))
    price_risk = np.maximum(scan - time_risk - vol_risk, 0.0)
    abs_delta = np.abs(net_delta)
    risk_per_delta = np.where(abs_delta > 0, price_risk / np.where(abs_delta > 0, abs_delta, one), 0.0)
    credit = np.zeros_like(net_delta)
    remaining = net_delta.copy()
    for j in range(p.inter_legs.shape[0]):
        a, c = int(p.inter_legs[j, 0]), int(p.inter_legs[j, 1])
        ra, rc = p.inter_ratios[j]
        da, dc = remaining[:, a].copy(), remaining[:, c].copy()
        n = np.where(da * dc < 0, np.minimum(np.abs(da) / ra, np.abs(dc) / rc), 0.0)
        rate = p.inter_credit_rate[j]
        credit[:, a] += n * ra * risk_per_delta[:, a] * rate
        credit[:, c] += n * rc * risk_per_delta[:, c] * rate
        remaining[:, a] -= np.sign(da) * n * ra
        remaining[:, c] -= np.sign(dc) * n * rc

    risk_u = np.maximum(scan + intra + spot_charge - credit, som)
    nov = np.sum(np.where(is_option, value_today, 0.0), axis=1)
    risk = risk_u.sum(axis=1)
    return {"risk_array": risk_array, "scan_risk": scan, "worst_scenario": worst + 1, "intra_spread": intra,
            "spot_charge": spot_charge, "inter_credit": credit, "short_option_minimum": som,
            "composite_delta": np.einsum("an,anu->au", cd, one_hot), "underlying_risk": risk_u, "risk": risk,
            "nov": nov, "total": np.maximum(risk - nov, 0.0), "position_risk_array": losses,
            "position_composite_delta": cd, "position_tier": tier, "position_value": value_today}


def numpy_span_chunked(books, params, ndtr, chunk: int = 512) -> np.ndarray:
    """``numpy_span`` totals over ``chunk`` accounts at a time (bounded memory, cache-friendlier)."""
    b = books if isinstance(books, dict) else host_book(books)
    n = b["quantity"].shape[0]
    return np.concatenate([numpy_span({k: v[s:s + chunk] for k, v in b.items()}, params, ndtr)["total"]
                           for s in range(0, n, chunk)])


# ---------------------------------------------------------------- numpy Monte Carlo (the same model)


def numpy_factors(spec, params, paths: int, rng: np.random.Generator):
    """Unit-variance factors (zr, zv), each (paths, u), of the normal or student_t model with numpy draws
    (the same distribution as ``montecarlo.path_factors``; different random numbers)."""
    if spec.model not in ("normal", "student_t") or spec.antithetic:
        raise ValueError("the numpy baseline draws the normal and student_t models without antithetics")
    p = jax.tree_util.tree_map(np.asarray, params)
    n_und = p.vol.shape[0]
    z = rng.standard_normal((paths, 2 * n_und)) @ np.asarray(p.chol, np.float64).T
    if spec.model == "student_t":
        nu = float(p.nu)
        z *= np.sqrt((nu - 2.0) / rng.chisquare(nu, paths))[:, None]
    z = z.astype(p.vol.dtype)
    return z[:, :n_und], z[:, n_und:]


def numpy_losses(book, params, zr, zv, ndtr) -> np.ndarray:
    """Portfolio loss (margin currency) of each path given its factors (paths, u): the shock of
    ``montecarlo.shock_from_factors`` and full revaluation of every position."""
    b = book if isinstance(book, dict) else host_book(book)
    p = jax.tree_util.tree_map(np.asarray, params)
    tau = p.horizon_years
    r = p.vol * np.sqrt(tau) * zr - 0.5 * p.vol ** 2 * tau
    x = p.vol_of_vol * np.sqrt(tau) * zv - 0.5 * p.vol_of_vol ** 2 * tau
    scale_u = np.exp(r)  # (paths, u)
    shift_u = p.atm_vol * np.expm1(x)
    und = b["underlying"]
    q = b["quantity"]
    dtype = q.dtype
    zero = dtype.type(0.0)
    today = q * _unit_value(b, dtype.type(1.0), zero, zero, zero, ndtr, False)
    scen = q * _unit_value(b, scale_u[:, und], shift_u[:, und], tau, p.vol_floor, ndtr, False)
    if b["margin_coin"] >= 0:
        c = int(b["margin_coin"])
        today = today / b["underlying_spot"][c]
        scen = scen / (b["underlying_spot"][c] * scale_u[:, c:c + 1])
    return -(scen - today).sum(axis=1)


def numpy_monte_carlo(book, spec, params, *, paths: int, seed: int, chunk: int, ndtr) -> np.ndarray:
    """Losses of ``paths`` numpy-drawn paths, revalued ``chunk`` paths at a time."""
    b = book if isinstance(book, dict) else host_book(book)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, paths, chunk):
        zr, zv = numpy_factors(spec, params, min(chunk, paths - start), rng)
        out.append(numpy_losses(b, params, zr, zv, ndtr))
    return np.concatenate(out)


# ---------------------------------------------------------------- synthetic books


def market_spots() -> tuple[float, float]:
    """BTC and ETH index prices of the bundled default market."""
    from pmjax.io.market import load_market

    m = load_market()
    return m.spot("BTC"), m.spot("ETH")


def random_option_book(n: int, dtype=jnp.float64, *, seed: int = 0, size: int | None = None,
                       spots=None) -> Book:
    """``n`` random BTC/ETH options (inverse and linear, calls and puts, strikes within +-30% of the
    forward, 1 day to 1 year, vols 30-100%), padded to ``size`` rows, USD margin; host arrays."""
    spots = market_spots() if spots is None else spots
    size = n if size is None else size
    rng = np.random.default_rng(seed)
    und = rng.integers(0, 2, n)
    spot = np.asarray(spots, np.float64)[und]
    T = rng.uniform(1.0 / 365.0, 1.0, n)
    fwd = spot * np.exp(0.05 * T)
    pad = size - n
    col = lambda a, fill: np.concatenate([np.asarray(a), np.full(pad, fill, np.asarray(a).dtype)])  # noqa: E731
    f = lambda a, fill: col(np.asarray(a, np.float64), fill).astype(dtype)  # noqa: E731
    return Book(underlying=col(und.astype(np.int32), 0), kind=col(np.full(n, OPTION, np.int32), SPOT),
                inverse=col(rng.integers(0, 2, n) == 1, False), is_call=col(rng.integers(0, 2, n) == 1, True),
                strike=f(fwd * np.exp(rng.uniform(-0.3, 0.3, n)), 1.0),
                quantity=f(rng.choice([-1.0, 1.0], n) * rng.integers(1, 10, n), 0.0),
                expiry_years=f(T, 0.0), spot=f(spot, 1.0), forward=f(fwd, 1.0), vol=f(rng.uniform(0.3, 1.0, n), 0.5),
                underlying_spot=np.asarray(spots, dtype), margin_coin=np.asarray(-1, np.int32))


def random_account_books(accounts: int, positions: int = 20, dtype=jnp.float64, *, seed: int = 0,
                         size: int | None = None, spots=None) -> Book:
    """``accounts`` random accounts of ``positions`` positions each (options 70%, futures 15%, perpetuals
    10%, spot 5%; inverse and linear; margin currency USD, BTC or ETH), books padded to ``size`` rows
    (default ``bucket_size(positions)``) and stacked (host arrays, leading accounts axis)."""
    spots = market_spots() if spots is None else spots
    size = bucket_size(positions) if size is None else size
    rng = np.random.default_rng(seed)
    sh = (accounts, positions)
    und = rng.integers(0, 2, sh)
    kind = rng.choice([OPTION, FUTURE, PERPETUAL, SPOT], sh, p=[0.7, 0.15, 0.1, 0.05])
    spot = np.asarray(spots, np.float64)[und]
    dated = (kind == OPTION) | (kind == FUTURE)
    T = np.where(dated, rng.uniform(0.5 / 365.0, 1.0, sh), 0.0)
    fwd = np.where(dated, spot * np.exp(0.05 * T), spot)
    is_opt = kind == OPTION
    pad = ((0, 0), (0, size - positions))
    col = lambda a, fill: np.pad(np.asarray(a), pad, constant_values=fill)  # noqa: E731
    f = lambda a, fill: col(np.asarray(a, np.float64), fill).astype(dtype)  # noqa: E731
    return Book(underlying=col(und.astype(np.int32), 0), kind=col(kind.astype(np.int32), SPOT),
                inverse=col(rng.integers(0, 2, sh) == 1, False), is_call=col(rng.integers(0, 2, sh) == 1, True),
                strike=f(np.where(is_opt, fwd * np.exp(rng.uniform(-0.3, 0.3, sh)), 1.0), 1.0),
                quantity=f(rng.normal(0.0, 3.0, sh), 0.0), expiry_years=f(T, 0.0), spot=f(spot, 1.0),
                forward=f(fwd, 1.0), vol=f(np.where(is_opt, rng.uniform(0.3, 1.0, sh), 0.5), 0.5),
                underlying_spot=np.tile(np.asarray(spots, dtype), (accounts, 1)),
                margin_coin=rng.integers(-1, 2, accounts).astype(np.int32))


# ---------------------------------------------------------------- timing


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls (``fn`` must block
    until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _first_and_warm(fn, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    return first, median_seconds(fn, repeats, warmup=0)


#: sizes per preset: options priced, accounts (and numpy's share), positions per account, Monte Carlo
#: paths (and numpy's share) x options, what-if repeats, timing repeats (pmjax, numpy)
SIZES = {
    "tiny": {"options": 2048, "numpy_options": 2048, "accounts": 64, "numpy_accounts": 64, "positions": 20,
             "paths": 256, "numpy_paths": 256, "mc_options": 64, "whatif_repeats": 10, "repeats": 2,
             "numpy_repeats": 1, "quantlib_options": 200},
    "quick": {"options": 1 << 18, "numpy_options": 1 << 18, "accounts": 2048, "numpy_accounts": 1024,
              "positions": 20, "paths": 8192, "numpy_paths": 2048, "mc_options": 256, "whatif_repeats": 100,
              "repeats": 3, "numpy_repeats": 2, "quantlib_options": 2000},
    "medium": {"options": 1 << 22, "numpy_options": 1 << 21, "accounts": 16384, "numpy_accounts": 4096,
               "positions": 20, "paths": 65536, "numpy_paths": 8192, "mc_options": 1000, "whatif_repeats": 200,
               "repeats": 5, "numpy_repeats": 3, "quantlib_options": 20000},
    "full": {"options": 1 << 25, "numpy_options": 1 << 22, "accounts": 100_000, "numpy_accounts": 8192,
             "positions": 20, "paths": 1_000_000, "numpy_paths": 16384, "mc_options": 1000, "whatif_repeats": 200,
             "repeats": 5, "numpy_repeats": 3, "quantlib_options": 20000},
}

#: targets per platform: (row name, platform, text, check(row) -> True / False / None when not measurable,
#: precision the target is stated in or None). GPU targets are float32 (``pmjax bench --precision float32``);
#: a run in another precision reports them "not measured at this precision"
TARGETS = (
    ("black76_f32", "gpu", ">= 5e10 options/s (float32)", lambda r: r["pmjax"] >= 5e10, "float32"),
    ("mc_revaluations", "gpu", ">= 1e11 revaluations/s (float32)", lambda r: r["pmjax"] >= 1e11, "float32"),
    ("mc_revaluations", "gpu", "1e6 paths x 1,000 options < 1 s (float32)",
     lambda r: r["seconds"] < 1.0 if r["paths"] >= 1_000_000 and r["options"] >= 1000 else None, "float32"),
    ("span_accounts", "gpu", "1e5 accounts x 20 positions < 1 s (float32)",
     lambda r: r["seconds"] < 1.0 if r["accounts"] >= 100_000 and r["positions"] >= 20 else None, "float32"),
    ("black76_f32", "cpu", ">= 8x the numpy baseline (float32)", lambda r: r["speedup"] >= 8.0, "float32"),
    ("mc_revaluations", "cpu", ">= 5x the numpy baseline (float32)", lambda r: r["speedup"] >= 5.0, "float32"),
    ("what_if_latency", "cpu", "< 1 ms warm, 100 positions", lambda r: r["seconds"] < 1e-3, None),
    ("what_if_latency_span_deribit", "cpu", "< 1 ms warm, 100 positions", lambda r: r["seconds"] < 1e-3, None),
)

ROW_NAMES = ("black76_f32", "black76_autodiff_f32", "black76_price_f32", "black76_f64", "black76_autodiff_f64",
             "black76_f64_quantlib", "span_accounts", "mc_revaluations", "what_if_latency",
             "what_if_latency_span_deribit", "compile")


def _row(name, size, unit, pmjax_value, baseline, baseline_value, higher_is_better: bool, **extra) -> dict:
    if baseline_value is None or not pmjax_value:
        speedup = None
    else:
        speedup = pmjax_value / baseline_value if higher_is_better else baseline_value / pmjax_value
    return {"name": name, "size": size, "unit": unit, "pmjax": pmjax_value, "baseline": baseline,
            "baseline_value": baseline_value, "speedup": speedup, **extra}


# ---------------------------------------------------------------- the measurements


def _sharded_option_book(n: int, dtype, seed: int) -> Book:
    """``random_option_book`` placed on the devices the way the pricing rows compute it: split over every
    local device (``fast_greeks.place_options``), so no row moves data between devices while it is timed."""
    from pmjax.core.fast_greeks import place_options

    return place_options(random_option_book(n, dtype, seed=seed))


def bench_black76(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict, *, closed_form: bool = True,
                  autodiff: bool = True) -> list[dict]:
    """Price + 6 Greeks of ``sz["options"]`` options in ``dtype``: ``black76_<tag>`` times the closed-form path
    (``fast_greeks.unit_greeks_fast``: blocks, every local device), ``black76_autodiff_<tag>`` the autodiff
    kernel (``kernel.unit_greeks_jit`` on the same book split over the same devices); both against one
    numpy baseline measured here."""
    from pmjax.core.fast_greeks import _layout, default_block, unit_greeks_fast
    from pmjax.core.kernel import unit_greeks_jit

    n = sz["options"]
    tag = "f32" if jnp.dtype(dtype) == jnp.float32 else "f64"
    precision = str(jnp.dtype(dtype))
    n_dev = jax.local_device_count()
    book = _sharded_option_book(n, dtype, seed=1)
    nb = sz["numpy_options"]
    host = host_book(random_option_book(nb, dtype, seed=1))
    step = 1 << 16  # numpy in cache-sized chunks: faster than whole-array passes

    def run_numpy():
        for s in range(0, nb, step):
            numpy_unit_greeks({k: (v[s:s + step] if np.ndim(v) else v) for k, v in host.items()}, ndtr)

    base = median_seconds(run_numpy, sz["numpy_repeats"])
    label = f"numpy closed-form Black-76 + 6 Greeks ({ndtr_name})"
    rows = []
    if closed_form:
        block = _layout(n, n_dev, default_block(dtype))[0]
        first, warm = _first_and_warm(lambda: jax.block_until_ready(unit_greeks_fast(book)), sz["repeats"])
        compile_times[f"black76_{tag}"] = max(first - warm, 0.0)
        rows.append(_row(f"black76_{tag}", n, "per_s", n / warm, label, nb / base, True, seconds=warm, options=n,
                         baseline_size=nb, precision=precision, devices=n_dev, block=block,
                         path=f"pmjax.fast_greeks.unit_greeks_fast: closed forms, blocks of {block:,} options "
                              f"(lax.map) on {n_dev} device(s) (shard_map)"))
    if autodiff:
        first, warm = _first_and_warm(lambda: jax.block_until_ready(unit_greeks_jit(book)), sz["repeats"])
        compile_times[f"black76_autodiff_{tag}"] = max(first - warm, 0.0)
        rows.append(_row(f"black76_autodiff_{tag}", n, "per_s", n / warm, label, nb / base, True, seconds=warm,
                         options=n, baseline_size=nb, precision=precision, devices=n_dev,
                         path=f"pmjax.kernel.unit_greeks_jit: autodiff of unit_value_usd, book split over "
                              f"{n_dev} device(s)"))
    return rows


def bench_black76_price(sz: dict, ndtr, ndtr_name: str) -> dict:
    """Black-76 price only, float32 (``kernel.black76`` jitted against ``black76_np``): the part of the
    pricing row without the Greeks, to show where the time of ``black76_f32`` goes."""
    from pmjax.core.kernel import black76

    n, nb = sz["options"], sz["numpy_options"]
    b = _sharded_option_book(n, jnp.float32, seed=1)
    price = jax.jit(black76)
    run = lambda: jax.block_until_ready(price(b.forward, b.strike, b.expiry_years, b.vol, b.is_call))  # noqa: E731
    warm = median_seconds(run, sz["repeats"])
    h = host_book(random_option_book(nb, jnp.float32, seed=1))
    step = 1 << 16

    def run_numpy():
        for s in range(0, nb, step):
            black76_np(h["forward"][s:s + step], h["strike"][s:s + step], h["expiry_years"][s:s + step],
                       h["vol"][s:s + step], h["is_call"][s:s + step], ndtr)

    base = median_seconds(run_numpy, sz["numpy_repeats"])
    return _row("black76_price_f32", n, "per_s", n / warm, f"numpy closed-form Black-76 price only ({ndtr_name})",
                nb / base, True, seconds=warm, options=n, baseline_size=nb)


def bench_quantlib(sz: dict, pmjax_rate: float) -> dict | None:
    """QuantLib's BlackCalculator per option: value, delta, gamma, vega, vanna, volga, and theta as a second
    calculator one day on (as pmjax's one-day theta)."""
    try:
        import QuantLib as ql
    except ImportError:
        return None
    m = sz["quantlib_options"]
    b = host_book(random_option_book(m, jnp.float64, seed=1))
    rows = list(zip(b["forward"].tolist(), b["strike"].tolist(), b["expiry_years"].tolist(), b["vol"].tolist(),
                    b["is_call"].tolist()))

    def run():
        for F, K, T, v, call in rows:
            payoff = ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K)
            c = ql.BlackCalculator(payoff, F, v * math.sqrt(T), 1.0)
            c.value(), c.deltaForward(), c.gammaForward(), c.vega(T), c.vanna(F, T), c.volga(T)
            ql.BlackCalculator(payoff, F, v * math.sqrt(max(T - DAY, 0.0)), 1.0).value()

    base = median_seconds(run, 1)
    return _row("black76_f64_quantlib", sz["options"], "per_s", pmjax_rate,
                "QuantLib BlackCalculator per option (value, delta, gamma, vega, vanna, volga, 1-day theta)",
                m / base, True, baseline_size=m, precision="float64",
                path="pmjax.fast_greeks.unit_greeks_fast (the black76_f64 rate)")


def bench_span(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict) -> tuple[dict, dict]:
    from pmjax.io.config import load_config
    from pmjax.batch.sharding import span_chunk
    from pmjax.apps.stress import span_margin_sharded
    from pmjax.measures.span import span_core, span_params

    params = span_params(load_config(), dtype=dtype)
    a, npos = sz["accounts"], sz["positions"]
    books = random_account_books(a, npos, dtype, seed=2)
    rows = books.quantity.shape[1]
    chunk = min(span_chunk(rows, dtype), bucket_size(a, minimum=1))
    n_dev = jax.local_device_count()
    chunk = -(-chunk // n_dev) * n_dev
    # compile: trace + lower + compile of a fresh jit at the chunk shape (a fresh function: no cache hit)
    fresh = jax.jit(jax.vmap(lambda bk, pr: span_core(bk, pr), in_axes=(0, None)))
    sample = jax.tree_util.tree_map(lambda x: x[:chunk] if x.shape[0] >= chunk else
                                    np.concatenate([x] * (-(-chunk // x.shape[0])))[:chunk], books)
    t0 = time.perf_counter()
    lowered = fresh.lower(sample, params)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    run = lambda: span_margin_sharded(books, params, chunk=chunk)  # noqa: E731  (host results, like span_batch)
    first, warm = _first_and_warm(run, sz["repeats"])
    compile_times["span_margin_batch"] = max(first - warm, 0.0)
    na = sz["numpy_accounts"]
    nb_books = host_book(random_account_books(na, npos, dtype, seed=2))
    base = median_seconds(lambda: numpy_span_chunked(nb_books, params, ndtr), sz["numpy_repeats"])
    numpy_chunk_seconds = base / na * chunk
    label = f"numpy SPAN, full method, vectorised over accounts ({ndtr_name})"
    span_row = _row("span_accounts", f"{a}x{npos}", "per_s", a / warm, label, na / base, True, seconds=warm,
                    accounts=a, positions=npos, book_rows=rows, chunk=chunk, devices=n_dev, baseline_size=na,
                    precision=str(jnp.dtype(dtype)))
    compile_row = _row("compile", f"span_margin_batch {chunk}x{rows}", "s", t2 - t0,
                       f"numpy SPAN of one {chunk}-account chunk (nothing to compile)", numpy_chunk_seconds, False,
                       trace_lower_s=t1 - t0, compile_s=t2 - t1, precision=str(jnp.dtype(dtype)),
                       note="speedup = numpy seconds for one chunk / pmjax compile seconds")
    return span_row, compile_row


def bench_mc(dtype, sz: dict, ndtr, ndtr_name: str, compile_times: dict) -> dict:
    from pmjax.scenarios import montecarlo
    from pmjax.io.market import load_market
    from pmjax.measures.var import auto_chunk

    market = load_market()
    settings = montecarlo.var_settings({"var": {"historical": False}})
    spec, params, _ = montecarlo.build_model(market, settings, dtype=dtype)
    n_opt, paths = sz["mc_options"], sz["paths"]
    book = random_option_book(n_opt, dtype, seed=3, size=bucket_size(n_opt))
    chunk = auto_chunk(book.size, dtype)  # what var.chunk: auto (the default) uses
    run = lambda: montecarlo.simulate_losses(book, spec, params, paths=paths, seed=0, chunk=chunk,  # noqa: E731
                                             progress=False)
    first, warm = _first_and_warm(run, sz["repeats"])
    compile_times["mc_losses"] = max(first - warm, 0.0)
    np_paths = sz["numpy_paths"]
    host = host_book(random_option_book(n_opt, dtype, seed=3))  # the same options, no padding rows
    base = median_seconds(lambda: numpy_monte_carlo(host, spec, params, paths=np_paths, seed=0,
                                                    chunk=min(np_paths, 2048), ndtr=ndtr), sz["numpy_repeats"])
    return _row("mc_revaluations", f"{paths}x{n_opt}", "per_s", paths * n_opt / warm,
                f"numpy {spec.model} draws + Black-76 revaluation, chunked ({ndtr_name})", np_paths * n_opt / base,
                True, seconds=warm, paths=paths, options=n_opt, chunk=min(chunk, paths), model=spec.model,
                devices=jax.local_device_count(), baseline_size=f"{np_paths}x{n_opt}",
                precision=str(jnp.dtype(dtype)))


def whatif_latency_fallback(n_positions: int = 100, *, repeats: int = 100, dtype=jnp.float64) -> float:
    """Median warm latency (s) of margin after - margin before through ``span_margin`` on a padded book with
    the trade written into a spare row (used when ``pmjax.whatif`` is missing)."""
    from pmjax.io.config import load_config
    from pmjax.measures.span import span_margin, span_params

    params = span_params(load_config(), dtype=dtype)
    n = n_positions
    book = random_option_book(n, dtype, seed=4, size=bucket_size(n + 4))
    trade = random_option_book(1, dtype, seed=5)

    def once():
        after = {f: np.array(getattr(book, f)) for f in BOOK_FIELDS}
        for f in BOOK_FIELDS[:10]:
            after[f][n] = np.asarray(getattr(trade, f))[0]
        before_total = span_margin(book, params).total
        after_total = span_margin(Book(**after), params).total
        return float(after_total - before_total)

    return median_seconds(once, repeats, warmup=2)


def _whatif_account(market, dtype):
    """The what-if rows' account (``whatif.synthetic_account``, 100 positions), the trade (a listed BTC option
    it does not hold, 1 coin short), and its before and after books on one padded size."""
    from pmjax.core.book import make_book, resolve
    from pmjax.apps.whatif import listed_options, synthetic_account

    portfolio = synthetic_account(market, 100, seed=0)
    held = set(portfolio.instruments)
    trade = [i for i in listed_options(market, ("BTC",)) if i not in held]
    trade = trade[len(trade) // 2]
    instruments = list(portfolio.instruments)
    qty = [p.quantity for p in portfolio.positions]
    size = bucket_size(len(instruments) + 4)

    def books():
        before = make_book(resolve(instruments, qty, market), market, portfolio.margin_currency, dtype=dtype,
                           size=size)
        after = make_book(resolve(instruments + [trade], qty + [-1.0], market), market, portfolio.margin_currency,
                          dtype=dtype, size=size)
        return before, after

    return portfolio, trade, books


def bench_whatif(dtype, sz: dict, ndtr, ndtr_name: str, *, span_only: bool = True,
                 span_deribit: bool = True) -> list[dict]:
    """``what_if_latency``: median warm latency of ``whatif.whatif_latency`` with SPAN (baseline: numpy SPAN of
    the before and after books); ``what_if_latency_span_deribit``: the same with SPAN and the Deribit grid
    (baseline: pmjax's regular path, resolve + make_book + ``span_margin`` + ``deribit_margin`` of the before
    and after books, there being no numpy Deribit grid)."""
    from pmjax.io.config import load_config
    from pmjax.io.market import load_market
    from pmjax.measures.span import span_margin, span_params

    repeats = sz["whatif_repeats"]
    market = load_market()
    config = load_config()
    params = span_params(config, dtype=dtype)
    precision = str(jnp.dtype(dtype))
    rows = []
    try:
        from pmjax.apps.whatif import whatif_latency
    except ImportError:
        if not span_only:
            return rows
        pm = whatif_latency_fallback(100, repeats=repeats, dtype=dtype)
        how = "span_margin before/after on a padded book, trade in a spare row (pmjax.whatif missing)"
        book = random_option_book(100, dtype, seed=4, size=bucket_size(104))
        host = host_book(jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * 2), book))
        base = median_seconds(lambda: numpy_span(host, params, ndtr), max(5, repeats // 4))
        return [_row("what_if_latency", "100 positions + 1 trade", "s", pm,
                     f"numpy SPAN of the before and after books ({ndtr_name})", base, False, method=how, seconds=pm,
                     methods="span", precision=precision)]
    _, _, books = _whatif_account(market, dtype)
    before, after = books()
    if span_only:
        pm = whatif_latency(100, repeats=repeats, methods=("span",), market=market, config=config, dtype=dtype)
        pair = jax.tree_util.tree_map(lambda x, y: np.stack([np.asarray(x), np.asarray(y)]), before, after)
        host = host_book(pair)
        base = median_seconds(lambda: numpy_span(host, params, ndtr), max(5, repeats // 4))
        rows.append(_row("what_if_latency", "100 positions + 1 trade", "s", pm,
                         f"numpy SPAN of the before and after books ({ndtr_name})", base, False,
                         method="pmjax.whatif.whatif_latency (SPAN; resolve, write, one jitted call)", seconds=pm,
                         methods="span", precision=precision))
    if span_deribit:
        from pmjax.measures.deribit import deribit_margin, deribit_params

        dparams = deribit_params(config, dtype)
        pm = whatif_latency(100, repeats=repeats, methods=("span", "deribit"), market=market, config=config,
                            dtype=dtype)

        def regular():
            figures = []
            for b in books():
                figures += [span_margin(b, params).total, deribit_margin(b, dparams).initial]
            return [float(f) for f in figures]

        base = median_seconds(regular, max(5, repeats // 4), warmup=2)
        rows.append(_row("what_if_latency_span_deribit", "100 positions + 1 trade", "s", pm,
                         "pmjax regular path: resolve + make_book + span_margin + deribit_margin of the before and "
                         "after books (no numpy Deribit grid)", base, False,
                         method="pmjax.whatif.whatif_latency (SPAN and Deribit; resolve, write, one jitted call)",
                         seconds=pm, methods="span,deribit", precision=precision))
    return rows


def device_info() -> dict:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return {"platform": d.platform, "kind": kind, "count": jax.local_device_count(), "name": f"{d.platform}: {kind}",
            "host": platform.processor() or platform.machine(), "cpu_count": _cpu_count(),
            "cpu_devices": CPU_DEVICES.get("how")}


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


#: how ``use_all_cpu_cores`` set the CPU device count this process (shown in the bench header)
CPU_DEVICES: dict = {}


def use_all_cpu_cores(n: int | None = None) -> str:
    """Make the CPU backend one device per core (``n``, default the cores this process may use) so that
    ``pmjax bench`` on a CPU runs on every core: XLA's CPU client runs one partitioned program per device,
    each fusion of it on one thread, so one device leaves the other cores mostly idle. Must run before the
    JAX backend is initialised (importing jax or pmjax does not initialise it; the first device query or
    array does). Leaves the count alone when ``XLA_FLAGS`` already has
    ``--xla_force_host_platform_device_count``, ``JAX_NUM_CPU_DEVICES`` is set, ``n`` is 0 or the backend
    is already up. Returns (and keeps in ``CPU_DEVICES``) a line saying what was done. On a GPU machine
    this changes only the CPU backend, which the bench does not use."""
    import os

    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a jax without it: try, and treat a refusal as "already up"
        backends_are_initialized = lambda: False  # noqa: E731

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        how = "host device count from XLA_FLAGS"
    elif os.environ.get("JAX_NUM_CPU_DEVICES"):
        how = "host device count from JAX_NUM_CPU_DEVICES"
    elif n == 0:
        how = "one CPU device (--cpu-devices 0)"
    elif backends_are_initialized():
        how = "JAX backend already initialised: device count as it was"
    else:
        n = _cpu_count() if n is None else int(n)
        how = f"{n} CPU devices, one per core (pmjax bench)"
        try:
            jax.config.update("jax_num_cpu_devices", n)
        except AttributeError:  # an older jax without the option: the XLA flag does the same
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_force_host_platform_device_count={n}").strip()
        except RuntimeError:  # the backend started after all
            how = "JAX backend already initialised: device count as it was"
    CPU_DEVICES["how"] = how
    return how


def run_bench(sizes: str | dict = "quick", *, dtype=jnp.float64, only=None, use_scipy: bool | None = None,
              progress=None) -> dict:
    """Run the benchmark; returns the SPEC bench document ``{"device", "jax", "results", ...}``.

    ``sizes``: a preset of ``SIZES`` or a dict like one; ``dtype``: precision of SPAN, Monte Carlo and the
    what-if (pricing runs both float32 and float64); ``only``: row names to run (default all);
    ``progress``: a callable taking a line of text (e.g. to stderr). Every row uses every local device
    (``use_all_cpu_cores`` before the backend starts makes one per CPU core)."""
    preset = sizes if isinstance(sizes, str) else "custom"
    sz = dict(SIZES[sizes]) if isinstance(sizes, str) else dict(sizes)
    only = set(only) if only else set(ROW_NAMES)
    unknown = only - set(ROW_NAMES)
    if unknown:
        raise ValueError(f"unknown bench row(s) {', '.join(sorted(unknown))}")
    say = progress or (lambda line: None)
    ndtr, ndtr_name = baseline_ndtr(use_scipy)
    compile_times: dict[str, float] = {}
    results = []
    load_at_start = _load_average()
    started = dt.datetime.now(dt.timezone.utc)
    say(f"{jax.local_device_count()} device(s): {jax.devices()[0].platform}")
    if only & {"black76_f32", "black76_autodiff_f32"}:
        say("black76 float32 ...")
        results += bench_black76(jnp.float32, sz, ndtr, ndtr_name, compile_times, closed_form="black76_f32" in only,
                                 autodiff="black76_autodiff_f32" in only)
    if "black76_price_f32" in only:
        say("black76 price only, float32 ...")
        results.append(bench_black76_price(sz, ndtr, ndtr_name))
    if only & {"black76_f64", "black76_autodiff_f64", "black76_f64_quantlib"}:
        say("black76 float64 ...")
        rows = bench_black76(jnp.float64, sz, ndtr, ndtr_name, compile_times,
                             closed_form=bool(only & {"black76_f64", "black76_f64_quantlib"}),
                             autodiff="black76_autodiff_f64" in only)
        results += [r for r in rows if r["name"] in only]
        if "black76_f64_quantlib" in only:
            say("QuantLib per option ...")
            ql_row = bench_quantlib(sz, rows[0]["pmjax"])
            if ql_row is not None:
                results.append(ql_row)
    if only & {"span_accounts", "compile"}:
        say("SPAN accounts ...")
        span_row, compile_row = bench_span(dtype, sz, ndtr, ndtr_name, compile_times)
        results += [r for r in (span_row, compile_row) if r["name"] in only]
    if "mc_revaluations" in only:
        say("Monte Carlo ...")
        results.append(bench_mc(dtype, sz, ndtr, ndtr_name, compile_times))
    if only & {"what_if_latency", "what_if_latency_span_deribit"}:
        say("what-if latency ...")
        results += bench_whatif(dtype, sz, ndtr, ndtr_name, span_only="what_if_latency" in only,
                                span_deribit="what_if_latency_span_deribit" in only)
    info = device_info()
    target_platform = "cpu" if info["platform"] == "cpu" else "gpu"
    by_name = {r["name"]: r for r in results}
    targets = []
    for name, plat, text, check, precision in TARGETS:
        if plat != target_platform or name not in by_name:
            continue
        row = by_name[name]
        if precision is not None and row.get("precision", precision) != precision:
            met, status = None, f"not measured at this precision (run with --precision {precision})"
        else:
            met = check(row)
            status = "not measured at this size" if met is None else ("met" if met else "not met")
        targets.append({"result": name, "target": text, "platform": plat, "status": status, "met": met})
    return {"device": info["name"], "jax": jax.__version__, "results": results,
            "device_info": info, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "numpy": np.__version__, "precision": str(jnp.dtype(dtype)), "sizes": {"preset": preset, **sz},
            "baseline_ndtr": ndtr_name, "first_call_compile_s": compile_times, "targets": targets,
            "load_average_at_start": load_at_start, "date": started.isoformat(timespec="seconds"),
            "seconds": (dt.datetime.now(dt.timezone.utc) - started).total_seconds()}


def _load_average() -> list[float] | None:
    """The host's 1, 5 and 15-minute load averages (taken before the first row: other work skews CPU
    timings, and the bench's own work would show in them afterwards)."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _num(x, unit=None) -> str:
    if x is None:
        return "-"
    if unit == "s":
        return f"{x * 1e3:.3f} ms" if x < 1 else f"{x:.3f} s"
    return f"{x:.3e}"


def format_bench(doc: dict) -> str:
    """The bench document as text: header, results table, targets."""
    from pmjax.apps.tables import table

    info = doc["device_info"]
    sz = doc["sizes"]
    how = f"; {info['cpu_devices']}" if info.get("cpu_devices") and info["platform"] == "cpu" else ""
    load = doc.get("load_average_at_start")
    head = [f"device: {doc['device']} x{info['count']} ({info['cpu_count']} host cores{how})  jax {doc['jax']}  "
            f"numpy {doc['numpy']}  precision {doc['precision']} (black76 rows: their own)",
            f"sizes: {sz['preset']}: options {sz['options']:,}; accounts {sz['accounts']:,} x {sz['positions']} "
            f"positions; Monte Carlo {sz['paths']:,} paths x {sz['mc_options']:,} options; baselines on "
            f"{sz['numpy_options']:,} options, {sz['numpy_accounts']:,} accounts, {sz['numpy_paths']:,} paths",
            f"normal CDF of the baselines: {doc['baseline_ndtr']}   date {doc['date']}" +
            (f"   load average at start {' '.join(f'{x:.2f}' for x in load)}" if load else "")]
    rows = [[r["name"], r["size"], r["unit"], _num(r["pmjax"], r["unit"]), _num(r["baseline_value"], r["unit"]),
             "-" if r["speedup"] is None else f"{r['speedup']:.2f}x", r["baseline"]] for r in doc["results"]]
    text = table(rows, ["result", "size", "unit", "pmjax", "baseline", "speedup", "baseline computation"],
                 title="\n".join(head))
    lines = [text]
    paths = [f"  {r['name']}: {r['path']}" for r in doc["results"] if r.get("path")]
    if paths:
        lines += ["", "pmjax computation of the pricing rows:"] + paths
    lines += ["", "first call - warm call, s: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          doc["first_call_compile_s"].items())]
    if doc["targets"]:
        lines += ["", f"targets ({'cpu' if info['platform'] == 'cpu' else 'gpu'}):"]
        by = {r["name"]: r for r in doc["results"]}
        for t in doc["targets"]:
            r = by[t["result"]]
            got = (f"{r['speedup']:.2f}x numpy" if "numpy" in t["target"] else
                   _num(r["seconds"], "s") if "<" in t["target"] else f"{r['pmjax']:.3e}/s")
            lines.append(f"  {t['result']:<28} {t['target']:<42} measured {got:<16} {t['status']}")
    return "\n".join(lines)


__all__ = ["CPU_DEVICES", "ROW_NAMES", "SIZES", "TARGETS", "baseline_ndtr", "black76_np", "erfc_cody", "format_bench",
           "host_book", "median_seconds", "ndtr_cody", "numpy_factors", "numpy_losses", "numpy_monte_carlo",
           "numpy_span", "numpy_span_chunked", "numpy_unit_greeks", "random_account_books", "random_option_book",
           "run_bench", "use_all_cpu_cores", "whatif_latency_fallback"]
