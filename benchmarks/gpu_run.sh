#!/usr/bin/env bash
# The benchmark suite on a GPU machine that has JAX (CUDA), torch,
# transformers, chex, optax and orbax but not the rest of gkdrl's
# dependencies, and no network. Run from the repository root:
#
#   bash benchmarks/gpu_run.sh OUT_DIR [--quick] [--budget SECONDS]
#
# The wheels come from the (git-ignored) .whl/ folder, prepared on a machine
# with PyPI access by
#
#   for p in dm-haiku==0.0.17 jmp==0.0.4 dm-tree==0.1.10 gguf==0.19.0 \
#            datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 trl==1.16.0; do
#     python3 -m pip download --no-deps --only-binary=:all: \
#       --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl "$p"
#   done
#
# (2.5 MB). gkdrl imports haiku (with jmp, dm-tree), gguf and datasets at
# import time; trl is only for the TRL rows of gkd_step. gkdrl itself is not
# installed: it runs from the repository root on PYTHONPATH.
set -u
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_run.sh OUT_DIR [run_all.sh options]}"; shift
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl 2>&1 | grep -v "^\s*$" | tail -n 3
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=python3 bash benchmarks/run_all.sh --out "$OUT" "$@"
