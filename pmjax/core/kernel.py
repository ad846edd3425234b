"""The valuation kernel: every position of a book under a market shock (SPEC section 4).

All functions are pure, branch-free and elementwise over positions, so they jit, vmap over
scenarios and accounts, and differentiate. NaN-safety at T -> 0 and vol -> 0 uses the double
``where``: the unsafe branch is fed a harmless value so neither it nor its gradient is NaN.
Formulas: docs/methodology.md section 3 (valuation) and section 4 (Greeks).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jaxtyping import Array, Float

from pmjax.core.book import FUTURE, OPTION, PERPETUAL, SPOT, Book
from pmjax.core.units import DAY


def black76(F, K, T, vol, is_call):
    """Undiscounted Black-76 price (units of F and K); intrinsic value when vol^2 T is 0."""
    variance = vol * vol * T
    tiny = jnp.finfo(jnp.result_type(variance)).eps ** 2
    live = variance > tiny
    sd = jnp.sqrt(jnp.where(live, variance, 1.0))
    d1 = jnp.log(F / K) / sd + 0.5 * sd
    d2 = d1 - sd
    sign = jnp.where(is_call, 1.0, -1.0)
    price = sign * (F * ndtr(sign * d1) - K * ndtr(sign * d2))
    return jnp.where(live, price, jnp.maximum(sign * (F - K), 0.0))


class Shock(eqx.Module):
    """A market scenario: spot and every forward of underlying u scale by ``spot_scale[u]``; each
    position's implied vol becomes max(vol + vol_shift, vol_floor); time advances ``dt`` years."""

    spot_scale: Float[Array, "*s u"]  # leading axes: a batch of scenarios (or accounts)
    vol_shift: Float[Array, "*s n"]
    dt: Float[Array, "*sd"]  # years
    vol_floor: Float[Array, "*sf"]


def no_shock(book: Book) -> Shock:
    """Today: no move, no time."""
    z = jnp.zeros((), book.quantity.dtype)
    return Shock(jnp.ones_like(book.underlying_spot), jnp.zeros_like(book.quantity), z, z)


def futures_pnl_usd(inverse, entry_forward, forward, spot):
    """USD P&L of one coin long a future or perpetual as its forward moves from ``entry_forward`` to
    ``forward``: linear F - F0; inverse the coin P&L F0 (1/F0 - 1/F) valued at ``spot``, (1 - F0/F) S."""
    return jnp.where(inverse, (1.0 - entry_forward / forward) * spot, forward - entry_forward)


def unit_value_usd(book: Book, scale, vol_shift, dt, vol_floor=0.0):
    """USD value of one coin of each position (futures: P&L against today's forward).

    ``scale``, ``vol_shift`` are per position; ``dt`` in years.
    """
    S = book.spot * scale
    F = book.forward * scale
    T = jnp.maximum(book.expiry_years - dt, 0.0)
    vol = jnp.maximum(book.vol + vol_shift, vol_floor)
    option = black76(F, book.strike, T, vol, book.is_call)
    # inverse: coin premium B76/F, worth S each. S/F is the same in every scenario (spot and forwards
    # scale together), so take it from today's book: differentiating B76/F * S term by term would leave
    # cancelling O(B76) terms that swamp deep in-the-money gammas (1e-8 relative)
    option = jnp.where(book.inverse, option * (book.spot / book.forward), option)
    # inverse future/perpetual: coin P&L F0 (1/F0 - 1/F) valued at the scenario's spot
    future = futures_pnl_usd(book.inverse, book.forward, F, S)
    k = book.kind
    return jnp.where(k == OPTION, option, jnp.where((k == FUTURE) | (k == PERPETUAL), future,
                                                    jnp.where(k == SPOT, S, 0.0)))


def position_values(book: Book, shock: Shock) -> Float[Array, " n"]:
    """Value of each position (quantity included) in the book's margin currency under ``shock``.

    A coin margin currency values every position at the same scenario's coin price.
    """
    scale = shock.spot_scale[book.underlying]
    usd = book.quantity * unit_value_usd(book, scale, shock.vol_shift, shock.dt, shock.vol_floor)
    return _in_margin_currency(book, usd, shock.spot_scale[jnp.maximum(book.margin_coin, 0)])


