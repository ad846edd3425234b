"""Accounts sharded over several devices give the same margins as one device (4 forced host devices, in a
subprocess so that this process's single-device JAX is untouched): bit-identical on one device whatever the
chunking, and equal to within a few ulps (last-bit rounding of XLA's per-device code) on four."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from pmjax import sharding

SCRIPT = r"""
import json, sys
import jax, numpy as np
import pmjax
from pmjax import bench, sharding
from pmjax.config import load_config
from pmjax.deribit import deribit_margin_batch, deribit_params
from pmjax.span import span_margin_batch, span_params

devices = jax.devices()
config = load_config()
params = span_params(config)
books = bench.random_account_books(37, 20, seed=4)          # 37: not a multiple of the 4 devices
whole = jax.tree_util.tree_map(np.asarray, span_margin_batch(books, params))   # one call, one device
four = sharding.span_margin_sharded(books, params, chunk=16, devices=devices)
one = sharding.span_margin_sharded(books, params, chunk=16, devices=devices[:1])
outs, valid = sharding.map_accounts(span_margin_batch, books, (params,), chunk=16, devices=devices, to_host=False)
dparams = deribit_params(config)
d_whole = jax.tree_util.tree_map(np.asarray, deribit_margin_batch(books, dparams))
d_four = sharding.deribit_margin_sharded(books, dparams, chunk=16, devices=devices)

def gap(a, b):
    # largest difference of any leaf relative to that leaf's scale (0.0: bit-identical); None if shapes differ
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return None
    return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float))))
               / max(float(np.max(np.abs(np.asarray(y, float)))), 1e-300) for x, y in zip(la, lb))

print(json.dumps({
    "devices": len(devices),
    "chunk_devices": len(outs[0].total.sharding.device_set),
    "chunk_shape": list(outs[0].total.shape), "valid": valid,
    "four_vs_one": gap(four, one), "four_vs_whole": gap(four, whole), "one_vs_whole": gap(one, whole),
    "deribit_four_vs_whole": gap(d_four, d_whole),
    "worst_equal": bool(np.array_equal(four.worst_scenario, whole.worst_scenario)),
    "tier_equal": bool(np.array_equal(four.position_tier, whole.position_tier)),
    "max_total_diff": float(np.max(np.abs(four.total - whole.total))),
    "n": int(four.total.shape[0]), "nonzero_totals": int(np.count_nonzero(four.total)),
}))
"""


def test_span_and_deribit_accounts_sharded_over_4_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["chunk_devices"] == 4 and out["chunk_shape"] == [16]  # each chunk really is split over 4 devices
    assert out["valid"] == [16, 16, 5]  # 37 accounts: two full chunks and 5 real accounts in the padded last
    assert out["n"] == 37 and out["nonzero_totals"] > 10
    # one device, chunked or not: bit-identical to the single whole-batch call
    assert out["one_vs_whole"] == 0.0, out
    # four devices: the same arithmetic per account; XLA compiles the per-device program of a multi-device
    # mesh on its own (its loop vectorisation differs), which moves the odd last bit: a few ulps at most
    assert out["four_vs_one"] is not None and out["four_vs_one"] < 1e-14, out
    assert out["four_vs_whole"] < 1e-14 and out["deribit_four_vs_whole"] < 1e-14, out
    assert out["worst_equal"] and out["tier_equal"], out


def test_pad_accounts_repeats_the_last_account_to_a_multiple():
    tree = {"a": np.arange(10).reshape(5, 2), "b": np.arange(5.0)}
    padded, n = sharding.pad_accounts(tree, 4)
    assert n == 5 and padded["a"].shape == (8, 2) and padded["b"].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    same, n = sharding.pad_accounts(tree, 5)
    assert n == 5 and same is tree


def test_chunk_is_a_power_of_two_multiple_of_the_device_count_within_the_budget():
    rows, budget = 32, 50 << 20
    for n_dev in (1, 2, 4, 8):
        c = sharding.span_chunk(rows, np.float64, budget=budget, n_devices=n_dev)
        assert c % n_dev == 0 and c & (c - 1) == 0
        assert sharding.span_chunk_bytes(c // n_dev, rows, np.float64) <= budget  # per device
        assert sharding.span_chunk_bytes(2 * c // n_dev, rows, np.float64) > budget or c == 1 << 16
    # a budget below one account still gives one account per device
    assert sharding.span_chunk(rows, np.float64, budget=1, n_devices=4) == 4


STRESS = r"""
import sys
import jax
from pmjax import cli
assert jax.local_device_count() == 4
sys.exit(cli.main(["stress", sys.argv[1], "--method", "span,deribit", "--json"]))
"""


def test_stress_command_on_4_devices_equals_one_device(tmp_path, capsys):
    from pmjax import cli

    books = {"a": "BTC-27MAR26-100000-C:-2,BTC-27MAR26:1.5,BTC-PERPETUAL:-0.5",
             "b": "ETH-27MAR26-3000-P:2,ETH_USDC-PERPETUAL:3",
             "c": "BTC-27MAR26-80000-P:-4,ETH-27MAR26-2800-C:-5,ETH-27MAR26:2",
             "d": "BTC-27MAR26-90000-C:3,BTC-30JAN26-95000-P:-1",
             "e": "ETH-27MAR26-3200-P:-1,ETH-27MAR26-3400-C:1"}
    for name, trades in books.items():
        lines = "".join(f"  - {{instrument: {t.split(':')[0]}, quantity: {t.split(':')[1]}}}\n"
                        for t in trades.split(","))
        (tmp_path / f"{name}.yaml").write_text(f"account: {name}\npositions:\n{lines}")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", STRESS, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = json.loads(proc.stdout)
    assert cli.main(["stress", str(tmp_path), "--method", "span,deribit", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [a["account"] for a in four["accounts"]] == [a["account"] for a in one["accounts"]] == list(books)
    for a4, a1 in zip(four["accounts"], one["accounts"]):
        assert a1["span"]["total"] > 0
        assert np.isclose(a4["span"]["total"], a1["span"]["total"], rtol=1e-13, atol=0)
        assert np.isclose(a4["deribit"]["initial"], a1["deribit"]["initial"], rtol=1e-13, atol=0)
        for u, v in a1["span"]["by_underlying"].items():
            assert a4["span"]["by_underlying"][u]["worst_scenario"] == v["worst_scenario"]
