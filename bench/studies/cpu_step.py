"""CPU training-step throughput of a tiny config for clip vs cloob (model + loss + AdamW, no data).

    uv run python -m bench.studies.cpu_step [--model tiny-vit] [--batch 32] [--steps 10]

Methods alternate round by round so a noisy shared machine affects both alike. Writes
bench/results/cpu_step.json."""

from __future__ import annotations

import argparse
import time

import torch

from bench._common import report
from cloob.trainer import losses, models
from cloob.trainer.optim import make_optimizer, param_groups

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="tiny-vit")
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--rounds", type=int, default=3)
args = parser.parse_args()

torch.manual_seed(0)
setups = {}
for method in ("clip", "cloob"):
    b = models.create(
        args.model, init_inv_tau=30, learnable_inv_tau=False, device=torch.device("cpu")
    )
    loss_fn = losses.create_loss(method)
    opt = make_optimizer(param_groups(b.model, loss_fn, 0.1), 5e-4, (0.9, 0.98), 1e-6)
    size = b.cfg["vision_cfg"]["image_size"]
    images = torch.randn(args.batch, 3, size, size)
    texts = b.tokenizer(
        ["a large red circle in the top left on a striped grey background"] * args.batch
    )
    setups[method] = (b.model, loss_fn, opt, images, texts)


def run(method: str, steps: int) -> float:
    model, loss_fn, opt, images, texts = setups[method]
    start = time.perf_counter()
    for _ in range(steps):
        img, txt, inv_tau = model(images, texts)
        loss = loss_fn(img, txt, inv_tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * args.batch / (time.perf_counter() - start)


for method in setups:
    run(method, 2)  # warm-up
rates: dict[str, list[float]] = {m: [] for m in setups}
for _ in range(args.rounds):
    for method in setups:
        rates[method].append(run(method, args.steps))
threads = torch.get_num_threads()
report(
    "cpu_step",
    f"{args.model} training step without data (model + objective + AdamW), batch {args.batch}, "
    f"{threads} intra-op thread(s), best of {args.rounds} rounds",
    ["method", "samples/s (best)", "samples/s per round", "step time ÷ clip"],
    [
        [m, max(r), ", ".join(f"{x:.1f}" for x in r), max(rates["clip"]) / max(r)]
        for m, r in rates.items()
    ],
    extra={"settings": {**vars(args), "threads": threads}},
)
