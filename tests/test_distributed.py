"""docs/scaling.md's multi-host recipe, run for real: two local processes (2 CPU devices each) joined by
``jax.distributed.initialize`` on 127.0.0.1, each holding half of a batch of accounts, one SPMD SPAN call over
the 4 devices of both; the gathered figures equal a one-process run to 1e-12 of each field's scale.

CPU collectives need gloo (``jax_cpu_collectives_implementation``), which every PyPI jaxlib ships; the test
fails, saying why, when the installed jaxlib has none. Every step is bounded by a timeout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from pmjax.bench import books as bench
from pmjax.io.config import load_config
from pmjax.measures.span import span_margin, span_params

pytestmark = pytest.mark.slow

ACCOUNTS, POSITIONS, SEED = 37, 20, 4
TIMEOUT_S = 240

WORKER = r"""
import json, sys
rank, port, n_accounts, positions, seed = (int(a) for a in sys.argv[1:6])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU collectives between processes
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=rank,
                           initialization_timeout=120)
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import pmjax
jax.config.update("jax_enable_x64", True)
from pmjax.bench import books as bench
from pmjax.batch import sharding
from pmjax.io.config import load_config
from pmjax.measures.span import span_margin, span_params

mesh = Mesh(np.array(jax.devices()), ("accounts",))          # every process's devices, process-major
books = jax.tree_util.tree_map(np.asarray, bench.random_account_books(n_accounts, positions, seed=seed))
# pad so each process holds the same number of accounts, a multiple of its local devices
books, n = sharding.pad_accounts(books, jax.process_count() * jax.local_device_count())
per = books.quantity.shape[0] // jax.process_count()
local = jax.tree_util.tree_map(lambda x: x[rank * per:(rank + 1) * per], books)  # this process's accounts only
split = NamedSharding(mesh, P("accounts"))
global_books = jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(split, x), local)
params = jax.device_put(span_params(load_config()), NamedSharding(mesh, P()))
result = sharding.vmapped(span_margin)(global_books, params)
mine = sorted({s.index[0].start for s in result.total.addressable_shards})
gathered = multihost_utils.process_allgather(result, tiled=True)
out = {"rank": rank, "processes": jax.process_count(), "devices": len(jax.devices()),
       "local_devices": len(jax.local_devices()), "local_shard_starts": mine, "n": n,
       "fields": {k: np.asarray(v)[:n].tolist() for k, v in vars(gathered).items()} if rank == 0 else None}
print("RESULT " + json.dumps(out))
jax.distributed.shutdown()
"""


def _gloo_available() -> str | None:
    """None when this jaxlib can make gloo CPU collectives, else the reason it cannot."""
    try:
        from jax._src.lib import _jax
    except ImportError:
        try:
            from jax._src.lib import xla_extension as _jax
        except ImportError:
            return "cannot find jaxlib's extension module to look for gloo"
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return "the installed jaxlib has no gloo CPU collectives (make_gloo_tcp_collectives)"
    if "jax_cpu_collectives_implementation" not in jax.config.values:
        return "this jax has no jax_cpu_collectives_implementation option"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_span_over_two_processes_equals_one_process():
    reason = _gloo_available()
    assert reason is None, reason  # PyPI's jaxlib wheels all ship gloo: the multi-host path needs it
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    port = _free_port()
    args = [str(a) for a in (port, ACCOUNTS, POSITIONS, SEED)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the two jax.distributed processes did not finish within {TIMEOUT_S} s")
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    docs = [json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
            for stdout, _ in outs]
    for rank, d in enumerate(docs):
        assert d["rank"] == rank and d["processes"] == 2 and d["devices"] == 4 and d["local_devices"] == 2, d
    # each process computed only its own half of the 40 (padded) accounts, 10 on each of its devices
    assert docs[0]["local_shard_starts"] == [0, 10] and docs[1]["local_shard_starts"] == [20, 30], docs
    fields = docs[0]["fields"]

    # the same accounts in this process, one device, one call
    books = bench.random_account_books(ACCOUNTS, POSITIONS, seed=SEED)
    ref = jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(span_margin, in_axes=(0, None)))(books, span_params(load_config())))
    assert set(fields) == set(vars(ref))
    for name, want in vars(ref).items():
        got = np.asarray(fields[name], dtype=want.dtype)
        assert got.shape == want.shape, name
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            scale = max(float(np.max(np.abs(want))), 1e-300)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale, err_msg=name)
    assert np.count_nonzero(ref.total) > 10
