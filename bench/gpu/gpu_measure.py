"""The card's side of the GPU check, one JSON line on stdout: the device, its measured dense bf16
matmul rate (an N³ matmul, N = 8192 on a GPU) and the model's training FLOPs per sample.

    python3 -m gpu_measure --model RN50-quickgelu --matmul-n 8192   # with bench/gpu/ on PYTHONPATH

Training FLOPs = 3 × the forward's (image tower at its input size + text tower at its full context,
counted by torch's FlopCounterMode on one sample): the nominal count MFU is usually quoted with (our
trainer trims text padding, so it does less work than this count says).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def matmul_tflops(n: int, device: torch.device, repeat: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e12


def train_flops_per_sample(model_name: str) -> float:
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from cloob.trainer.models import register_configs

    register_configs()
    model = open_clip.create_model(model_name)
    cfg = open_clip.get_model_config(model_name)
    size = cfg["vision_cfg"]["image_size"]
    size = size if isinstance(size, int) else size[0]
    context = cfg["text_cfg"].get("context_length", 77)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size), torch.zeros(1, context, dtype=torch.long))
    return 3.0 * counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="open_clip model name")
    parser.add_argument("--matmul-n", type=int, default=8192)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    out = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "matmul_n": args.matmul_n,
        "matmul_bf16_tflops": matmul_tflops(args.matmul_n, device),
        "train_flops_per_sample": train_flops_per_sample(args.model),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
