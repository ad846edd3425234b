"""The valuation kernel against QuantLib, closed forms and limits (SPEC section 4).

Reference Greeks per coin held, with S the spot and F = f S the forward (f fixed: every forward
scales with spot), B(F) the undiscounted Black-76 price, B' = dB/dF, B'' = d2B/dF2:
  linear option  V = B(F):        delta = f B',  gamma = f^2 B'',  vega = dB/dvol,
                                  vanna = f d2B/dF dvol,  volga = d2B/dvol2,  theta = B(T - 1d) - B(T)
  inverse option V = B(F) S / F = B(f S) / f:
                                  delta = B',    gamma = f B'',    vega = dB/dvol / f,
                                  vanna = d2B/dF dvol,  volga = d2B/dvol2 / f,  theta = (B(T - 1d) - B(T)) / f
(``test_reference_greeks_match_finite_differences`` checks these transforms numerically.)
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import QuantLib as ql
from scipy.special import ndtr
from scipy.stats import norm

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book
from pmjax.core.kernel import GREEKS, Shock, black76, no_shock, position_values_jit, scenario_pnl_jit, unit_greeks_jit

DAY = 1.0 / 365.0  # SPEC section 4: T in days / 365, theta over one day
HOUR = DAY / 24.0
SECOND = HOUR / 3600.0
QUANTITIES = ("value",) + GREEKS


# every test book is padded to this one size, so the jitted kernel compiles once per dtype for the module
PADDED = 4096


def make_rows(F, K=None, T=None, vol=None, is_call=True, inverse=False, S=None, kind=OPTION, quantity=1.0,
              underlying=0, underlying_spot=(50_000.0, 2_500.0), margin_coin=-1, dtype=jnp.float64) -> Book:
    """A Book straight from arrays (broadcast to the length of ``F``), padded to ``PADDED`` rows as
    ``make_book`` pads (quantity 0, spot rows at price 1)."""
    F = np.atleast_1d(np.asarray(F, dtype=np.float64))
    n = F.shape[0]
    pad = PADDED - n
    full = lambda x, default: np.broadcast_to(np.asarray(default if x is None else x), (n,))  # noqa: E731

    def fl(x, fill=1.0):
        return jnp.asarray(np.concatenate([np.asarray(x, dtype=np.float64), np.full(pad, fill)]), dtype)

    def padded(x, fill, dt):
        return jnp.asarray(np.concatenate([np.asarray(x), np.full(pad, fill)]).astype(dt))

    return Book(
        underlying=padded(full(underlying, 0), 0, np.int32),
        kind=padded(full(kind, OPTION), SPOT, np.int32),
        inverse=padded(full(inverse, False), False, bool),
        is_call=padded(full(is_call, True), True, bool),
        strike=fl(full(K, 1.0)),
        quantity=fl(full(quantity, 1.0), 0.0),
        expiry_years=fl(full(T, 0.0), 0.0),
        spot=fl(full(S, F)),
        forward=fl(F),
        vol=fl(full(vol, 0.5), 0.5),
        underlying_spot=jnp.asarray(np.asarray(underlying_spot, dtype=np.float64), dtype),
        margin_coin=jnp.asarray(margin_coin, jnp.int32),
    )


def np_greeks(book: Book, n: int) -> dict[str, np.ndarray]:
    """Unit Greeks of the first ``n`` rows (the rest is padding), as float64 numpy arrays."""
    return {k: np.asarray(v, dtype=np.float64)[:n] for k, v in unit_greeks_jit(book).items()}


# ----------------------------------------------------------------------------- QuantLib reference

N_CASES = 4000
EPS = float(np.finfo(np.float64).eps)
# QuantLib's CumulativeNormalDistribution is (1 + erf(x / sqrt 2)) / 2: accurate to about one ulp of 1 in
# absolute terms only, and where that is <= 1e-8 it switches to a truncated asymptotic series good to
# ~1e-7 relative (test_quantlib_normal_cdf_is_absolute_not_relative measures both)
QL_ASYMPTOTIC_BELOW = 1e-8
QL_ASYMPTOTIC_REL = 2e-7
# a forward price B <= NEGLIGIBLE * F is compared absolutely (1e-12 of the natural scale), not relatively
NEGLIGIBLE = 1e-8
# theta tolerance: 1e-10 |theta| + THETA_C eps (M(T) + M(T - 1 day)), see test_matches_quantlib
THETA_C = 4.0

def random_option_cases(seed: int = 20260102, n: int = N_CASES) -> dict[str, np.ndarray]:
    """Calls and puts, inverse and linear, T 1 hour..2 years, vol 5%..400%, strikes from deep ITM to deep OTM."""
    rs = np.random.RandomState(seed)
    S = np.exp(rs.uniform(np.log(50.0), np.log(200_000.0), n))
    T = np.exp(rs.uniform(np.log(HOUR), np.log(2.0), n))
    F = S * np.exp(rs.uniform(-0.10, 0.30, n) * T)  # contango and backwardation: F/S != 1
    vol = np.exp(rs.uniform(np.log(0.05), np.log(4.0), n))
    sd = vol * np.sqrt(T)
    # half the strikes up to 6 standard deviations of the forward from it, half at moneyness K/F 0.05..20
    # (at most 5 sd away: further out an out-of-the-money price underflows and nothing is compared)
    by_sd = rs.uniform(-6.0, 6.0, n) * sd
    by_ratio = np.clip(rs.uniform(np.log(0.05), np.log(20.0), n), -5.0 * sd, 5.0 * sd)
    K = F * np.exp(np.where(rs.rand(n) < 0.5, by_sd, by_ratio))
    return dict(S=S, F=F, K=K, T=T, vol=vol, is_call=rs.rand(n) < 0.5, inverse=rs.rand(n) < 0.5)


def quantlib_black(is_call: bool, F: float, K: float, sd: float) -> ql.BlackCalculator:
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    return ql.BlackCalculator(payoff, F, sd, 1.0)


def quantlib_price(is_call, F, K, T, vol) -> float:
    """QuantLib's undiscounted Black price; intrinsic value once T <= 0."""
    if T <= 0.0:
        return max((F - K) if is_call else (K - F), 0.0)
    return quantlib_black(is_call, F, K, vol * math.sqrt(T)).value()


