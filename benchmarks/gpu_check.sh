#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with a GPU (e.g. through the device tool):
#   bash benchmarks/gpu_check.sh
# Installs the package if needed, runs the CUDA tests, then the benchmark on the GPU with the
# compile and bf16 variants, and prints everything to stdout (and to $OUT/gpu_check.log if set).
set -uo pipefail
cd "$(dirname "$0")/.."
log=${OUT:-/tmp}/gpu_check.log
{
  python3 -c "import mnist37" 2>/dev/null || python3 -m pip install -q -e ".[dev]"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  python3 -m pytest -q -m cuda tests
  python3 benchmarks/train_speed.py --device cuda --variants compile bf16 --rounds 3
} 2>&1 | tee "$log"
