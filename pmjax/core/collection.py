"""Python's cyclic garbage collector paused around allocation-heavy work."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def collection_paused():
    """Cyclic garbage collection off for the block (and back on after, if it was on). Loading and pairing a
    big book allocate hundreds of thousands of small objects, none in cycles (reference counting frees them),
    and every collection they trigger walks every object alive, JAX's included: at 5,000 positions that is a
    sixth of ``pmjax margin``'s time. Cycles made inside the block are collected after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
