"""The TIMS valuation points as a ``grids.Grid`` (docs/tims.md section 2).

OCC's TIMS methodology, as the customer portfolio-margin rules (FINRA Rule 4210(g), Cboe Rule 10.4) state it,
values every class group at ten equally spaced valuation points across +-the class's price range r: spot
moves of m_k = k r / 5, k = -5..-1, 1..5 (no zero point). ``tims_grid`` builds them per underlying, each
point optionally repeated under a list of absolute implied-vol shifts (a house stress; the rule's own
points keep vols unchanged: a single vol state 0), every scenario weighted 1.

Scenario order is price-major: scenario s = j v + i is price point j (0-based, from -r up to +r) under vol
shift i, the same index for every underlying, so the offsets between class groups of a product group pair
the same valuation point (``pmjax.measures.tims``). Like every ``Grid``, scenario s of underlying u moves
only u; time advances ``horizon_days``; vols are floored at ``vol_floor``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pmjax.core.units import DAY
from pmjax.scenarios.grids import VOL_FLOOR, Grid

#: the ten valuation points in price ranges: -5/5 .. -1/5, +1/5 .. +5/5 (the rule's ten equidistant points)
TIMS_PRICE_STEPS = np.array([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5], dtype=np.float64) / 5.0
N_TIMS_POINTS = 10


def tims_grid(price_range, vol_shifts=None, horizon_days=1.0, *, vol_floor=VOL_FLOOR, dtype=None) -> Grid:
    """TIMS's valuation points for per-underlying price ranges ``price_range`` (shape (u,), fractions of spot).

    ``vol_shifts``: None (one vol state, shift 0), a list (v,) of absolute vol shifts shared by every
    underlying, or a (u, v) array (one list per underlying). The grid has s = 10 v scenarios per underlying:
    price_move[u, j v + i] = TIMS_PRICE_STEPS[j] * price_range[u], vol_shift[u, j v + i] = vol_shifts[u, i],
    weight 1, dt = horizon_days / 365.
    """
    r = jnp.asarray(price_range, dtype)
    dtype = r.dtype
    if r.ndim != 1:
        raise ValueError(f"price_range must have shape (u,), got {r.shape}")
    n_und = r.shape[0]
    v = jnp.zeros((n_und, 1), dtype) if vol_shifts is None else jnp.asarray(vol_shifts, dtype)
    if v.ndim == 1:
        v = jnp.broadcast_to(v[None, :], (n_und, v.shape[0]))
    if v.ndim != 2 or v.shape[0] != n_und or v.shape[1] < 1:
        raise ValueError(f"vol_shifts must be a list (v,) or shape ({n_und}, v) with v >= 1, got {v.shape}")
    n_vol = v.shape[1]
    steps = jnp.asarray(np.repeat(TIMS_PRICE_STEPS, n_vol), dtype)  # (s,), price-major
    price_move = r[:, None] * steps[None, :]
    vol_shift = jnp.tile(v, (1, N_TIMS_POINTS))  # (u, s): vol shift i repeats for every price point
    return Grid(price_move=price_move, vol_shift=vol_shift, weight=jnp.ones_like(price_move),
                dt=jnp.asarray(horizon_days, dtype) * DAY, vol_floor=jnp.asarray(vol_floor, dtype))


__all__ = ["N_TIMS_POINTS", "TIMS_PRICE_STEPS", "tims_grid"]