def quantlib_reference(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Price and Greeks per coin (USD) from QuantLib's forward Greeks, transformed per the module docstring."""
    n = len(c["F"])
    out = {k: np.empty(n) for k in QUANTITIES}
    for i in range(n):
        S, F, K, T, vol, call, inv = (c[k][i] for k in ("S", "F", "K", "T", "vol", "is_call", "inverse"))
        sd = vol * math.sqrt(T)
        bc = quantlib_black(bool(call), F, K, sd)
        B, dB, d2B, vega = bc.value(), bc.deltaForward(), bc.gammaForward(), bc.vega(T)
        theta = quantlib_price(bool(call), F, K, T - DAY, vol) - B
        # Black-76 dDelta/dvol and dVega/dvol (QuantLib has no forward vanna/volga)
        d1 = math.log(F / K) / sd + 0.5 * sd
        d2 = d1 - sd
        vanna = -norm.pdf(d1) * d2 / vol
        volga = vega * d1 * d2 / vol
        f = F / S
        if inv:
            vals = (B / f, dB, f * d2B, vega / f, theta / f, vanna, volga / f)
        else:
            vals = (B, f * dB, f * f * d2B, vega, theta, f * vanna, volga)
        for k, v in zip(QUANTITIES, vals):
            out[k][i] = v
    return out


def natural_scales(c) -> dict[str, np.ndarray]:
    """The size of each quantity's terms (value in USD, ...): absolute floors are 1e-12 of these, so a
    Greek that crosses 0 (vanna, volga), a theta that is a small difference of two large prices, or a
    QuantLib N(x) ~ 1 - eps (absolute error eps) is judged against the magnitude it is computed from."""
    S, F, K, T, vol = c["S"], c["F"], c["K"], c["T"], c["vol"]
    to_usd = np.where(c["inverse"], S / F, 1.0)  # USD per unit of F, per coin held
    dimless = np.where(c["inverse"], 1.0, F / S)
    usd = to_usd * F  # a forward's worth
    return {"value": to_usd * (F + K), "delta": dimless, "gamma": dimless / S, "vega": usd * np.sqrt(T),
            "theta": to_usd * (F + K), "vanna": dimless / vol, "volga": usd * np.sqrt(T) / vol}


# ----------------------------------------------------------------------------- exact reference
# Black-76 in 60-digit decimal arithmetic (no mpmath): the closed form evaluated exactly for the float64
# inputs, rounded once to float64. It is the reference wherever QuantLib's own error is not small
# against the tolerance (its normal CDF: see test_quantlib_normal_cdf_is_absolute_not_relative).

_CTX = decimal.Context(prec=60)
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


def exact_ncdf(x: Decimal) -> Decimal:
    """N(x) to ~50 significant digits: for |x| <= 6 the series N(x) = 1/2 + phi(x) sum_n x^(2n+1)/(2n+1)!!
    (60 digits absorb its cancellation: N(-6) ~ 1e-9), beyond it Laplace's continued fraction
    N(-a) = phi(a) / (a + 1/(a + 2/(a + 3/(a + ...)))) with 400 levels."""
    with decimal.localcontext(_CTX):
        if x > 0:
            return 1 - exact_ncdf(-x)
        phi = (-(x * x) / 2).exp() / (2 * _PI).sqrt()
        if x >= -6:
            term = total = x
            n = 0
            while abs(term) > abs(total) * Decimal("1e-58"):
                n += 1
                term = term * x * x / (2 * n + 1)
                total += term
            return Decimal(1) / 2 + phi * total
        a, cf = -x, -x
        for n in range(400, 0, -1):
            cf = a + n / cf
        return phi / cf


def exact_black(is_call: bool, F: float, K: float, T: float, vol: float) -> tuple[Decimal, Decimal]:
    """(B, dB/dF) of the undiscounted Black-76 price, exactly for these float64 inputs (intrinsic at T <= 0)."""
    with decimal.localcontext(_CTX):
        F, K, T, vol = (Decimal(float(x)) for x in (F, K, T, vol))
        if T <= 0:
            itm = (F > K) if is_call else (K > F)
            return (abs(F - K) if itm else Decimal(0)), Decimal(int(itm) * (1 if is_call else -1))
        sd = vol * T.sqrt()
        d1 = (F / K).ln() / sd + sd / 2
        d2 = d1 - sd
        if is_call:
            n1 = exact_ncdf(d1)
            return F * n1 - K * exact_ncdf(d2), n1
        n1 = exact_ncdf(-d1)
        return K * exact_ncdf(-d2) - F * n1, -n1


def exact_reference(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Value, delta and theta per coin (USD) from ``exact_black``, transformed as ``quantlib_reference``;
    theta's T - 1 day is the float64 difference every implementation here is given."""
    n = len(c["F"])
    out = {k: np.empty(n) for k in ("value", "delta", "theta", "forward_price")}
    with decimal.localcontext(_CTX):
        for i in range(n):
            S, F, K, T, vol, call, inv = (c[k][i] for k in ("S", "F", "K", "T", "vol", "is_call", "inverse"))
            B, dB = exact_black(bool(call), F, K, T, vol)
            B1, _ = exact_black(bool(call), F, K, max(T - DAY, 0.0), vol)
            f = Decimal(float(F)) / Decimal(float(S))
            vals = (B / f, dB, (B1 - B) / f) if inv else (B, f * dB, B1 - B)
            for k, v in zip(("value", "delta", "theta"), vals):
                out[k][i] = float(v)
            out["forward_price"][i] = float(B)
    return out


def term_magnitudes(c, T) -> np.ndarray:
    """M = F N(s d1) + K N(s d2) (s = +1 call, -1 put; F + K in the money at T <= 0) in USD per coin:
    the size of the two terms whose difference is the Black price at expiry T."""
    s = np.where(c["is_call"], 1.0, -1.0)
    sd = c["vol"] * np.sqrt(np.maximum(T, 0.0))
    live = sd > 0
    sd1 = np.where(live, sd, 1.0)
    d1 = np.log(c["F"] / c["K"]) / sd1 + 0.5 * sd1
    m = np.where(live, c["F"] * ndtr(s * d1) + c["K"] * ndtr(s * (d1 - sd1)),
                 np.where(s * (c["F"] - c["K"]) > 0, c["F"] + c["K"], 0.0))
    return np.where(c["inverse"], c["S"] / c["F"], 1.0) * m


def tolerance(quantity: str, c, ref: np.ndarray) -> np.ndarray:
    """1e-10 relative; theta (a one-day difference of two prices) adds THETA_C eps (M(T) + M(T - 1 day))."""
    tol = 1e-10 * np.abs(ref)
    if quantity == "theta":
        tol = tol + THETA_C * EPS * (term_magnitudes(c, c["T"]) + term_magnitudes(c, c["T"] - DAY))
    return tol


def quantlib_error_bound(quantity: str, c) -> np.ndarray:
    """What QuantLib's normal CDF alone can cost it (absolute, USD per coin): each N(d) is good to one ulp
    of 1, so B = F N(d1) - K N(d2) to 2 eps (F + K) with its rounding, and B' = N(d1) to 2 eps; an N(d) on
    the asymptotic branch (<= 1e-8) adds QL_ASYMPTOTIC_REL of its term."""

    def price_bound(T):
        sd = c["vol"] * np.sqrt(np.maximum(T, 0.0))
        live = sd > 0
        sd1 = np.where(live, sd, 1.0)
        d1 = np.log(c["F"] / c["K"]) / sd1 + 0.5 * sd1
        n1, n2 = ndtr(d1), ndtr(d1 - sd1)
        asym = (c["F"] * n1 * (n1 <= QL_ASYMPTOTIC_BELOW) + c["K"] * n2 * (n2 <= QL_ASYMPTOTIC_BELOW))
        return np.where(live, 2 * EPS * (c["F"] + c["K"]) + QL_ASYMPTOTIC_REL * asym, 0.0), n1

    to_usd = np.where(c["inverse"], c["S"] / c["F"], 1.0)
    b, n1 = price_bound(c["T"])
    if quantity == "value":
        return to_usd * b
    if quantity == "theta":
        return to_usd * (b + price_bound(c["T"] - DAY)[0])
    if quantity == "delta":
        fwd = 2 * EPS + QL_ASYMPTOTIC_REL * n1 * (n1 <= QL_ASYMPTOTIC_BELOW)
        return np.where(c["inverse"], 1.0, c["F"] / c["S"]) * fwd
    raise ValueError(quantity)


#: quantities whose QuantLib reference rests on N(d) (price, delta, theta), cross-checked with the exact value
EXACT = ("value", "delta", "theta")


@pytest.fixture(scope="module")
def quantlib_cases():
    c = random_option_cases()
    book = make_rows(c["F"], c["K"], c["T"], c["vol"], c["is_call"], c["inverse"], S=c["S"])
    got = np_greeks(book, N_CASES)
    ref = quantlib_reference(c)
    exact = exact_reference(c)
    keep = exact["forward_price"] > NEGLIGIBLE * c["F"]
    # QuantLib is the reference where its own error against the exact value is under half the tolerance
    ql_off = {q: keep & (np.abs(ref[q] - exact[q]) > 0.5 * tolerance(q, c, exact[q])) for q in EXACT}
    return c, got, ref, exact, keep, ql_off


def test_exact_reference_is_exact():
    """The decimal reference: tabulated N(x), scipy's ndtr (relative, to ~2e-13 even at x = -37), the two
    branches of exact_ncdf agreeing where they meet, and QuantLib's price where its N is well conditioned."""
    with decimal.localcontext(_CTX):
        assert exact_ncdf(Decimal(0)) == Decimal("0.5")
        tab = {-1: "0.158655253931457051414767454367962077522087033273", -5: "2.866515718791939116737523329631e-7"}
        for x, v in tab.items():
            assert abs(exact_ncdf(Decimal(x)) / Decimal(v) - 1) < Decimal("1e-25")
        xs = np.linspace(-37.0, 8.0, 901)
        got = np.array([float(exact_ncdf(Decimal(float(x)))) for x in xs])
        np.testing.assert_allclose(got, ndtr(xs), rtol=1e-12, atol=0)  # scipy: ~2e-13 in the far tail
        a = Decimal("6.0000001")  # the continued fraction just past the series' range
        cf = a
        for n in range(400, 0, -1):
            cf = a + n / cf
        series = exact_ncdf(-Decimal(6))
        assert abs((-(a * a) / 2).exp() / (2 * _PI).sqrt() / cf / series - 1) < Decimal("1e-6")
    rs = np.random.RandomState(5)
    for _ in range(50):
        F, T, vol = rs.uniform(100, 1e5), rs.uniform(0.01, 2), rs.uniform(0.1, 1.5)
        K, call = F * math.exp(rs.uniform(-0.5, 0.5) * vol * math.sqrt(T)), bool(rs.rand() < 0.5)
        assert float(exact_black(call, F, K, T, vol)[0]) == pytest.approx(quantlib_price(call, F, K, T, vol),
                                                                            rel=1e-14)


def test_quantlib_normal_cdf_is_absolute_not_relative():
    """Why QuantLib is not the reference everywhere: its N(x) is good to one ulp of 1 in absolute terms,
    so relative to a small N it is far worse than 1e-10, and below 1e-8 its asymptotic series is off by
    up to ~1e-7 relative (QL_ASYMPTOTIC_REL bounds that)."""
    cdf = ql.CumulativeNormalDistribution()
    xs = np.linspace(-8.5, 8.5, 1701)
    q = np.array([cdf(float(x)) for x in xs])
    with decimal.localcontext(_CTX):
        e = np.array([float(exact_ncdf(Decimal(float(x)))) for x in xs])
    asym = q <= QL_ASYMPTOTIC_BELOW
    assert np.abs(q - e)[~asym].max() <= EPS
    rel = np.abs(q - e) / e
    assert rel[~asym].max() > 1e-10  # not a relative-1e-10 reference in the left tail
    assert 1e-8 < rel[asym].max() <= QL_ASYMPTOTIC_REL


def test_quantlib_cases_cover_the_ranges(quantlib_cases):
    c, _, _, _, keep, ql_off = quantlib_cases
    # price <= 1e-8 F (compared absolutely): a minority; exact value instead of QuantLib: fewer still
    assert keep.sum() >= 0.7 * N_CASES
    assert all(off.sum() <= 0.1 * keep.sum() for off in ql_off.values()), {q: int(v.sum()) for q, v in ql_off.items()}
    kc = {k: v[keep] for k, v in c.items()}
    assert kc["T"].min() < 2 * HOUR and kc["T"].max() > 1.9
    assert kc["vol"].min() < 0.06 and kc["vol"].max() > 3.8
    moneyness = kc["K"] / kc["F"]
    assert moneyness.min() < 0.1 and moneyness.max() > 10.0
    assert (kc["T"] < DAY).sum() > 50  # theta reaching past expiry: intrinsic minus price
    for call in (True, False):
        for inv in (True, False):
            assert ((kc["is_call"] == call) & (kc["inverse"] == inv)).sum() > 0.2 * keep.sum()


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_matches_quantlib(quantlib_cases, quantity):
    """Price and the six Greeks agree with QuantLib's BlackCalculator (vanna and volga: analytic Black
    formulas) to 1e-10 relative on every non-negligible case.

    Non-negligible: the forward price B > 1e-8 F (NEGLIGIBLE); cases below it, and every case as a floor,
    are compared absolutely, |pmjax - QuantLib| <= 1e-10 |QuantLib| + 1e-12 * (natural scale).

    Price, delta and theta rest on QuantLib's N(d), which is good to one ulp of 1 only in absolute terms
    (test_quantlib_normal_cdf_is_absolute_not_relative). Where QuantLib's error against the exact 60-digit
    value (``exact_reference``) exceeds half the tolerance, the exact value is the reference instead, and
    QuantLib's miss there must be within what its N explains (``quantlib_error_bound``); pmjax must also
    meet the tolerance against the exact value on every non-negligible case.

    Theta = B(T - 1 day) - B(T), a difference of two prices that can nearly cancel (short-dated in-the-money
    options: theta ~ 1e-8 of the price). Each Black price F N(d1) - K N(d2) is a difference of two terms
    each computed to a few eps relative (the rounding of F/K and its log, ndtr, the products), so a float64
    evaluation is good to c eps M, M = F N(d1) + K N(d2) the terms' magnitude (>= the price), and theta to
    c eps (M(T) + M(T - 1 day)). Tolerance: |err| <= 1e-10 |theta| + 4 eps (M(T) + M(T - 1 day)), c = 4
    (THETA_C; the worst case measured here needs c = 0.6).
    """
    c, got, ref, exact, keep, ql_off = quantlib_cases
    g, r = got[quantity], ref[quantity]
    assert np.all(np.isfinite(g))
    # every case, negligible ones included: the absolute floor
    err = np.abs(g - r)
    scale = natural_scales(c)[quantity]
    bad = np.flatnonzero(err > 1e-10 * np.abs(r) + 1e-12 * scale)
    assert bad.size == 0, (f"{bad.size} of {N_CASES} cases; worst: " + str({k: v[bad[:3]] for k, v in c.items()})
                           + f" pmjax {g[bad[:3]]} QuantLib {r[bad[:3]]}")
    # every non-negligible case: strictly within the tolerance of QuantLib (or of the exact value where
    # QuantLib is itself off)
    off = ql_off.get(quantity, np.zeros(N_CASES, bool))
    best = np.where(off, exact[quantity], r) if quantity in EXACT else r
    tol = tolerance(quantity, c, best)
    bad = np.flatnonzero(keep & (np.abs(g - best) > tol))
    assert bad.size == 0, (f"{bad.size} of {keep.sum()} non-negligible cases; worst rel "
                           f"{(np.abs(g - best) / np.abs(best))[bad].max():.3g}: "
                           + str({k: v[bad[:3]] for k, v in c.items()}) + f" pmjax {g[bad[:3]]} ref {best[bad[:3]]}")
    if quantity in EXACT:
        e = exact[quantity]
        bad = np.flatnonzero(keep & (np.abs(g - e) > tolerance(quantity, c, e)))
        assert bad.size == 0, f"{bad.size} cases off the exact value, e.g. pmjax {g[bad[:3]]} exact {e[bad[:3]]}"
        # where QuantLib is not the reference, its miss is what its normal CDF allows
        miss = np.abs(r - e)[off]
        assert np.all(miss <= quantlib_error_bound(quantity, c)[off]), miss.max()


def test_reference_greeks_match_finite_differences():
    """The QuantLib-to-pmjax transforms (module docstring) against central differences of QuantLib prices
    with spot and forward bumped together, so the reference is not taken on trust."""
    c = random_option_cases(seed=7, n=300)
    sd = c["vol"] * np.sqrt(c["T"])
    z = np.log(c["K"] / c["F"]) / sd
    sel = (np.abs(z) < 2.0) & (sd > 0.02)  # well-conditioned differences
    c = {k: v[sel] for k, v in c.items()}
    ref = quantlib_reference(c)

    def value(i, scale=1.0, dvol=0.0):
        S, F = c["S"][i] * scale, c["F"][i] * scale
        B = quantlib_price(bool(c["is_call"][i]), F, c["K"][i], c["T"][i], c["vol"][i] + dvol)
        return B / F * S if c["inverse"][i] else B

    assert sel.sum() > 50
    for i in range(sel.sum()):
        S = c["S"][i]
        h, hv = 1e-4, 1e-4
        up, mid, dn = value(i, 1 + h), value(i), value(i, 1 - h)
        fd = {
            "delta": (up - dn) / (2 * h * S),
            "gamma": (up - 2 * mid + dn) / (h * S) ** 2,
            "vega": (value(i, dvol=hv) - value(i, dvol=-hv)) / (2 * hv),
            "volga": (value(i, dvol=hv) - 2 * mid + value(i, dvol=-hv)) / hv**2,
            "vanna": (value(i, 1 + h, hv) - value(i, 1 + h, -hv) - value(i, 1 - h, hv) + value(i, 1 - h, -hv))
            / (4 * h * S * hv),
        }
        for k, v in fd.items():
            scale = natural_scales({kk: vv[i : i + 1] for kk, vv in c.items()})[k][0]
            assert v == pytest.approx(ref[k][i], rel=1e-4, abs=1e-6 * scale), (k, {kk: vv[i] for kk, vv in c.items()})


def test_futures_perpetuals_and_spot_closed_forms():
    rs = np.random.RandomState(3)
    n = 64
    S = rs.uniform(100.0, 100_000.0, n)
    T = rs.uniform(0.0, 2.0, n)
    F = S * np.exp(rs.uniform(-0.1, 0.3, n) * T)
    kind = np.tile([FUTURE, FUTURE, PERPETUAL, PERPETUAL, SPOT, SPOT, SPOT, SPOT], n // 8)
    inverse = np.tile([True, False], n // 2)
    F = np.where(kind == FUTURE, F, S)  # perpetual and spot: F = spot
    T = np.where(kind == FUTURE, T, 0.0)
    g = np_greeks(make_rows(F, T=T, S=S, kind=kind, inverse=inverse), n)
    is_future = kind != SPOT
    # a future is worth its P&L against today's forward: 0 today. Linear: F - F0 with F = f S, so dV/dS = f;
    # inverse: (1 - F0/F) S = S - F0/f, so dV/dS = 1. Spot: V = S.
    np.testing.assert_array_equal(g["value"], np.where(is_future, 0.0, S))
    np.testing.assert_allclose(g["delta"], np.where(is_future & ~inverse, F / S, 1.0), rtol=1e-14)
    for k in ("gamma", "vega", "theta", "vanna", "volga"):
        # gamma: d2/dS2 of (1 - F0/(f S)) S = 0 exactly in exact arithmetic; autodiff leaves rounding
        np.testing.assert_allclose(g[k] * np.where(k == "gamma", S, 1.0), 0.0, atol=1e-12, err_msg=k)
    # the scenario values: futures P&L per SPEC section 4
    scale = 1.17
    shock = Shock(jnp.asarray([scale, 1.0]), jnp.zeros(n), jnp.asarray(0.0), jnp.asarray(0.0))
    shock = Shock(shock.spot_scale, jnp.zeros(PADDED), shock.dt, shock.vol_floor)
    pnl = np.asarray(scenario_pnl_jit(make_rows(F, T=T, S=S, kind=kind, inverse=inverse),
                                      jax.tree_util.tree_map(lambda x: x[None], shock)))[0, :n]
    expected = np.where(~is_future, S * (scale - 1.0),
                        np.where(inverse, F * (1.0 / F - 1.0 / (scale * F)) * scale * S, (scale - 1.0) * F))
    np.testing.assert_allclose(pnl, expected, rtol=1e-13)


# ----------------------------------------------------------------------------- identities and limits

def test_put_call_parity():
    """Linear: C - P = F - K; inverse: C - P = (F - K) / F * S, over every maturity and vol."""
    c = random_option_cases(seed=11, n=2000)
    args = (c["F"], c["K"], c["T"], c["vol"])
    for inv in (False, True):
        calls = np_greeks(make_rows(*args, is_call=True, inverse=inv, S=c["S"]), len(c["F"]))
        puts = np_greeks(make_rows(*args, is_call=False, inverse=inv, S=c["S"]), len(c["F"]))
        fwd = c["F"] - c["K"]
        expected = fwd / c["F"] * c["S"] if inv else fwd
        scale = (c["F"] + c["K"]) * (c["S"] / c["F"] if inv else 1.0)
        np.testing.assert_allclose(calls["value"] - puts["value"], expected, rtol=0, atol=1e-13 * scale.max())
        np.testing.assert_allclose((calls["value"] - puts["value"]) / scale, expected / scale, rtol=0, atol=1e-14)
        # the derivatives of parity: delta differs by dV/dS of the forward, vega and gamma not at all
        # F = f S: linear d/dS (f S - K) = f; inverse d/dS [(f S - K) / (f S) * S] = d/dS (S - K / f) = 1
        d_fwd = np.ones_like(fwd) if inv else c["F"] / c["S"]
        np.testing.assert_allclose(calls["delta"] - puts["delta"], d_fwd, rtol=0, atol=1e-11)
        for k in ("gamma", "vega", "vanna", "volga"):
            sc = natural_scales({**c, "inverse": np.full(len(fwd), inv)})[k] + np.abs(calls[k])
            np.testing.assert_allclose((calls[k] - puts[k]) / sc, 0.0, atol=1e-11, err_msg=k)


def intrinsic(F, K, is_call):
    return np.maximum(np.where(is_call, F - K, K - F), 0.0)


@pytest.mark.parametrize("vol", [0.0, 1e-12])
def test_zero_vol_is_intrinsic(vol):
    F = np.repeat([80.0, 100.0, 125.0], 8)
    K = np.full_like(F, 100.0)
    T = np.tile([0.0, SECOND, HOUR, 1.0], 6)
    is_call = np.tile(np.repeat([True, False], 4), 3)
    for inv, S in ((False, F), (True, 0.97 * F)):
        g = np_greeks(make_rows(F, K, T, vol, is_call, inv, S=S), len(F))
        expected = intrinsic(F, K, is_call) * (S / F if inv else 1.0)
        # at the money, vol 1e-12 over a year leaves 0.4 F sd = 4e-11 of time value
        np.testing.assert_allclose(g["value"], expected, rtol=1e-15, atol=1e-10)
        for k in QUANTITIES:
            assert np.all(np.isfinite(g[k])), k


def test_zero_expiry_is_intrinsic():
    F = np.repeat(np.linspace(60.0, 140.0, 9), 2)
    K = np.full_like(F, 100.0)
    is_call = np.tile([True, False], 9)
    vol = 0.8
    for inv, S in ((False, F), (True, 1.03 * F)):
        f = S / F if inv else 1.0
        at_zero = np_greeks(make_rows(F, K, 0.0, vol, is_call, inv, S=S), len(F))
        np.testing.assert_array_equal(at_zero["value"], intrinsic(F, K, is_call) * f)
        # one second: time value at most the at-the-money 0.4 F vol sqrt(T)
        at_second = np_greeks(make_rows(F, K, SECOND, vol, is_call, inv, S=S), len(F))
        time_value = (at_second["value"] - at_zero["value"]) / f
        assert np.all(time_value >= -1e-12)
        assert np.all(time_value <= 0.4 * F * vol * math.sqrt(SECOND) + 1e-12)
        assert time_value[8] > 0.39 * 100.0 * vol * math.sqrt(SECOND)  # at the money (F = K): ~ 0.3989 F sd
        # away from the strike the second's time value is negligible (F 10% from K is 2000 sd away)
        np.testing.assert_allclose(time_value[np.abs(F - K) > 5.0], 0.0, atol=1e-12)
        # theta of an option with less than a day to run: intrinsic minus today's value
        np.testing.assert_allclose(at_second["theta"], at_zero["value"] - at_second["value"], rtol=0, atol=1e-12)


GRID_T = (0.0, 1e-12, HOUR)
GRID_VOL = (0.0, 1e-12, 0.5)


@pytest.mark.parametrize("inverse", [False, True])
def test_greeks_finite_at_expiry_and_zero_vol(inverse):
    T, vol, F, call = (np.array(x).ravel() for x in np.meshgrid(GRID_T, GRID_VOL, [90.0, 100.0, 110.0],
                                                                 [True, False], indexing="ij"))
    g = np_greeks(make_rows(F, 100.0, T, vol, call, inverse, S=0.98 * F), len(F))
    for k in QUANTITIES:
        assert np.all(np.isfinite(g[k])), (k, g[k])
    # delta stays N(d1) or N(d1) - 1 (linear: times F/S); gamma and vega non-negative
    assert np.all(np.abs(g["delta"]) <= (1.0 if inverse else 1.0 / 0.98) + 1e-12)
    assert np.all(g["gamma"] >= -1e-12) and np.all(g["vega"] >= -1e-12)


def test_black76_gradients_finite():
    """jax.grad (and the Hessian) of the kernel with respect to F, K, T and vol is finite, at T = 0 and
    vol = 0 exactly, at and away from the money."""
    T, vol, F, call = (jnp.asarray(np.array(x).ravel()) for x in np.meshgrid(
        GRID_T, GRID_VOL, [90.0, 100.0, 110.0], [True, False], indexing="ij"))
    K = jnp.full_like(F, 100.0)
    argnums = (0, 1, 2, 3)
    grads = jax.jit(jax.vmap(jax.grad(black76, argnums=argnums)))(F, K, T, vol, call)
    hess = jax.jit(jax.vmap(jax.hessian(black76, argnums=argnums)))(F, K, T, vol, call)
    for x in jax.tree_util.tree_leaves((grads, hess)):
        assert np.all(np.isfinite(np.asarray(x))), (grads, hess)
    # at expiry or zero vol the gradient is the intrinsic value's: dB/dF = 1 in the money, 0 out of it
    dead = np.asarray(T * vol * vol) == 0.0
    itm = np.asarray(jnp.where(call, F > K, F < K))
    sign = np.where(np.asarray(call), 1.0, -1.0)
    dF = np.asarray(grads[0])
    np.testing.assert_array_equal(dF[dead & itm], sign[dead & itm])
    np.testing.assert_array_equal(dF[dead & ~itm & (np.asarray(F) != 100.0)], 0.0)


def test_delta_at_the_money_tends_to_one_half():
    T = np.array([HOUR, 60 * SECOND, SECOND, 1e-12, 0.0])
    g = np_greeks(make_rows(np.full(5, 100.0), 100.0, T, 0.6, True), 5)
    sd = 0.6 * np.sqrt(T)
    np.testing.assert_allclose(g["delta"], ndtr(0.5 * sd), rtol=1e-12)  # N(d1) with d1 = sd / 2
    assert np.all(np.diff(g["delta"]) <= 0.0) and abs(g["delta"][-1] - 0.5) < 1e-12
    assert g["delta"][0] - 0.5 < 0.002


@pytest.mark.parametrize("inverse", [False, True])
def test_delta_continuous_in_the_forward(inverse):
    """An hour before expiry, delta moves smoothly with F: each step's change is the integral of gamma."""
    T, vol, K = HOUR, 0.5, 100.0
    sd = vol * math.sqrt(T)
    F = K * np.exp(np.linspace(-6 * sd, 6 * sd, 2001))  # step sd/167 across the kink
    g = np_greeks(make_rows(F, K, T, vol, True, inverse), len(F))
    dd = np.diff(g["delta"])
    trapezoid = 0.5 * (g["gamma"][1:] + g["gamma"][:-1]) * np.diff(F)
    np.testing.assert_allclose(dd, trapezoid, rtol=1e-4, atol=1e-9)
    assert dd.max() < 0.01  # no jump anywhere


def test_float32_end_to_end():
    """float32 books stay float32 through values, Greeks and scenarios, and agree with float64 to ~1e-4."""
    rs = np.random.RandomState(5)
    n = 512
    S = rs.uniform(1_000.0, 100_000.0, n)
    T = np.exp(rs.uniform(np.log(7 / 365), np.log(1.0), n))
    F = S * np.exp(0.05 * T)
    vol = rs.uniform(0.2, 1.5, n)
    K = F * np.exp(rs.uniform(-1.5, 1.5, n) * vol * np.sqrt(T))
    call, inv = rs.rand(n) < 0.5, rs.rand(n) < 0.5
    b32 = make_rows(F, K, T, vol, call, inv, S=S, dtype=jnp.float32)
    b64 = make_rows(F, K, T, vol, call, inv, S=S)
    g32, g64 = unit_greeks_jit(b32), np_greeks(b64, n)
    for k, v in g32.items():
        assert v.dtype == jnp.float32, k
    g32 = {k: v[:n] for k, v in g32.items()}
    scales = natural_scales(dict(S=S, F=F, K=K, T=T, vol=vol, inverse=inv))
    for k in QUANTITIES:
        got = np.asarray(g32[k], dtype=np.float64)
        # theta is a difference of two prices: float32's price rounding (~1e-7 F) is its floor
        floor = 1e-6 * scales[k] if k != "theta" else 2e-6 * scales[k]
        if k in ("value", "delta"):
            np.testing.assert_allclose(got, g64[k], rtol=1e-4, atol=0, err_msg=k)
        else:
            np.testing.assert_array_less(np.abs(got - g64[k]), 1e-4 * np.abs(g64[k]) + floor, err_msg=k)
    shocks = Shock(jnp.asarray([[0.8, 1.0], [1.2, 1.0]], jnp.float32), jnp.zeros((2, PADDED), jnp.float32),
                   jnp.asarray([DAY, 0.0], jnp.float32), jnp.zeros(2, jnp.float32))
    pnl32 = scenario_pnl_jit(b32, shocks)
    assert pnl32.dtype == jnp.float32
    shocks64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), shocks)
    pnl64 = np.asarray(scenario_pnl_jit(b64, shocks64))[:, :n]
    pnl32 = pnl32[:, :n]
    np.testing.assert_array_less(np.abs(np.asarray(pnl32, np.float64) - pnl64), 1e-4 * np.abs(pnl64) + 1e-6 * F)


# ----------------------------------------------------------------------------- margin currency

def spot_shocks(scales) -> Shock:
    """Scenarios moving BTC by ``scales`` (ETH along another path), no vol move, no time."""
    scales = np.asarray(scales, dtype=np.float64)
    s = len(scales)
    return Shock(jnp.asarray(np.stack([scales, np.linspace(0.7, 1.3, s)], axis=1)), jnp.zeros((s, PADDED)),
                 jnp.zeros(s), jnp.zeros(s))


def test_coin_in_coin_margined_book_has_no_pnl():
    """Holding BTC in a BTC-margined book: its value is the quantity of coins in every spot scenario."""
    scales = np.linspace(0.3, 3.0, 28)
    q = np.array([2.5, -1.0])
    book = make_rows(np.array([50_000.0, 50_000.0]), kind=SPOT, quantity=q, margin_coin=0)
    pnl = np.asarray(scenario_pnl_jit(book, spot_shocks(scales)))
    np.testing.assert_allclose(pnl, 0.0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(position_values_jit(book, no_shock(book)))[:2], q, rtol=1e-15)
    # the same coin in a USD book gains q S (scale - 1)
    usd = np.asarray(scenario_pnl_jit(make_rows(np.array([50_000.0, 50_000.0]), kind=SPOT, quantity=q),
                                      spot_shocks(scales)))
    np.testing.assert_allclose(usd[:, :2], np.outer(scales - 1.0, q) * 50_000.0, rtol=1e-13)
    assert np.all(usd[:, 2:] == 0.0)  # padding rows add exactly nothing


@pytest.mark.parametrize("margin_coin", [0, -1])
def test_inverse_future_coin_pnl(margin_coin):
    """Inverse future: coin P&L q F (1/F - 1/F'), F' = F * scale; in USD that coin amount times S'."""
    S, F, q = 50_000.0, 51_234.5, np.array([3.0, -0.7])
    scales = np.linspace(0.5, 1.8, 14)
    book = make_rows(np.array([F, F]), T=0.25, S=S, kind=FUTURE, inverse=True, quantity=q, margin_coin=margin_coin)
    pnl = np.asarray(scenario_pnl_jit(book, spot_shocks(scales)))
    coins = np.outer(F * (1.0 / F - 1.0 / (F * scales)), q)
    expected = coins if margin_coin == 0 else coins * (S * scales)[:, None]
    np.testing.assert_allclose(pnl[:, :2], expected, rtol=1e-13, atol=1e-13 * np.abs(q).max() * S ** (margin_coin < 0))
    assert np.all(pnl[:, 2:] == 0.0)


def test_coin_margin_values_in_the_scenario_coin_price():
    """An ETH option in a BTC-margined book is worth its USD value over the scenario's BTC price."""
    btc, eth = 50_000.0, 2_500.0
    F, K = np.array([2_550.0, 2_550.0]), np.array([2_400.0, 2_800.0])
    args = dict(K=K, T=0.3, vol=0.7, is_call=np.array([True, False]), S=eth, underlying=1,
                underlying_spot=(btc, eth), quantity=np.array([1.5, -2.0]))
    in_btc, in_usd = make_rows(F, margin_coin=0, **args), make_rows(F, margin_coin=-1, **args)
    vol_shift = np.zeros(PADDED)
    vol_shift[:2] = [0.05, -0.02]
    shock = Shock(jnp.asarray([0.8, 1.25]), jnp.asarray(vol_shift), jnp.asarray(DAY), jnp.asarray(0.0))
    v_btc = np.asarray(position_values_jit(in_btc, shock))[:2]
    v_usd = np.asarray(position_values_jit(in_usd, shock))[:2]
    np.testing.assert_allclose(v_btc, v_usd / (0.8 * btc), rtol=1e-14)
    # and the USD value is q B76 at the shocked forward, vol and time
    expected = args["quantity"] * np.asarray(black76(jnp.asarray(F * 1.25), jnp.asarray(K), 0.3 - DAY,
                                                     jnp.asarray([0.75, 0.68]), jnp.asarray(args["is_call"])))
    np.testing.assert_allclose(v_usd, expected, rtol=1e-14)


def test_value_and_delta_alone_equal_the_full_greeks():
    """``unit_value_delta`` (the position table's) and ``option_prices`` (rules' marks) give what the full Greeks
    give: the same operations, without tracing the second-order ones."""
    import pmjax
    from pmjax.bench.books import random_account_books
    from pmjax.core.greeks import option_prices, price_instruments
    from pmjax.core.kernel import unit_value_delta_jit

    books = random_account_books(4, 40, seed=3)
    for a in range(4):
        book = jax.tree_util.tree_map(lambda x: x[a], books)
        full, light = unit_greeks_jit(book), unit_value_delta_jit(book)
        for k in ("value", "delta"):
            np.testing.assert_allclose(np.asarray(light[k]), np.asarray(full[k]), rtol=1e-15, atol=1e-12)
    market = pmjax.load_market()
    options = [pmjax.parse_instrument(n) for n in ("BTC-27MAR26-90000-C", "BTC-27MAR26-90000-P", "ETH-27MAR26-2500-P",
                                                   "BTC_USDC-27MAR26-100000-C", "ETH-3JAN26-3000-C")]
    want = [r["price_usd"] for r in price_instruments(options, market)]
    np.testing.assert_allclose(option_prices(options, market), want, rtol=1e-15)
