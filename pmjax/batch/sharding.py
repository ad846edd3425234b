"""Accounts split over every local device, and chunk sizes chosen from the memory at hand.

Accounts are independent, so a batch of stacked books (every leaf with a leading accounts axis) is
padded to a multiple of the device count, placed with ``NamedSharding(mesh, PartitionSpec("accounts"))``
and run through the usual jitted, vmapped batch function (``vmapped(span_margin)``,
``vmapped(deribit_margin)``): the compiled code follows the data, each device computes its own slice of
accounts, and the parameters are replicated. Every account is computed by the same arithmetic as on one
device, so the results agree to the last bit or two (XLA compiles the per-device program separately;
``tests/test_sharding.py`` measures <= 1e-16 relative on 4 forced host devices and bounds it at 1e-14).
``stress.span_batch`` and ``pmjax stress`` take this path whenever there is more than one local device. Monte
Carlo paths are sharded the same way in ``pmjax.scenarios.montecarlo`` (a 'paths' mesh axis, through
``map_chunks``), and the closed-form Greeks in ``pmjax.core.fast_greeks`` (an 'options' axis).

Memory: ``memory_budget`` is a fraction of the memory available now (``/proc/meminfo`` MemAvailable on a
CPU, ``device.memory_stats()`` bytes_limit - bytes_in_use on an accelerator; host devices share the host's,
so each gets its share); ``span_chunk``, ``deribit_chunk``, ``stress_chunk`` and ``mc_chunk`` pick the device
count times the largest power of two per device whose estimated bytes (``span_chunk_bytes``,
``deribit_chunk_bytes``, ``stress_chunk_bytes``, ``mc_chunk_bytes``: arguments + outputs + XLA temporaries, from
per-row constants measured with ``Compiled.memory_analysis()``) stay under it. ``stress.span_batch``,
``stress.stress_pnl`` and ``pmjax stress`` take their chunks from these by default. Chunking never changes a
result. Multi-host: docs/scaling.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ACCOUNTS_AXIS = "accounts"
#: the share of the available memory one chunk may take (the rest: inputs on the host, other work)
DEFAULT_FRACTION = 0.25
#: bytes when nothing can be read (no /proc, no memory_stats): a conservative 2 GiB
FALLBACK_BYTES = 2 << 30

#: XLA's peak bytes (arguments + outputs + temporaries) per account-row of ``vmapped(span_margin)``, in units of
#: the float size, measured with ``Compiled.memory_analysis()`` on CPU (jax 0.10.2): 43 float64, 44 float32
#: (each position valued under its own underlying's 16 scenarios, 7 composite-delta points, the (16, n)
#: per-position risk array output); rounded up for other backends' fusion choices
SPAN_FLOATS_PER_ROW = 64
#: the same for one Monte Carlo path-row of ``mc_models.path_losses``: 1.01-1.08 measured (XLA fuses the whole
#: revaluation; one (paths, rows) P&L buffer remains); 4 leaves room for a backend that keeps a few
MC_FLOATS_PER_ROW = 4
#: the same for one account-row of ``vmapped(deribit_margin)``: 239-256 measured (float32 and float64, 8 to 32-row
#: books: the standard and extended scenario grids per position) plus a term growing with the book (the (n, n)
#: same-expiry matrices of the roll shock: 56 more at 128 rows, 440 at 512); ``deribit_chunk_bytes`` counts
#: ``DERIBIT_FLOATS_PER_ROW + rows`` floats per account-row
DERIBIT_FLOATS_PER_ROW = 320
#: one account-row of ``stress.stress_pnl``: 12-14 floats measured plus 1.1-1.6 per scenario (5 with one
#: scenario); counted as ``STRESS_FLOATS_PER_ROW + 2 x scenarios``
STRESS_FLOATS_PER_ROW = 16
#: fixed bytes per compiled call (parameters, keys, small buffers)
OVERHEAD_BYTES = 1 << 20


# ---------------------------------------------------------------- memory


def available_bytes(device=None) -> int:
    """Bytes of memory free for ``device`` now: an accelerator's bytes_limit - bytes_in_use, else the host's
    MemAvailable (``/proc/meminfo``), else free physical pages, else ``FALLBACK_BYTES``."""
    device = device if device is not None else jax.local_devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        except Exception:  # noqa: BLE001 - a backend without memory_stats: fall back to the host figure
            pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_BYTES


def memory_budget(fraction: float = DEFAULT_FRACTION, device=None) -> int:
    """Bytes one compiled chunk may use on ``device``: ``fraction`` of ``available_bytes``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return int(available_bytes(device) * fraction)


def _itemsize(dtype) -> int:
    return int(np.dtype(dtype).itemsize)


