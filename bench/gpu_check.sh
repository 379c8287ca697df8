#!/usr/bin/env bash
# GPU throughput check: RN50 at 224 px, batch 256 per GPU, amp_bf16, 50 steps each for
# --method clip and --method cloob on synthetic data; prints samples/s of both and their ratio.
#
#   bash bench/gpu_check.sh                 # one GPU
#   NPROC=8 bash bench/gpu_check.sh         # torchrun over 8 GPUs (batch 256 per GPU)
#
# samples/s is the mean of the logged windows after the first (start-up and cudnn autotuning
# excluded). It includes data loading: keep WORKERS high enough that the GPU is the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-1}
WORKERS=${WORKERS:-12}
STEPS=${STEPS:-50}
BATCH=${BATCH:-256}
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXX)}

for method in clip cloob; do
  uv run torchrun --standalone --nproc-per-node "$NPROC" -m -- cloob.trainer.cli run \
    --model RN50 --method "$method" --dataset-type synthetic \
    --train-num-samples $((BATCH * NPROC * (STEPS + 1))) --batch-size "$BATCH" \
    --precision amp_bf16 --max-steps "$STEPS" --warmup 10 --workers "$WORKERS" \
    --logs "$OUT" --name "$method" --save-frequency 0 --report-to none \
    --log-every-n-steps 10 --no-progress
done

uv run python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

def rate(method):
    rows = [json.loads(l) for l in (Path(sys.argv[1]) / method / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
    return sum(rates) / len(rates)

clip, cloob = rate("clip"), rate("cloob")
print(f"clip  {clip:9.1f} samples/s")
print(f"cloob {cloob:9.1f} samples/s")
print(f"cloob/clip throughput ratio {cloob / clip:.3f}")
PY
