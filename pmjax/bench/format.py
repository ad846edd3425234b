"""The ``pmjax bench`` document as text: header (device, sizes, baseline CDF), results table (rates per
second, latencies in ms or s), the pricing rows' paths, first-call compile seconds and the targets."""

from __future__ import annotations

def _num(x, unit=None) -> str:
    """A figure for the table: seconds as ms or s when ``unit`` is "s", else 3 significant digits."""
    if x is None:
        return "-"
    if unit == "s":
        return f"{x * 1e3:.3f} ms" if x < 1 else f"{x:.3f} s"
    return f"{x:.3e}"


def format_bench(doc: dict) -> str:
    """The bench document as text: header, results table, targets."""
    from pmjax.apps.tables import table

    info = doc["device_info"]
    sz = doc["sizes"]
    how = f"; {info['cpu_devices']}" if info.get("cpu_devices") and info["platform"] == "cpu" else ""
    load = doc.get("load_average_at_start")
    head = [f"device: {doc['device']} x{info['count']} ({info['cpu_count']} host cores{how})  jax {doc['jax']}  "
            f"numpy {doc['numpy']}  precision {doc['precision']} (black76 rows: their own)",
            f"sizes: {sz['preset']}: options {sz['options']:,}; accounts {sz['accounts']:,} x {sz['positions']} "
            f"positions; Monte Carlo {sz['paths']:,} paths x {sz['mc_options']:,} options; baselines on "
            f"{sz['numpy_options']:,} options, {sz['numpy_accounts']:,} accounts, {sz['numpy_paths']:,} paths"
            + (f"; VaR exact tail {sz['var_paths']:,} paths x {sz['var_options']:,} options, {sz['var_accounts']:,} "
               f"accounts x 20 positions on {sz['var_account_paths']:,} paths" if "var_paths" in sz else ""),
            f"normal CDF of the baselines: {doc['baseline_ndtr']}   date {doc['date']}" +
            (f"   load average at start {' '.join(f'{x:.2f}' for x in load)}" if load else "")]
    rows = [[r["name"], r["size"], r["unit"], _num(r["pmjax"], r["unit"]), _num(r["baseline_value"], r["unit"]),
             "-" if r["speedup"] is None else f"{r['speedup']:.2f}x", r["baseline"]] for r in doc["results"]]
    text = table(rows, ["result", "size", "unit", "pmjax", "baseline", "speedup", "baseline computation"],
                 title="\n".join(head))
    lines = [text]
    paths = [f"  {r['name']}: {r['path']}" for r in doc["results"] if r.get("path")]
    if paths:
        lines += ["", "pmjax computation of the pricing rows:"] + paths
    for r in doc["results"]:
        if r["name"] == "mc_var_exact_tail":
            lines += ["", f"mc_var_exact_tail: {r['paths_revalued']:,} of {r['paths']:,} paths revalued in full "
                          f"({r['attempts']} attempt(s), fallback {r['fallback']}); VaR, ES, standard errors and tail "
                          f"equal to full revaluation: {r['figures_equal']}; numpy baseline "
                          f"{_num(r['numpy_seconds'], 's')} ({r['speedup_vs_numpy']:.1f}x)"]
        if r["name"] == "var_accounts":
            lines += ["", f"var_accounts: {r['accounts']:,} accounts on shared paths in {_num(r['seconds'], 's')}; "
                          f"one account at a time {r['one_at_a_time_per_s']:.3g} accounts/s; figures equal to "
                          f"one at a time on {r['figures_compared']} accounts: {r['figures_equal']}"]
    lines += ["", "first call - warm call, s: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          doc["first_call_compile_s"].items())]
    if doc["targets"]:
        lines += ["", f"targets ({'cpu' if info['platform'] == 'cpu' else 'gpu'}):"]
        by = {r["name"]: r for r in doc["results"]}
        for t in doc["targets"]:
            r = by[t["result"]]
            got = (f"{r['speedup']:.2f}x numpy" if "numpy" in t["target"] else
                   f"{r['speedup']:.1f}x full" if "full revaluation" in t["target"] else
                   f"p99 {_num(r['p99'], 's')}" if "p99" in t["target"] else
                   _num(r["seconds"], "s") if "<" in t["target"] else f"{r['pmjax']:.3e}/s")
            lines.append(f"  {t['result']:<28} {t['target']:<42} measured {got:<16} {t['status']}")
    return "\n".join(lines)


__all__ = ["format_bench"]
