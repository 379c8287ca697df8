#!/usr/bin/env bash
# GPU acceptance: the README's first command, RN50 CLIP/CLOOB throughput (amp, amp_bf16,
# --torchcompile, --local-loss on several GPUs), OpenCLIP's trainer on the same config, MFU.
# Writes bench/results/gpu_check.json. See bench/gpu_check.py for what each step measures.
#
#   bash bench/gpu_check.sh              # one GPU, ≤ 8 minutes on an H100/H200
#   bash bench/gpu_check.sh --dry-run    # the commands, without a GPU
#   NPROC=8 BATCH=256 STEPS=30 WORKERS=12 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv run python bench/gpu_check.py "$@"
