"""Coverage statistics of a range's exceedances: exact binomial Kupiec tests, Christoffersen's independence
test (chi-square or Monte Carlo), conditional coverage, Basel traffic light, exceedance sizes.

numpy and ``math`` only (scipy is not a run-time dependency): binomial probabilities are summed in log
space from ``math.lgamma``, the chi-square tails are closed forms (1 and 2 degrees of freedom).

Conventions (docs/methodology.md section 10.4): x exceedances in n test days, target rate p = 1 - a.

- ``kupiec_p`` is the exact one-sided coverage test P(X >= x), X ~ Binomial(n, p): too many exceedances
  is the failure. Over-coverage is a cost, not a failure: ``over_coverage_p`` = P(X <= x) says how
  unlikely so few exceedances are, ``mean_range`` what the range costs.
- ``kupiec_two_sided_p`` is the exact distribution of Kupiec's LR: the binomial probability of every count
  whose LR is at least the observed one. ``kupiec_asymptotic_p`` is the chi-square(1) tail of the same LR.
- ``christoffersen_p`` is null below 2 exceedances (no transition out of an exceedance can be observed
  twice: the test has nothing to compare); from 2 to ``MC_MAX_EXCEEDANCES`` it is a Monte Carlo p-value
  (the exceedance days placed at random among the test days, seeded), above it the chi-square(1) tail.
- ``conditional_coverage_p`` = chi-square(2) tail of LR_POF + LR_ind (null when Christoffersen is n/a).
- ``traffic_light``: green while P(X <= x) < 0.95, yellow while < 0.9999, else red (Basel's zones,
  at this sample's n and p).
"""

from __future__ import annotations

import math

import numpy as np

#: Christoffersen by Monte Carlo up to this many exceedances (the chi-square approximation above)
MC_MAX_EXCEEDANCES = 20
MC_SIMULATIONS = 9999
MC_SEED = 20260101
#: Basel traffic-light zones: cumulative binomial probability bounds of green and yellow
GREEN_BELOW = 0.95
YELLOW_BELOW = 0.9999


def chi2_1_sf(x: float) -> float:
    """P(X > x) for X chi-square with 1 degree of freedom: erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(max(float(x), 0.0) / 2.0))


def chi2_2_sf(x: float) -> float:
    """P(X > x) for X chi-square with 2 degrees of freedom: exp(-x / 2)."""
    return math.exp(-max(float(x), 0.0) / 2.0)


def binom_logpmf(n: int, p: float) -> np.ndarray:
    """log P(X = k) for k = 0..n, X ~ Binomial(n, p), 0 < p < 1."""
    k = np.arange(n + 1)
    lg = np.array([math.lgamma(i + 1.0) for i in range(n + 1)])
    return lg[n] - lg - lg[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)


def _logsumexp(v: np.ndarray) -> float:
    if len(v) == 0:
        return -math.inf
    m = float(np.max(v))
    return m + math.log(float(np.sum(np.exp(v - m))))


def binom_upper_tail(x: int, n: int, p: float) -> float:
    """P(X >= x), X ~ Binomial(n, p)."""
    if x <= 0:
        return 1.0
    return min(1.0, math.exp(_logsumexp(binom_logpmf(n, p)[x:])))


def binom_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x), X ~ Binomial(n, p)."""
    if x >= n:
        return 1.0
    return min(1.0, math.exp(_logsumexp(binom_logpmf(n, p)[: x + 1])))


def _xlogy(x, y):
    """x log y elementwise with 0 log 0 = 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(y > 0, y, 1.0)))


def _loglik(failures, trials, p):
    return _xlogy(failures, p) + _xlogy(np.asarray(trials) - failures, 1.0 - np.asarray(p, np.float64))


def kupiec_lr_counts(x, n: int, p: float):
    """Kupiec's proportion-of-failures LR -2 log [L(p) / L(x / n)] (x may be an array of counts)."""
    x = np.asarray(x, np.float64)
    if n == 0:
        return np.zeros_like(x)
    return np.maximum(0.0, -2.0 * (_loglik(x, n, p) - _loglik(x, n, x / n)))


