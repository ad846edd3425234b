"""Accounts sharded over several devices give the same margins as one device (4 forced host devices, in a
subprocess so that this process's single-device JAX is untouched): bit-identical on one device whatever the
chunking, and equal to within a few ulps (last-bit rounding of XLA's per-device code) on four."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from pmjax.batch import sharding
from pmjax.core.portfolio import make_portfolio

SCRIPT = r"""
import json, sys
import jax, numpy as np
import pmjax
jax.config.update("jax_enable_x64", True)
from pmjax.bench import books as bench
from pmjax.batch import sharding
from pmjax.apps import stress
from pmjax.io.config import load_config
from pmjax.measures.deribit import deribit_margin, deribit_params
from pmjax.measures.span import span_margin, span_params

devices = jax.devices()
config = load_config()
params = span_params(config)
books = bench.random_account_books(37, 20, seed=4)          # 37: not a multiple of the 4 devices
span_margin_batch = sharding.vmapped(span_margin)
whole = jax.tree_util.tree_map(np.asarray, span_margin_batch(books, params))   # one call, one device
four = sharding.map_accounts(span_margin_batch, books, (params,), chunk=16, devices=devices)
one = sharding.map_accounts(span_margin_batch, books, (params,), chunk=16, devices=devices[:1])
outs, valid = sharding.map_accounts(span_margin_batch, books, (params,), chunk=16, devices=devices, to_host=False)
dparams = deribit_params(config)
d_whole = jax.tree_util.tree_map(np.asarray, sharding.vmapped(deribit_margin)(books, dparams))
d_four = stress.deribit_margin_sharded(books, dparams, chunk=16, devices=devices)

# SPAN's time, volatility and price risk are differences of risk-array entries ((L1 + L2)/2 cancels to a small
# number): their last bits are those of the risk array, so they are measured on its scale
DERIVED = ("time_risk", "volatility_risk", "price_risk")


def gap(a, b):
    # largest difference of any leaf relative to that leaf's scale (0.0: bit-identical); None if shapes differ
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return None
    names = [f for f in getattr(b, "__dataclass_fields__", ())]
    scale = {id(getattr(b, n)): float(np.max(np.abs(np.asarray(b.risk_array, float)))) for n in names if n in DERIVED}
    return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float))))
               / max(scale.get(id(y), float(np.max(np.abs(np.asarray(y, float))))), 1e-300) for x, y in zip(la, lb))

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


MC = r"""
import json
import jax, numpy as np
import pmjax
jax.config.update("jax_enable_x64", True)
from pmjax.bench import books as bench
from pmjax.core import fast_greeks
from pmjax.scenarios import montecarlo
from pmjax.io.market import load_market

devices = jax.devices()
market = load_market()
spec, params, _ = montecarlo.build_model(market, montecarlo.var_settings({"var": {"historical": False}}))
book = bench.random_option_book(50, seed=6, size=64)
paths, chunk = 1000, 256                                    # 1000: the last chunk is padded
idx = np.arange(paths, dtype=np.uint32)
outs, valid = montecarlo.map_paths(montecarlo.path_losses, spec, book, params, 7, idx, chunk, devices, False, "")
outs1, _ = montecarlo.map_paths(montecarlo.path_losses, spec, book, params, 7, idx, chunk, devices[:1], False, "")
shards = [sorted(s.index[0].start for s in o.addressable_shards) for o in outs]
four = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=7, chunk=chunk, progress=False)
one = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=7, chunk=chunk, devices=devices[:1],
                                 progress=False)
other_chunk = montecarlo.simulate_losses(book, spec, params, paths=paths, seed=7, chunk=64, devices=devices[:1],
                                         progress=False)
mean4, parts4 = montecarlo.tail_allocation(book, spec, params, seed=7, indices=idx[:300], chunk=chunk)
mean1, parts1 = montecarlo.tail_allocation(book, spec, params, seed=7, indices=idx[:300], chunk=chunk,
                                           devices=devices[:1])
per_device = montecarlo.per_device(montecarlo.path_losses, spec, montecarlo.paths_mesh(devices))
hlo = per_device.lower(book, params, jax.random.key(7), idx[:256]).compile().as_text()
collectives = [c for c in ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
               if c in hlo]
g = bench.random_option_book(3001, seed=9)
fast4 = fast_greeks.unit_greeks_fast(g, block=256)
fast1 = fast_greeks.unit_greeks_fast(g, block=256, devices=devices[:1])
print(json.dumps({
    "devices": len(devices), "model": spec.model, "collectives": collectives,
    "chunk_devices": [len(o.sharding.device_set) for o in outs], "chunk1_devices": len(outs1[0].sharding.device_set),
    "shard_starts": shards[0], "valid": valid,
    "equal": bool(np.array_equal(four, one)), "equal_chunk": bool(np.array_equal(one, other_chunk)),
    "n": int(four.shape[0]), "distinct": int(len(np.unique(four))),
    "tail_equal": bool(mean4 == mean1 and np.array_equal(parts4, parts1)),
    "greeks_devices": len(fast4["delta"].sharding.device_set),
    "greeks_equal": all(bool(np.array_equal(np.asarray(fast4[k]), np.asarray(fast1[k]))) for k in fast4),
}))
"""


