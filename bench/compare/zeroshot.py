"""Zero-shot evaluation speed and accuracy: `benchmarks zeroshot`'s code vs clip_benchmark.

Both evaluate the same checkpoint on the same generated ImageFolder with the same transform,
batch size and worker count, in this one process run. Accuracy must be identical.
Run: `uv run python -m bench.compare.zeroshot [--model RN50-quickgelu] [--images 256]`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
from torchvision.datasets import ImageFolder

from bench._common import report
from cloob.benchmarks.data.datasets import folder_task
from cloob.benchmarks.models.checkpoints import load_checkpoint
from cloob.benchmarks.options import in_process
from cloob.benchmarks.tasks.zeroshot.protocol import evaluate_task
from cloob.dataprep.synthetic import SHAPES, random_scene, render

TEMPLATES = [
    "a photo of a {}.",
    "a drawing of a {}.",
    "a {} shape.",
    "a picture of a {}.",
    "a {} on a background.",
    "a small {}.",
    "a large {}.",
    "an image of a {}.",
]


def make_folder(root: Path, n: int, size: int) -> None:
    rng = random.Random(0)
    for i in range(n):
        scene = random_scene(rng)
        out = root / scene.shape
        out.mkdir(parents=True, exist_ok=True)
        render(scene, rng, size).save(out / f"{i:05d}.png")


def ours(
    ckpt: Path, model_name: str, data: Path, templates: Path, batch: int, workers: int
) -> tuple[float, float, torch.Tensor]:
    t0 = time.perf_counter()
    # a plain open_clip checkpoint: the user names its architecture, as `--model` does
    loaded = load_checkpoint(ckpt, model=model_name)
    task = folder_task(data, templates_file=templates)
    opts = in_process(batch_size=batch, workers=workers)
    ev = evaluate_task(loaded.model, loaded.preprocess, loaded.tokenizer, task, opts)
    return (
        time.perf_counter() - t0,
        ev.metrics["acc1"],
        torch.from_numpy(ev.predictions.topk_index[:, 0]),
    )


def clip_benchmark(ckpt: Path, model_name: str, data: Path, batch: int, workers: int):
    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(ckpt))
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    ds = ImageFolder(str(data), transform=preprocess)
    classnames = [c.replace("_", " ") for c in ds.classes]
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
    classifier = zero_shot_classifier(
        model, tokenizer, classnames, [t.replace("{}", "{c}") for t in TEMPLATES], "cpu", amp=False
    )
    logits, target = run_classification(model, classifier, loader, "cpu", amp=False)
    pred = logits.argmax(dim=1)
    return time.perf_counter() - t0, (pred == target).float().mean().item(), pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="RN50-quickgelu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    tmp: str | Path  # the folder's name, then the folder
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = open_clip.create_model(args.model)
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple) else size
        ckpt = tmp / "model.pt"
        torch.save({"state_dict": model.state_dict()}, ckpt)  # a plain open_clip checkpoint
        make_folder(tmp / "images", args.images, size)
        (tmp / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
        rows, preds = [], {}
        for name, fn in (
            (
                "clip_benchmark",
                lambda: clip_benchmark(
                    ckpt, args.model, tmp / "images", args.batch_size, args.workers
                ),
            ),
            (
                "ours",
                lambda: ours(
                    ckpt,
                    args.model,
                    tmp / "images",
                    tmp / "templates.txt",
                    args.batch_size,
                    args.workers,
                ),
            ),
        ):
            seconds, acc1, pred = fn()
            preds[name] = pred
            rows.append([name, args.images, seconds, args.images / seconds, acc1])
    same = bool(torch.equal(preds["ours"].cpu(), preds["clip_benchmark"].cpu()))
    ratio = rows[1][3] / rows[0][3]
    rows = [r + [r[3] / rows[0][3]] for r in rows]
    report(
        "zeroshot",
        f"Zero-shot eval, {args.model} fp32, {len(SHAPES)} classes × {len(TEMPLATES)} "
        f"templates, batch {args.batch_size}, {args.workers} workers (identical predictions: "
        f"{same})",
        ["tool", "images", "seconds", "images/s", "top-1", "× clip_benchmark"],
        rows,
        {"identical_predictions": same, "speedup": ratio, "args": vars(args)},
    )
    if not same:
        raise SystemExit("predictions differ between the two tools")


if __name__ == "__main__":
    main()