def span_chunk_bytes(accounts: int, rows: int, dtype) -> int:
    """Estimated peak bytes of one ``vmapped(span_margin)`` call on ``accounts`` books of ``rows`` rows."""
    return accounts * rows * _itemsize(dtype) * SPAN_FLOATS_PER_ROW + OVERHEAD_BYTES


def mc_chunk_bytes(paths: int, rows: int, dtype) -> int:
    """Estimated peak bytes of one Monte Carlo loss call on ``paths`` paths of a ``rows``-row book."""
    return paths * rows * _itemsize(dtype) * MC_FLOATS_PER_ROW + OVERHEAD_BYTES


def deribit_chunk_bytes(accounts: int, rows: int, dtype) -> int:
    """Estimated peak bytes of one ``vmapped(deribit_margin)`` call on ``accounts`` books of ``rows`` rows."""
    return accounts * rows * _itemsize(dtype) * (DERIBIT_FLOATS_PER_ROW + rows) + OVERHEAD_BYTES


def stress_chunk_bytes(accounts: int, rows: int, scenarios: int, dtype) -> int:
    """Estimated peak bytes of one ``stress.stress_pnl`` call (``scenarios`` joint shocks)."""
    return accounts * rows * _itemsize(dtype) * (STRESS_FLOATS_PER_ROW + 2 * scenarios) + OVERHEAD_BYTES


def _largest_chunk(bytes_of: Callable[[int], int], budget: int, n_devices: int, cap: int) -> int:
    """``n_devices`` x the largest power of two p with bytes_of(p) <= budget (p items per device) and
    n_devices x p <= cap; at least one item per device. Always a multiple of ``n_devices`` (a power of two
    when the device count is one)."""
    n_devices = max(1, int(n_devices))
    p = 1
    while (p * 2) * n_devices <= cap and bytes_of(p * 2) <= budget:
        p *= 2
    return p * n_devices


def _default_budget(n_devices: int) -> int:
    """``memory_budget()`` per device: host devices (CPU, also forced host devices) share one memory, so
    each gets its share of it; an accelerator's budget is its own."""
    budget = memory_budget()
    if jax.local_devices()[0].platform == "cpu":
        budget //= max(1, n_devices)
    return budget


def _chunk(bytes_of, budget, n_devices, cap) -> int:
    n_devices = n_devices or jax.local_device_count()
    budget = _default_budget(n_devices) if budget is None else budget
    return _largest_chunk(bytes_of, budget, n_devices, cap)


def span_chunk(rows: int, dtype, *, budget: int | None = None, n_devices: int | None = None,
               cap: int = 1 << 16) -> int:
    """Accounts per ``vmapped(span_margin)`` call for books of ``rows`` rows: ``n_devices`` (default every local
    device) times the largest power of two whose estimate ``span_chunk_bytes`` stays within ``budget`` per
    device (default: ``memory_budget()``, shared between host devices), at most ``cap``."""
    return _chunk(lambda a: span_chunk_bytes(a, rows, dtype), budget, n_devices, cap)


def deribit_chunk(rows: int, dtype, *, budget: int | None = None, n_devices: int | None = None,
                  cap: int = 1 << 16) -> int:
    """Accounts per ``vmapped(deribit_margin)`` call, as ``span_chunk`` with ``deribit_chunk_bytes``."""
    return _chunk(lambda a: deribit_chunk_bytes(a, rows, dtype), budget, n_devices, cap)


def stress_chunk(rows: int, scenarios: int, dtype, *, budget: int | None = None, n_devices: int | None = None,
                 cap: int = 1 << 16) -> int:
    """Accounts per ``stress.stress_pnl`` call, as ``span_chunk`` with ``stress_chunk_bytes``."""
    return _chunk(lambda a: stress_chunk_bytes(a, rows, scenarios, dtype), budget, n_devices, cap)


def mc_chunk(rows: int, dtype, *, budget: int | None = None, n_devices: int | None = None,
             cap: int = 1 << 20) -> int:
    """Monte Carlo paths per compiled call (``simulate_losses(chunk=...)``) for a ``rows``-row book, as
    ``span_chunk`` with ``mc_chunk_bytes``."""
    return _chunk(lambda p: mc_chunk_bytes(p, rows, dtype), budget, n_devices, cap)


# ---------------------------------------------------------------- accounts sharding


