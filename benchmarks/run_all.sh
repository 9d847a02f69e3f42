#!/usr/bin/env bash
# Runs the benchmark suite on whatever accelerator JAX finds.
#
#   bash benchmarks/run_all.sh [--quick] [--out DIR] [--budget SECONDS]
#
# Each benchmark's table goes to stdout and to DIR/<name>.txt (at most 7
# files: env.txt, one .txt per benchmark, stderr.log). A benchmark that
# fails or runs out of time is reported and the suite goes on.
#
# On a GPU (or TPU):
#   gpu_throughput   tokens/s, MFU and the sampler's share of the HBM bound
#                    of a SmolLM2-135M-sized student: sampler and GKD update
#                    (32,768 tokens a step), float32 and bfloat16, and
#                    Hugging Face generate on CUDA (when torch has CUDA)
#   gpu_throughput_360m  the bfloat16 update's MFU of a SmolLM2-360M-sized
#                    student (not with --quick)
#   gkd_step_smollm2 one on-policy GKD step against TRL's GKDTrainer (torch
#                    on CUDA) at SmolLM2-135M/360M shapes (not with --quick)
#   gkd_step         the same with the small models
#   sampling.py and loss_memory.py are skipped there: their torch side runs
#   on the CPU and loss_memory reports host memory.
# On a CPU: sampling (SmolLM2 rows only when the asset is installed),
#   loss_memory, gkd_step and gpu_throughput (no MFU without a peak).
#
# --quick: small sizes everywhere, gkd_step.py's tiny pair (checks that
#   everything runs).
# --budget: seconds for the whole suite (default 540 on an accelerator,
#   unlimited on a CPU); a benchmark is cut
#   at the time left and skipped when under 30 s remain.
# Nothing here needs the network: HF_HUB_OFFLINE=1.
#
# On a machine without gkdrl's dependencies, install the wheels first (see
# benchmarks/gpu_run.sh) and run from the repository root with
# PYTHONPATH=$PWD.

set -u
cd "$(dirname "$0")/.."
OUT=""
QUICK=0
BUDGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-benchmark_results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 TF_CPP_MIN_LOG_LEVEL=2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# JAX and torch share the GPU: allocate on demand instead of 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
START=$(date +%s)
LOG="$OUT/stderr.log"
: > "$LOG"

left() { echo $(( ${BUDGET:-86400} - ($(date +%s) - START) )); }

# bench NAME LIMIT_SECONDS ARGS...: runs "$PY ARGS" with a time limit.
bench() {
  local name="$1" limit="$2"; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 30 ]; then
    echo "== $name: skipped, ${remaining}s of the budget left" | tee -a "$OUT/$name.txt"
    return
  fi
  [ "$limit" -gt "$remaining" ] && limit="$remaining"
  echo "== $name ($*; limit ${limit}s)" | tee -a "$OUT/$name.txt"
  echo "== $name" >> "$LOG"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$PY" "$@" 2>>"$LOG" | tee -a "$OUT/$name.txt"
  local rc="${PIPESTATUS[0]}"
  if [ "$rc" -ne 0 ]; then
    echo "== $name FAILED (exit $rc$( [ "$rc" -eq 124 ] && echo ': time limit')); stderr tail:" | tee -a "$OUT/$name.txt"
    grep -v "^\s*$" "$LOG" | tail -n 8 | tee -a "$OUT/$name.txt"
  fi
  echo "== $name took $(( $(date +%s) - t0 ))s" | tee -a "$OUT/$name.txt"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(uname -m), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "haiku", "optax", "chex", "transformers", "torch",
             "trl", "datasets", "gguf"):
  try:
    print(name, getattr(importlib.import_module(name), "__version__", "?"))
  except Exception as e:  # pylint: disable=broad-except
    print(name, "unavailable:", type(e).__name__, str(e)[:120])
try:
  import jax
  print("jax devices:", jax.devices())
  import gkdrl.agents, gkdrl.sampling  # the imports every benchmark needs
  print("gkdrl imports: ok")
except Exception as e:  # pylint: disable=broad-except
  print("gkdrl import FAILED:", type(e).__name__, e)
EOF
} 2>>"$LOG" | tee "$OUT/env.txt"

# RUN_ALL_BACKEND=gpu forces the accelerator list (to test it on a CPU).
BACKEND="${RUN_ALL_BACKEND:-$("$PY" -c "import jax; print(jax.default_backend())" 2>>"$LOG")}"
if [ -z "$BUDGET" ]; then
  case "$BACKEND" in gpu|cuda|tpu) BUDGET=540 ;; *) BUDGET=86400 ;; esac
fi
echo "== backend: ${BACKEND:-unknown}, quick=$QUICK, budget ${BUDGET}s"
Q=()
[ "$QUICK" = 1 ] && Q=(--quick)
# gkd_step.py's quick run also takes the tiny pair: on the small pair it
# took 93 s of the quick suite's 133 s on the 2-core development machine,
# on the tiny pair 48 s.
QSTEP=()
[ "$QUICK" = 1 ] && QSTEP=(--quick --size=tiny)

if [ "$BACKEND" = "gpu" ] || [ "$BACKEND" = "tpu" ] || [ "$BACKEND" = "cuda" ]; then
  # In the order of the GPU targets (benchmarks/README.md): the sampler's
  # share of the HBM bound and the 135M update's MFU, the 360M update's
  # MFU, the GKD step at the SmolLM2 pair's sizes against TRL; then the
  # small pair's step.
  bench gpu_throughput 240 benchmarks/gpu_throughput.py --hf "${Q[@]}"
  [ "$QUICK" = 1 ] || bench gpu_throughput_360m 150 benchmarks/gpu_throughput.py --size=360m --dtypes=bfloat16 --what=update
  [ "$QUICK" = 1 ] || bench gkd_step_smollm2 150 benchmarks/gkd_step.py --size=smollm2 --rounds=1 --warmup=1 --steps=3
  bench gkd_step 120 benchmarks/gkd_step.py --rounds=1 "${QSTEP[@]}"
else
  MODELS=random
  "$PY" -c "from gkdrl import assets; assets.locate('smollm2')" 2>/dev/null \
    && MODELS=smollm2,random
  if [ "$QUICK" = 1 ]; then
    bench sampling 300 benchmarks/sampling.py --quick
  else
    bench sampling 1200 benchmarks/sampling.py --models="$MODELS"
  fi
  bench loss_memory 1800 benchmarks/loss_memory.py "${Q[@]}"
  bench gkd_step 900 benchmarks/gkd_step.py "${QSTEP[@]}"
  bench gpu_throughput 900 benchmarks/gpu_throughput.py "${Q[@]}"
fi
# Keep the log small enough to come back from a remote machine.
tail -n 3000 "$LOG" > "$LOG.tmp" && mv "$LOG.tmp" "$LOG"
echo "== done in $(( $(date +%s) - START ))s; tables in $OUT"