def kupiec_lr(hits, p: float) -> float:
    """Kupiec's LR of a 0/1 exceedance sequence."""
    hits = np.asarray(hits, dtype=bool)
    return float(kupiec_lr_counts(int(hits.sum()), len(hits), p))


def kupiec_exact_p(x: int, n: int, p: float) -> float:
    """Exact two-sided p-value of Kupiec's LR: P(LR(X) >= LR(x)), X ~ Binomial(n, p)."""
    if n == 0:
        return 1.0
    lr = kupiec_lr_counts(np.arange(n + 1), n, p)
    at = lr >= lr[x] - 1e-9 * max(1.0, float(lr[x]))
    return min(1.0, math.exp(_logsumexp(binom_logpmf(n, p)[at])))


def transition_counts(hits) -> tuple[int, int, int, int]:
    """(n00, n01, n10, n11): transitions between consecutive test days (1 = exceedance)."""
    h = np.asarray(hits, dtype=bool)
    a, b = h[:-1], h[1:]
    return (int(np.sum(~a & ~b)), int(np.sum(~a & b)), int(np.sum(a & ~b)), int(np.sum(a & b)))


def _christoffersen_from_counts(n00, n01, n10, n11):
    n00, n01, n10, n11 = (np.asarray(v, np.float64) for v in (n00, n01, n10, n11))
    tot = n00 + n01 + n10 + n11
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.where(tot > 0, (n01 + n11) / tot, 0.0)
        pi01 = np.where(n00 + n01 > 0, n01 / (n00 + n01), 0.0)
        pi11 = np.where(n10 + n11 > 0, n11 / (n10 + n11), 0.0)
    null = _loglik(n01 + n11, tot, pi)
    alt = _loglik(n01, n00 + n01, pi01) + _loglik(n11, n10 + n11, pi11)
    return np.maximum(0.0, -2.0 * (null - alt))


def christoffersen_lr(hits) -> float:
    """Christoffersen's independence LR: a first-order Markov chain of exceedances (pi01, pi11) against
    a constant rate pi; 0 when there are no transitions to test."""
    h = np.asarray(hits, dtype=bool)
    if len(h) < 2:
        return 0.0
    return float(_christoffersen_from_counts(*transition_counts(h)))


def christoffersen_mc_p(hits, *, simulations: int = MC_SIMULATIONS, seed: int = MC_SEED) -> float:
    """Monte Carlo p-value of Christoffersen's LR given the count: the x exceedance days placed uniformly at
    random among the n test days (their distribution under independence), (1 + #{LR_sim >= LR}) / (1 + N)."""
    h = np.asarray(hits, dtype=bool)
    n, x = len(h), int(h.sum())
    observed = christoffersen_lr(h)
    rng = np.random.default_rng(seed)
    pos = np.empty((simulations, x), np.int64)
    todo = np.arange(simulations)
    if x * x > n:  # many exceedances for few days: random permutations instead of rejection
        pos[:] = np.sort(np.argsort(rng.random((simulations, n)), axis=1)[:, :x], axis=1)
        todo = todo[:0]
    while len(todo):  # rows with distinct days, drawn by rejection (x is small against n)
        draw = np.sort(rng.integers(0, n, (len(todo), x)), axis=1)
        ok = np.all(np.diff(draw, axis=1) > 0, axis=1)
        pos[todo[ok]] = draw[ok]
        todo = todo[~ok]
    n11 = np.sum(np.diff(pos, axis=1) == 1, axis=1)
    ones_a = x - (pos[:, -1] == n - 1)  # exceedances among days 0..n-2
    ones_b = x - (pos[:, 0] == 0)  # among days 1..n-1
    n01, n10 = ones_b - n11, ones_a - n11
    n00 = (n - 1) - n01 - n10 - n11
    lr = _christoffersen_from_counts(n00, n01, n10, n11)
    return float((1 + np.sum(lr >= observed - 1e-9)) / (1 + simulations))


def traffic_light(x: int, n: int, p: float) -> str:
    """Basel zone of x exceedances in n days at rate p: cumulative probability P(X <= x) against 95%, 99.99%."""
    c = binom_cdf(x, n, p)
    return "green" if c < GREEN_BELOW else "yellow" if c < YELLOW_BELOW else "red"


