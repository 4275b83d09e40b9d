#!/usr/bin/env bash
# The GPU check: training throughput (fp32 vs bf16 + channels_last, and compiled)
# and peak memory for the reference CNN and ResNet-50 at 256 px, next to the
# reference's own loop; then the loader benchmark on the GPU. Needs a CUDA
# machine; finishes in under 4 minutes on one H100/H200-class GPU.
# Usage: bash tests/benchmarks/gpu_check.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONUNBUFFERED=1
timeout 170 "$PY" tests/benchmarks/gpu_train.py --device cuda --steps 30 --batch 96
timeout 50 "$PY" tests/benchmarks/loader.py --device cuda --paintings 200 --batches 10
