"""Why CLOOB stalls on the demo, and which settings start it: a fast, in-memory sweep.

Decodes the cached demo shards once (no augmentation), then trains a model with our factory and
objectives for a fixed number of steps and prints held-out zero-shot accuracy plus the mean cosine
similarity of image/image (xx), caption/caption (yy) and image/caption (xy) features: xx and yy near
1 mean the encoders have collapsed. Not a timing benchmark: the sweeps made with it are in
bench/NOTES.md; each run writes its own last evaluation to bench/results/demo_cloob.json.

    uv run python -m bench.studies.demo_cloob --method cloob --batch-size 64 \\
        --beta 14.3 --inv-tau 14.3 --seed 3
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from bench._common import report
from cloob.benchmarks.data.datasets import folder_task
from cloob.benchmarks.tasks.zeroshot.protocol import build_classifier
from cloob.dataprep.sources.demo import build_demo
from cloob.trainer import losses, models
from cloob.trainer.demo import cache_dir


def load_shards(root: Path, preprocess, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    images, captions = [], []
    for shard in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            parts: dict[str, dict[str, bytes]] = {}
            for member in tar.getmembers():
                key, ext = member.name.rsplit(".", 1)
                file = tar.extractfile(member)
                assert file is not None, f"{shard}: {member.name} is not a file"
                parts.setdefault(key, {})[ext] = file.read()
        for key in sorted(parts):
            blob = next(parts[key][e] for e in ("jpg", "png", "webp") if e in parts[key])
            images.append(preprocess(Image.open(io.BytesIO(blob)).convert("RGB")))
            captions.append(parts[key]["txt"].decode())
    return torch.stack(images), tokenizer(captions)


def load_task(
    task_dir: Path, preprocess
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The demo task exactly as the trainer's evaluation sees it (same labels and templates)."""
    task = folder_task(task_dir)
    xs = [preprocess(Image.open(path).convert("RGB")) for path, _ in task.samples]
    ys = [label for _, label in task.samples]
    return torch.stack(xs), torch.tensor(ys), task.classnames, task.templates


@torch.no_grad()
def zeroshot(model, tokenizer, tasks) -> dict[str, float]:
    out = {}
    for name, (xs, ys, classes, templates) in tasks.items():
        weights = build_classifier(model, tokenizer, classes, templates)
        pred = (F.normalize(model.encode_image(xs), dim=-1) @ weights.t()).argmax(1)
        out[name] = round(100 * pred.eq(ys).float().mean().item(), 1)
    return out


@torch.no_grad()
def similarity(model, images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    fx = F.normalize(model.encode_image(images), dim=-1)
    fy = F.normalize(model.encode_text(texts), dim=-1)
    off = ~torch.eye(len(fx), dtype=torch.bool)
    return {
        "xx": round((fx @ fx.t())[off].mean().item(), 3),
        "yy": round((fy @ fy.t())[off].mean().item(), 3),
        "xy": round((fx @ fy.t()).mean().item(), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="micro-rn")  # the demo's; micro-vit for the first two studies
    p.add_argument("--method", default="cloob")
    p.add_argument("--beta", type=float, default=8.0)
    p.add_argument("--inv-tau", type=float, default=30.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    bundle = models.create(
        a.model, init_inv_tau=a.inv_tau, learnable_inv_tau=False, device=torch.device("cpu")
    )
    model, tokenizer = bundle.model, bundle.tokenizer
    demo = build_demo(cache_dir() / "demo-20000")
    images, texts = load_shards(demo.root, bundle.preprocess_val, tokenizer)
    tasks = {
        name: load_task(t.images_dir.parent, bundle.preprocess_val)
        for name, t in demo.tasks.items()
    }
    loss_fn = losses.create_loss(a.method, a.beta)
    decay = [q for q in model.parameters() if q.requires_grad and q.ndim >= 2]
    rest = [q for q in model.parameters() if q.requires_grad and q.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=a.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    print(vars(a), "init", similarity(model, images[:128], texts[:128]), flush=True)
    gen = torch.Generator().manual_seed(a.seed)
    order, pos, start = torch.randperm(len(images), generator=gen), 0, time.time()
    for step in range(1, a.steps + 1):
        lr = (
            a.lr * step / a.warmup
            if step <= a.warmup
            else 0.5
            * a.lr
            * (1 + math.cos(math.pi * (step - a.warmup) / max(1, a.steps - a.warmup)))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + a.batch_size > len(images):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx, pos = order[pos : pos + a.batch_size], pos + a.batch_size
        fx, fy, scale = model(images[idx], texts[idx])
        loss = loss_fn(fx, fy, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            model.eval()
            accs, cos = (
                zeroshot(model, tokenizer, tasks),
                similarity(model, images[:128], texts[:128]),
            )
            print(
                f"step {step} loss {loss.item():.4f} zero-shot {accs} cos {cos} "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
            model.train()
    report(
        "demo_cloob",
        f"In-memory demo run: {a.method}, {a.model}, {a.batch_size} × {a.steps} steps, "
        f"τ⁻¹ {a.inv_tau}, β {a.beta}, seed {a.seed}: held-out top-1 % and mean cosines",
        ["loss", *accs, *cos],
        [[loss.item(), *accs.values(), *cos.values()]],
        extra={"settings": vars(a)},
    )


if __name__ == "__main__":
    main()
