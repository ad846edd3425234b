#!/usr/bin/env bash
# The GPU check of pmjax bench (reports/bench/README.md, "GPU recipe"): on a machine with one NVIDIA GPU and
# python3 + CUDA jax installed, from the repository root:
#
#     PYTHONPATH=. bash reports/bench/gpu_check.sh [OUTDIR]        # OUTDIR default: $OUT, else reports/bench/gpu
#
# 1. correctness (about 1 minute): SPAN, the Deribit grid, price + Greeks (closed forms and autodiff) and a
#    Monte Carlo 99% VaR / ES computed on the CPU (a JAX_PLATFORMS=cpu process) and on the GPU in float64
#    (and float32 on the GPU against the float64 reference): gpu_correctness.json / .txt;
# 2. the bench at full sizes (the GPU targets) in float32, the precision the GPU targets are stated in:
#    `pmjax bench --precision float32 --json` -> gpu_full_float32.json, .txt (the table), .err (progress);
#    its mc_var_exact_tail row is the Monte Carlo VaR/ES target (1e7 paths x 1e4 options < 1 s, exact tail,
#    timed beside full revaluation of the same paths) and var_accounts 1,000 accounts on 1e5 shared paths.
#
# Under 9 minutes on an H100/H200: each step has its own timeout (100 + 120 + 300 s). GPU_CHECK_SMALL=1: small sizes, for a
# test of this script on a CPU (`GPU_CHECK_SMALL=1 PYTHONPATH=. bash reports/bench/gpu_check.sh /tmp/x`).
# Exit status: 0 when every step ran and every correctness check passed.
set -uo pipefail

OUTDIR="${1:-${OUT:-reports/bench/gpu}}"
PY="${PYTHON:-python3}"
SMALL="${GPU_CHECK_SMALL:-0}"
mkdir -p "$OUTDIR"
if [ "$SMALL" = "1" ]; then SIZES=tiny; SMALL_FLAG=--small; else SIZES=full; SMALL_FLAG=; fi
status=0
say() { echo "gpu_check: $*" | tee -a "$OUTDIR/gpu_check.log"; }

say "start $(date -u +%FT%TZ), sizes $SIZES, output $OUTDIR"
{
  "$PY" -c 'import jax, jaxlib, numpy, sys; print("python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__, "numpy", numpy.__version__); print("devices", jax.devices())'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
} > "$OUTDIR/environment.txt" 2>&1
cat "$OUTDIR/environment.txt" | tee -a "$OUTDIR/gpu_check.log"

# 1. correctness: the CPU reference in its own process, then the default backend (the GPU)
say "CPU reference ..."
if ! JAX_PLATFORMS=cpu timeout 100 "$PY" reports/bench/gpu_check.py reference --out "$OUTDIR/cpu_reference.npz" \
     $SMALL_FLAG >> "$OUTDIR/gpu_check.log" 2>&1; then
  say "CPU reference FAILED (see gpu_check.log)"; status=1
else
  say "GPU vs CPU ..."
  timeout 120 "$PY" reports/bench/gpu_check.py compare --reference "$OUTDIR/cpu_reference.npz" \
      --out "$OUTDIR/gpu_correctness.json" $SMALL_FLAG > "$OUTDIR/gpu_correctness.txt" 2>> "$OUTDIR/gpu_check.log"
  rc=$?
  cat "$OUTDIR/gpu_correctness.txt" | tee -a "$OUTDIR/gpu_check.log"
  [ $rc -eq 0 ] || { say "correctness check FAILED (exit $rc)"; status=1; }
fi
rm -f "$OUTDIR/cpu_reference.npz"  # large; the comparison keeps the figures it needs

# 2. the bench at full sizes, float32
say "pmjax bench --sizes $SIZES --precision float32 ..."
if timeout 300 "$PY" -m pmjax bench --sizes "$SIZES" --precision float32 --json \
     > "$OUTDIR/gpu_${SIZES}_float32.json" 2> "$OUTDIR/gpu_${SIZES}_float32.err"; then
  "$PY" -c 'import json, sys; from pmjax.bench import format_bench; print(format_bench(json.load(open(sys.argv[1]))))' \
      "$OUTDIR/gpu_${SIZES}_float32.json" > "$OUTDIR/gpu_${SIZES}_float32.txt"
  cat "$OUTDIR/gpu_${SIZES}_float32.txt" | tee -a "$OUTDIR/gpu_check.log"
else
  say "bench FAILED or timed out (see gpu_${SIZES}_float32.err)"; tail -5 "$OUTDIR/gpu_${SIZES}_float32.err"; status=1
fi
say "done $(date -u +%FT%TZ), status $status"
exit $status
