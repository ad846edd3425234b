"""Floating-point precision: float64 needs JAX's x64 mode, which pmjax never switches on by itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_dtype(dtype) -> None:
    """Raise ``ValueError`` when ``dtype`` is float64 but JAX's x64 mode is off (arrays would silently be
    float32)."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 needs JAX's x64 mode: call jax.config.update('jax_enable_x64', True) "
                         "before using pmjax, or pass dtype=jnp.float32")