def accounts_mesh(devices: Sequence | None = None) -> Mesh:
    """A one-axis mesh ('accounts') over ``devices`` (default: every local device)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devices), (ACCOUNTS_AXIS,))


def pad_accounts(tree, multiple: int):
    """Host arrays of ``tree`` (leading accounts axis) padded to a multiple of ``multiple`` accounts with
    copies of the last account (dropped after the call), and the original count."""
    n = jax.tree_util.tree_leaves(tree)[0].shape[0]
    m = -(-n // multiple) * multiple
    if m == n:
        return tree, n
    return jax.tree_util.tree_map(lambda x: np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[-1:], m - n, 0)]),
                                  tree), n


def shard_accounts(tree, mesh: Mesh):
    """``tree`` placed on ``mesh`` with its leading axis split over the 'accounts' axis."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(ACCOUNTS_AXIS)))


def replicate(tree, mesh: Mesh):
    """``tree`` copied to every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def map_accounts(batch_fn, books, shared=(), per_account=(), *, chunk: int, devices: Sequence | None = None,
                 to_host: bool = True):
    """``batch_fn(books_chunk, *shared, *per_account_chunk)`` over the accounts of ``books`` (host arrays with a
    leading accounts axis) in chunks of ``chunk`` accounts, each chunk sharded over ``devices`` (default all
    local devices) and ``shared`` replicated. Returns the result tree over the real accounts only: host
    numpy arrays (``to_host``), else the list of per-chunk device results and their valid counts.

    Every chunk has the same shape (the last one padded with copies of its last account), so one
    compilation serves the whole batch; ``chunk`` is rounded up to a multiple of the device count.
    """
    mesh = accounts_mesh(devices)
    n_dev = mesh.devices.size
    chunk = -(-chunk // n_dev) * n_dev
    n = jax.tree_util.tree_leaves(books)[0].shape[0]
    chunk = min(chunk, -(-n // n_dev) * n_dev)
    if to_host and n_dev == 1 and n <= chunk and mesh.devices.flat[0] == jax.local_devices()[0]:
        # one chunk on the default device: the same call with the same shapes, without the per-leaf sharded
        # puts that dominate a small batch's latency (the monitor's updates)
        out = batch_fn(books, *shared, *per_account)
        return jax.tree_util.tree_map(np.asarray, out)
    shared = replicate(tuple(shared), mesh)
    outs, valid = [], []
    for start in range(0, n, chunk):
        part = jax.tree_util.tree_map(lambda x: np.asarray(x)[start:start + chunk], (books, tuple(per_account)))
        part, m = pad_accounts(part, chunk)
        b, extra = shard_accounts(part, mesh)
        outs.append(batch_fn(b, *shared, *extra))
        valid.append(m)
    if not to_host:
        return outs, valid
    host = [jax.tree_util.tree_map(lambda x, v=v: np.asarray(x)[:v], o) for o, v in zip(outs, valid)]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *host)


def vmapped(fn: Callable, in_axes=(0, None)) -> Callable:
    """``jax.jit(jax.vmap(fn, in_axes=in_axes))``, one per ``(fn, in_axes)`` so its compiled code is kept
    between calls: e.g. ``vmapped(span_margin)`` maps a one-account measure over a leading accounts axis
    of the book, parameters shared (what ``map_accounts`` takes as ``batch_fn``)."""
    return _vmapped(fn, tuple(in_axes))


@functools.lru_cache(maxsize=None)
def _vmapped(fn: Callable, in_axes: tuple) -> Callable:
    return jax.jit(jax.vmap(fn, in_axes=in_axes))


def map_chunks(fn: Callable, items: np.ndarray, size: int, *, put: Callable = lambda x: x, fill=0,
               on_ready: Callable[[int], None] | None = None) -> tuple[list, list]:
    """``fn(put(part))`` over ``items`` (a 1-d host array) in parts of ``size`` rows, the last padded with
    ``fill``; returns the per-part outputs and the valid rows of each (one shape, so one compilation).

    ``on_ready(done)``, if given, is called once each part's result is ready with the items done so far.
    JAX dispatches asynchronously, so the loop keeps one part in flight behind the one being dispatched:
    it dispatches part k + 1, then blocks on part k and reports it (the device never waits for the host,
    the count never runs ahead of the work). The outputs are the same with or without ``on_ready``."""
    outs, valid = [], []
    pending = None  # (output, items done once it is ready) of the part dispatched last
    for start in range(0, len(items), size):
        stop = min(start + size, len(items))
        part = np.full(size, fill, items.dtype)
        part[: stop - start] = items[start:stop]
        outs.append(fn(put(part)))
        valid.append(stop - start)
        if on_ready is not None:
            if pending is not None:  # part k + 1 is queued: wait for part k, then report it
                jax.block_until_ready(pending[0])
                on_ready(pending[1])
            pending = (outs[-1], stop)
    if pending is not None:
        jax.block_until_ready(pending[0])
        on_ready(pending[1])
    return outs, valid
