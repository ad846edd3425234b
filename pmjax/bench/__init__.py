"""``pmjax bench``: pmjax's kernels timed next to numpy baselines of the same computations in one run.

``harness`` runs the rows and builds the document, ``rows`` times each row, ``baselines`` holds the numpy
baselines, ``books`` the synthetic books, ``format`` the text table, ``names`` the row names (light: the
command's parser reads them without importing JAX). The names below load on first access."""

from __future__ import annotations

import importlib

_EXPORTS = {"format_bench": "pmjax.bench.format", "run_bench": "pmjax.bench.harness",
            "use_all_cpu_cores": "pmjax.bench.harness"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pmjax.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