def test_monte_carlo_paths_split_over_4_devices_bit_identical_to_one():
    """Each chunk of paths is one array split over the 4 devices (a quarter of the paths on each), and the
    losses, the tail allocation and the closed-form Greeks equal a one-device run bit for bit."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MC], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    # each device runs its own paths: no collective in the compiled chunk (the Student-t chi-square draw's
    # rejection loop, partitioned by plain sharding, all-reduced its loop condition and could deadlock
    # XLA's CPU host devices)
    assert out["model"] == "student_t" and out["collectives"] == [], out
    assert out["chunk_devices"] == [4, 4, 4, 4] and out["chunk1_devices"] == 1, out
    assert out["shard_starts"] == [0, 64, 128, 192], out  # 256 paths a chunk: 64 on each device
    assert out["valid"] == [256, 256, 256, 232]
    assert out["n"] == 1000 and out["distinct"] > 990  # real losses, not a constant
    assert out["equal"] and out["equal_chunk"] and out["tail_equal"], out
    assert out["greeks_devices"] == 4 and out["greeks_equal"], out


def test_chunks_are_multiples_of_any_device_count_and_fit_the_budget():
    rows, budget = 32, 50 << 20
    for n_dev in (1, 3, 5, 6):
        for c, per in ((sharding.span_chunk(rows, np.float64, budget=budget, n_devices=n_dev),
                        lambda a: sharding.span_chunk_bytes(a, rows, np.float64)),
                       (sharding.deribit_chunk(rows, np.float64, budget=budget, n_devices=n_dev),
                        lambda a: sharding.deribit_chunk_bytes(a, rows, np.float64)),
                       (sharding.stress_chunk(rows, 12, np.float32, budget=budget, n_devices=n_dev),
                        lambda a: sharding.stress_chunk_bytes(a, rows, 12, np.float32)),
                       (sharding.mc_chunk(rows, np.float64, budget=budget, n_devices=n_dev),
                        lambda a: sharding.mc_chunk_bytes(a, rows, np.float64))):
            p = c // n_dev
            assert c % n_dev == 0 and p & (p - 1) == 0, (n_dev, c)
            assert per(p) <= budget < per(2 * p) or c == 1 << 16 or c == 1 << 20
    # the Deribit grid's chunk is smaller than SPAN's (about 6x the bytes per account-row)
    assert sharding.deribit_chunk(rows, np.float64, budget=budget, n_devices=1) < \
        sharding.span_chunk(rows, np.float64, budget=budget, n_devices=1)


def test_default_budget_is_shared_between_host_devices(monkeypatch):
    monkeypatch.setattr(sharding, "memory_budget", lambda *a, **k: 64 << 20)
    one = sharding.span_chunk(32, np.float64, n_devices=1)
    four = sharding.span_chunk(32, np.float64, n_devices=4)
    # CPU devices share the host's memory: four of them take about the same accounts per call as one
    assert one // 2 <= four <= one and four % 4 == 0


def test_span_batch_and_stress_default_chunks_change_nothing():
    import jax

    from pmjax.bench import books as bench
    from pmjax.batch.accounts import AccountBatch
    from pmjax.scenarios.named import StressScenario
    from pmjax.apps.stress import span_batch, stress_pnl
    from pmjax.io.config import load_config
    from pmjax.measures.span import span_params

    params = span_params(load_config())
    books = bench.random_account_books(37, 20, seed=3)
    empty = make_portfolio([], allow_empty=True)  # the books come from the bench generator, not portfolios
    batch = AccountBatch([empty] * 37, [[]] * 37, books, books.quantity.shape[1])
    auto = span_batch(batch, params)  # chunk from the memory at hand: all 37 in one call
    fixed = span_batch(batch, params, chunk=8)
    for a, b in zip(jax.tree_util.tree_leaves(auto), jax.tree_util.tree_leaves(fixed)):
        assert a.shape[0] == 37
        np.testing.assert_array_equal(a, b)
    scen = [StressScenario("crash", (-0.3, -0.35), (0.2, 0.25), 1.0), StressScenario("rally", (0.2, 0.1), (0.0, 0.0))]
    np.testing.assert_array_equal(stress_pnl(batch, scen), stress_pnl(batch, scen, chunk=8))
