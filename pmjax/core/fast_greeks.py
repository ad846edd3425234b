"""Closed-form value and Greeks of one coin of each position: the numbers of ``kernel.unit_greeks`` (same
definitions, units and conventions) without automatic differentiation, for throughput.

``kernel.unit_greeks`` takes delta, gamma, vanna and volga as gradients (and gradients of gradients) of the
general valuation ``kernel.unit_value_usd``. That keeps one valuation for every instrument kind, but on a
CPU XLA compiles it to about 22 fusions whose intermediates go through memory, and evaluates every kind's
branch under each reverse pass. Here the same derivatives are written out:

- options (Black-76, undiscounted; F forward, K strike, T years, sigma vol, N the normal CDF, phi its
  density, sd = sigma sqrt T, d1 = ln(F/K)/sd + sd/2, d2 = d1 - sd, s = +1 call / -1 put,
  r = S/F for an inverse option (coin premium B76/F worth S each; today's S/F, as in the kernel), else 1):

  ========  ==========================================================  =====================
  value     s (F N(s d1) - K N(s d2)) r                                 USD
  delta     s N(s d1) F r / S                                           coins (spot and every
                                                                        forward move together)
  gamma     phi(d1) F r / (sd S^2)                                      per USD
  vega      F phi(d1) (sd / sigma) r   (= F phi(d1) sqrt T r)           per 1.00 vol
  theta     value(T - 1 day, clipped at 0) - value(T)                   per day (one-day repricing
                                                                        at fixed forward and vol)
  vanna     -F phi(d1) d2 r / (sigma S)                                 per USD per 1.00 vol
  volga     vega d1 d2 / sigma                                          per 1.00 vol squared
  ========  ==========================================================  =====================

  When sigma^2 T <= eps^2 (expiry, or zero vol) the value is intrinsic, max(s (F - K), 0) r, delta the
  slope of the intrinsic value as JAX differentiates ``maximum`` (s, or s/2 exactly at the money, or 0)
  and gamma, vega, vanna, volga are 0, exactly as the kernel's ``where``. Vols are floored at 0 and T at
  0 as in ``unit_value_usd``;
- futures and perpetuals: value 0 (P&L against today's forward), delta F/S (linear) or 1 (inverse),
  the rest 0; spot: value S, delta 1; anything else 0.

Branch-free and NaN-safe at T -> 0 and sigma -> 0 with the double ``where``: every unsafe denominator is
replaced by 1 on the dead side before it is used, so no NaN is ever formed (and the function differentiates).

The normal CDF: in float64 ``jax.scipy.special.ndtr`` (the kernel's, so the two paths agree to 1e-12); in
float32 Hart's rational approximation 5666 (``ndtr_from_density``), which takes the density's exp, shared by
N(d1), N(d2) and the Greeks (exp(-d2^2/2) = exp(-d1^2/2) F/K), instead of ``ndtr``'s erf and erfc: on a
2-core CPU with 2 devices 1.06e8-1.23e8 options/s against 0.90e8-0.92e8 (4,194,304 options, interleaved
rounds; numpy 1.1e7) with the same float32 error, 3.0e-5 of each Greek's scale against the float64 kernel
(exact ndtr 2.96e-5, the autodiff kernel in float32 3.07e-5; Hart's own relative error, <= 3e-9 in the body
and 2.4e-7 at 14 sd, is below float32's resolution). ``cdf="exact"`` forces ``ndtr``.

``unit_greeks_fast`` evaluates these closed forms in blocks of ``block`` options (``lax.map``: each block's
intermediates stay in cache and the temporaries are bounded by the block, not by the book) on every local
device (``shard_map`` over a one-axis mesh 'options'), so a CPU with several forced host devices
(``--xla_force_host_platform_device_count``, what ``pmjax bench`` sets up) uses every core.
``tests/test_bench.py`` checks it against ``kernel.unit_greeks`` in float64 and float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book
from pmjax.core.units import DAY

try:
    from jax import shard_map
except ImportError:  # jax < 0.6
    from jax.experimental.shard_map import shard_map

#: the per-position fields of a ``Book`` the Greeks depend on (not quantity, not the margin currency)
FIELDS = ("kind", "inverse", "is_call", "strike", "expiry_years", "spot", "forward", "vol")
KEYS = ("value", "delta", "gamma", "vega", "theta", "vanna", "volga")
#: bytes of input per block: 16,384 float32 options (measured best on a 2-core x86 CPU), 8,192 float64
BLOCK_BYTES = 16_384 * 4
OPTIONS_AXIS = "options"
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: Hart (1968) 5666, as printed by West (2005): numerator and denominator, highest power first
_HART_P = (0.0352624965998911, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
           221.213596169931, 220.206867912376)
_HART_Q = (0.0883883476483184, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
           637.333633378831, 793.826512519948, 440.413735824752)


def ndtr_from_density(x, e):
    """N(x) given e = exp(-x^2 / 2), by Hart's rational approximation 5666 (as in West, "Better approximations
    to cumulative normal functions", 2005) over the whole line: N(-|x|) = e P(|x|) / Q(|x|). Relative error
    (evaluated in float64) <= 3e-9 for |x| < 7.07 and <= 2.4e-7 out to 14 sd: below float32's resolution
    in the body, so it is used for float32 only."""
    dt = jnp.result_type(x)
    y = jnp.abs(x)
    num = jnp.asarray(_HART_P[0], dt)
    for coef in _HART_P[1:]:
        num = num * y + jnp.asarray(coef, dt)
    den = jnp.asarray(_HART_Q[0], dt)
    for coef in _HART_Q[1:]:
        den = den * y + jnp.asarray(coef, dt)
    tail = e * num / den
    return jnp.where(x > 0, jnp.asarray(1.0, dt) - tail, tail)


def closed_form_greeks(kind, inverse, is_call, strike, expiry_years, spot, forward, vol, *,
                       cdf: str = "auto") -> dict:
    """Value and Greeks of one coin of each position (elementwise, any shape), USD: the dict of
    ``kernel.unit_greeks`` (value, delta, gamma, vega, theta, vanna, volga) by the closed forms above.

    ``cdf``: "exact" (``jax.scipy.special.ndtr``), "hart" (``ndtr_from_density``, sharing the density's
    exp), or "auto": hart in float32, exact otherwise (see the module docstring)."""
    dt = jnp.result_type(forward)
    if cdf == "auto":
        cdf = "hart" if dt == jnp.float32 else "exact"
    if cdf not in ("exact", "hart"):
        raise ValueError(f"cdf must be auto, exact or hart, got {cdf!r}")
    c = lambda v: jnp.asarray(v, dt)  # noqa: E731
    one, zero = c(1.0), c(0.0)
    tiny = jnp.finfo(dt).eps ** 2
    is_opt = kind == OPTION
    S, F = spot, forward
    K = jnp.where(is_opt, strike, F)  # safe strike for rows that are not options
    T0 = jnp.maximum(expiry_years, zero)
    vol = jnp.maximum(vol, zero)
    sign = jnp.where(is_call, one, -one)
    fk = F / K
    kf = K / F
    x = jnp.log(fk)
    intrinsic = jnp.maximum(sign * (F - K), zero)

    def price(T):
        variance = vol * vol * T
        live = is_opt & (variance > tiny)
        sd = jnp.sqrt(jnp.where(live, variance, one))
        d1 = x / sd + c(0.5) * sd
        d2 = d1 - sd
        if cdf == "exact":
            e1 = jnp.exp(c(-0.5) * d1 * d1)
            n1, n2 = ndtr(sign * d1), ndtr(sign * d2)
        else:
            # one exp for both densities: exp(-d2^2/2) = exp(-d1^2/2) F/K; taken at the d nearer 0 and carried
            # to the other, so the one that matters never underflows first
            a1, a2 = d1 * d1, d2 * d2
            near1 = a1 <= a2
            e = jnp.exp(c(-0.5) * jnp.minimum(a1, a2))
            e1 = jnp.where(near1, e, e * kf)
            e2 = jnp.where(near1, e * fk, e)
            n1, n2 = ndtr_from_density(sign * d1, e1), ndtr_from_density(sign * d2, e2)
        p = sign * (F * n1 - K * n2)
        return jnp.where(live, p, intrinsic), live, sd, d1, d2, n1, e1

    p0, live, sd, d1, d2, n1, e1 = price(T0)
    p1 = price(jnp.maximum(T0 - c(DAY), zero))[0]
    ratio = jnp.where(inverse, S / F, one)
    Fr = F * ratio
    pdf = jnp.where(live, c(_INV_SQRT_2PI) * e1, zero)
    inv_vol = one / jnp.where(live, vol, one)
    inv_S = one / S
    # the slope of the intrinsic value as JAX differentiates maximum(sign (F - K), 0): half at the tie
    m = sign * (F - K)
    dead_slope = jnp.where(m > zero, sign, jnp.where(m == zero, c(0.5) * sign, zero))
    delta_f = jnp.where(live, sign * n1, dead_slope)
    vega = Fr * pdf * (sd * inv_vol)
    opt = {
        "value": p0 * ratio,
        "delta": delta_f * Fr * inv_S,
        "gamma": pdf / sd * Fr * inv_S * inv_S,
        "vega": vega,
        "theta": p1 * ratio - p0 * ratio,  # as the kernel: value one day on - value today
        "vanna": -Fr * pdf * d2 * inv_vol * inv_S,
        "volga": vega * d1 * d2 * inv_vol,
    }
    fut = (kind == FUTURE) | (kind == PERPETUAL)
    spot_row = kind == SPOT
    out = {}
    for k, v in opt.items():
        other = zero
        if k == "value":
            other = jnp.where(spot_row, S, zero)
        elif k == "delta":
            other = jnp.where(fut, jnp.where(inverse, one, F * inv_S), jnp.where(spot_row, one, zero))
        out[k] = jnp.where(is_opt, v, other)
    return out


def book_greeks(book: Book, cdf: str = "auto") -> dict:
    """``closed_form_greeks`` of a ``Book`` (any leading axes), unblocked: what ``unit_greeks_fast`` computes."""
    return closed_form_greeks(*(getattr(book, f) for f in FIELDS), cdf=cdf)


def default_block(dtype) -> int:
    """Options per block for ``dtype``: ``BLOCK_BYTES`` of one input field."""
    return max(256, BLOCK_BYTES // np.dtype(dtype).itemsize)


def _blocked(fields: dict, block: int, cdf: str = "auto") -> dict:
    """``closed_form_greeks`` over 1-D ``fields`` whose length is a multiple of ``block``, one block at a time."""
    n = fields["forward"].shape[0]
    if n <= block:
        return closed_form_greeks(**fields, cdf=cdf)
    r = {k: v.reshape(n // block, block) for k, v in fields.items()}
    out = jax.lax.map(lambda d: closed_form_greeks(**d, cdf=cdf), r)
    return {k: v.reshape(n) for k, v in out.items()}


def options_mesh(devices: Sequence | None = None) -> Mesh:
    """A one-axis mesh ('options') over ``devices`` (default: every local device)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devices), (OPTIONS_AXIS,))


