#!/usr/bin/env bash
# Issue 6 GPU benchmark on one NVIDIA H100/H200: training img/s and MFU of the ddpm-cifar10 net in bf16
# (eager and torch.compile), DDIM sampling throughput, peak memory at batch 128; one summary table.
#
#   bash benchmarks/gpu.sh            # on the GPU machine (under 8 minutes)
#   bash benchmarks/gpu.sh --cpu      # smoke mode: every part on the CPU with a small net
#
# Needs only a Python with torch and numpy (the package runs from src/ via PYTHONPATH: nothing is
# built or downloaded). Wheels of anything missing can be placed in .whl/ and are installed offline.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch" 2>/dev/null && [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python  # CI's virtual environment, when the default python has no torch
fi
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/ddpm-bench-site .whl/*.whl
  export PYTHONPATH="/tmp/ddpm-bench-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch, numpy" || { echo "gpu.sh needs a Python with torch and numpy ($PYTHON)" >&2; exit 2; }
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
fi
# 470 s keeps the whole run (start-up included) under 8 minutes; the script prints its rows as it goes.
exec timeout 470 "$PYTHON" benchmarks/gpu_bench.py "$@"