def _size_stats(move, rng) -> dict:
    """Exceedance sizes: the shortfall |move| - range on exceedance days, and |move| / range."""
    move, rng = np.asarray(move, np.float64), np.asarray(rng, np.float64)
    over = np.abs(move) > rng
    short = np.abs(move[over]) - rng[over]
    ratio = np.abs(move[over]) / rng[over]
    return {"up_exceedances": int(np.sum(over & (move > 0))), "down_exceedances": int(np.sum(over & (move < 0))),
            "mean_excess": float(np.mean(short)) if len(short) else 0.0,
            "max_excess": float(np.max(short)) if len(short) else 0.0,
            "mean_excess_ratio": float(np.mean(ratio)) if len(ratio) else None,
            "mean_range": float(np.mean(rng)) if len(rng) else None}


def excess_size_p(ratios, reference, *, simulations: int = MC_SIMULATIONS, seed: int = MC_SEED) -> float | None:
    """One-sided permutation test that exceedance sizes (|move| / range) are larger than a reference sample's
    (the calibration period's exceedances): p = share of random splits of the pooled sizes whose mean
    difference is at least the observed one. None with fewer than 1 size on either side."""
    a, b = np.asarray(ratios, np.float64), np.asarray(reference, np.float64)
    if len(a) < 1 or len(b) < 1:
        return None
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    rng = np.random.default_rng(seed)
    keys = rng.random((simulations, len(pooled)))
    idx = np.argsort(keys, axis=1)
    sims = pooled[idx[:, : len(a)]].mean(axis=1) - pooled[idx[:, len(a):]].mean(axis=1)
    return float((1 + np.sum(sims >= observed - 1e-12)) / (1 + simulations))


def coverage_stats(hits, coverage: float, *, move=None, rng=None) -> dict:
    """Every statistic of an exceedance sequence (module docstring); ``move`` and ``rng`` (the signed move and
    the range of each test day) add up/down counts and exceedance sizes."""
    hits = np.asarray(hits, dtype=bool)
    p = 1.0 - coverage
    n, x = int(len(hits)), int(hits.sum())
    lr_pof = float(kupiec_lr_counts(x, n, p))
    out = {"days": n, "exceedances": x, "expected": float(p * n),
           "kupiec_p": binom_upper_tail(x, n, p) if n else 1.0,
           "kupiec_two_sided_p": kupiec_exact_p(x, n, p), "kupiec_asymptotic_p": chi2_1_sf(lr_pof),
           "over_coverage_p": binom_cdf(x, n, p) if n else 1.0}
    if x < 2:
        out.update(christoffersen_p=None, christoffersen_method=None, conditional_coverage_p=None,
                   christoffersen_na=f"{x} exceedance{'s' if x != 1 else ''}: independence needs at least 2")
    else:
        lr_ind = christoffersen_lr(hits)
        small = x <= MC_MAX_EXCEEDANCES
        out.update(christoffersen_p=christoffersen_mc_p(hits) if small else chi2_1_sf(lr_ind),
                   christoffersen_method="monte_carlo" if small else "chi2",
                   conditional_coverage_p=chi2_2_sf(lr_pof + lr_ind))
    out["traffic_light"] = traffic_light(x, n, p) if n else "green"
    if move is not None and rng is not None:
        out.update(_size_stats(move, rng))
    return out


def passes(stats: dict, level: float = 0.05) -> bool:
    """The acceptance rule: one-sided exact Kupiec p and Christoffersen p (when defined) at least ``level``."""
    c = stats.get("christoffersen_p")
    return stats["kupiec_p"] >= level and (c is None or c >= level)


__all__ = ["GREEN_BELOW", "MC_MAX_EXCEEDANCES", "MC_SEED", "MC_SIMULATIONS", "YELLOW_BELOW", "binom_cdf",
           "binom_logpmf", "binom_upper_tail", "chi2_1_sf", "chi2_2_sf", "christoffersen_lr", "christoffersen_mc_p",
           "coverage_stats", "excess_size_p", "kupiec_exact_p", "kupiec_lr", "kupiec_lr_counts", "passes",
           "traffic_light", "transition_counts"]