@functools.lru_cache(maxsize=32)
def _compiled(devices: tuple, block: int, n: int, padded: int, cdf: str = "auto"):
    """The jitted function of 1-D fields of length ``n``: pad to ``padded`` (edge rows), split over
    ``devices``, blocks of ``block`` on each, and drop the padding."""
    def per_device(fields):
        return _blocked(fields, block, cdf)

    if len(devices) > 1:
        spec = PartitionSpec(OPTIONS_AXIS)
        per_device = shard_map(per_device, mesh=options_mesh(devices), in_specs=(spec,), out_specs=spec)

    def run(fields):
        if padded > n:
            fields = {k: jnp.pad(v, (0, padded - n), mode="edge") for k, v in fields.items()}
        out = per_device(fields)
        return {k: v[:n] for k, v in out.items()} if padded > n else out

    return jax.jit(run)


def block_layout(n: int, n_dev: int, block: int) -> tuple[int, int]:
    """(block, padded length): blocks of at most ``block`` options, the same count on each of ``n_dev``
    devices; small books take one block per device (rounded up to 8 rows)."""
    per_dev = -(-n // n_dev)
    if per_dev <= block:
        block = max(8, -(-per_dev // 8) * 8)
    blocks = -(-per_dev // block)
    return block, n_dev * blocks * block


def unit_greeks_fast(book: Book, *, block: int | None = None, devices: Sequence | None = None,
                     cdf: str = "auto") -> dict:
    """Value and Greeks of one coin of each position of ``book`` (``kernel.unit_greeks``'s dict, same units),
    by closed forms, in blocks of ``block`` options (default ``default_block``) on every one of ``devices``
    (default: all local devices). Arrays of any leading shape; results have the book's shape. ``cdf``: as
    ``closed_form_greeks``."""
    fields = {f: jnp.asarray(getattr(book, f)) if not isinstance(getattr(book, f), jax.Array) else getattr(book, f)
              for f in FIELDS}
    shape = fields["forward"].shape
    n = int(np.prod(shape)) if shape else 1
    devices = tuple(devices) if devices is not None else tuple(jax.local_devices())
    block = default_block(fields["forward"].dtype) if block is None else int(block)
    block, padded = block_layout(n, len(devices), block)
    fn = _compiled(devices, block, n, padded, cdf)
    out = fn({k: v.reshape(n) for k, v in fields.items()})
    return {k: v.reshape(shape) for k, v in out.items()} if len(shape) != 1 else out


def place_options(book: Book, devices: Sequence | None = None) -> Book:
    """``book``'s per-position arrays split over ``devices`` (default all local devices) as
    ``unit_greeks_fast`` splits them, so a call moves no data between devices (the length must divide)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    mesh = options_mesh(devices)
    n = book.forward.shape[0]
    split = NamedSharding(mesh, PartitionSpec(OPTIONS_AXIS)) if n % len(devices) == 0 else \
        NamedSharding(mesh, PartitionSpec())
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, split if np.ndim(x) == 1 and np.shape(x)[0] == n
                                                           else whole), book)


__all__ = ["BLOCK_BYTES", "FIELDS", "KEYS", "book_greeks", "closed_form_greeks", "default_block",
           "ndtr_from_density", "options_mesh", "place_options", "unit_greeks_fast"]
