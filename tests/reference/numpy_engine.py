"""numpy reference of pmjax's kernels for the tests: Black-76 price and Greeks, full SPAN of many accounts,
Monte Carlo losses given the factors (and numpy draws of the same models), with Cody's numpy erfc.

A copy of the numpy baselines ``pmjax bench`` times, kept here so tests do not use the library's bench as
their reference; tests/test_bench.py checks the bench's own baselines separately."""

from __future__ import annotations

import jax
import numpy as np

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book
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
    with ``params`` (``span.SpanParams``): ``span.span_margin``'s figures, vectorised numpy over accounts."""
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
    (the same distribution as ``mc_models.path_factors``; different random numbers)."""
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
    ``mc_models.shock_from_factors`` and full revaluation of every position."""
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