def own_underlying_values(book: Book, scale, vol_shift, dt, vol_floor=0.0) -> Float[Array, " n"]:
    """Value of each position (margin currency) when its own underlying's spot and forwards scale by
    ``scale[p]`` and no other underlying moves: the margin coin moves with position p only when it is
    p's underlying. Equals ``position_values`` under the shock that moves only p's underlying, at half
    the work of valuing every position under every underlying's move (SPAN scans one underlying at a time).
    """
    usd = book.quantity * unit_value_usd(book, scale, vol_shift, dt, vol_floor)
    coin_scale = jnp.where(book.underlying == jnp.maximum(book.margin_coin, 0), scale, jnp.ones_like(scale))
    return _in_margin_currency(book, usd, coin_scale)


def _in_margin_currency(book: Book, usd, coin_scale):
    """USD values in the book's margin currency, the margin coin's price scaled by ``coin_scale``."""
    coin_price = book.underlying_spot[jnp.maximum(book.margin_coin, 0)] * coin_scale
    return jnp.where(book.margin_coin >= 0, usd / coin_price, usd)


def position_pnl(book: Book, shock: Shock) -> Float[Array, " n"]:
    """Scenario value minus today's value, per position, in margin currency (gain positive)."""
    return position_values(book, shock) - position_values(book, no_shock(book))


def scenario_pnl(book: Book, shocks: Shock) -> Float[Array, "s n"]:
    """P&L matrix: scenarios (leading axis of every field of ``shocks``) x positions."""
    return jax.vmap(position_pnl, in_axes=(None, 0))(book, shocks)


GREEKS = ("delta", "gamma", "vega", "theta", "vanna", "volga")


def unit_greeks(book: Book) -> dict[str, Float[Array, "*batch n"]]:
    """Greeks of one coin of each position, USD: delta (coins), gamma (per USD), vega (per 1.00 vol),
    theta (per day), vanna (per USD per 1.00 vol), volga (per 1.00 vol squared).

    Delta and gamma move spot and every forward in proportion; theta moves time one day at fixed
    forwards and vols. Values are separable across positions, so the gradient of their sum is the
    vector of per-position derivatives (and its gradient the Hessian's diagonal).
    """
    one = jnp.ones_like(book.quantity)
    zero = jnp.zeros_like(book.quantity)
    total = lambda s, v: unit_value_usd(book, s, v, 0.0).sum()  # noqa: E731
    d_scale = jax.grad(total, 0)
    d_vol = jax.grad(total, 1)
    S = book.spot
    value = unit_value_usd(book, one, zero, 0.0)
    return {
        "value": value,
        "delta": d_scale(one, zero) / S,
        "gamma": jax.grad(lambda s, v: d_scale(s, v).sum(), 0)(one, zero) / (S * S),
        "vega": d_vol(one, zero),
        "theta": unit_value_usd(book, one, zero, DAY) - value,
        "vanna": jax.grad(lambda s, v: d_vol(s, v).sum(), 0)(one, zero) / S,
        "volga": jax.grad(lambda s, v: d_vol(s, v).sum(), 1)(one, zero),
    }


# jitted entry points; a Book of the same bucket size and dtype reuses the compiled code
position_values_jit = jax.jit(position_values)
scenario_pnl_jit = jax.jit(scenario_pnl)
unit_greeks_jit = jax.jit(unit_greeks)


def unit_value_delta(book: Book) -> dict[str, Float[Array, "*batch n"]]:
    """``value`` and ``delta`` of ``unit_greeks`` alone (the same operations): what a position table needs,
    without tracing the second-order Greeks (about a second of every process's start on a big book)."""
    one = jnp.ones_like(book.quantity)
    zero = jnp.zeros_like(book.quantity)
    total = lambda s, v: unit_value_usd(book, s, v, 0.0).sum()  # noqa: E731
    return {"value": unit_value_usd(book, one, zero, 0.0), "delta": jax.grad(total, 0)(one, zero) / book.spot}


unit_value_delta_jit = jax.jit(unit_value_delta)
