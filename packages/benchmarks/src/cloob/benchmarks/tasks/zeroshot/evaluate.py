"""`zeroshot_eval`: zero-shot accuracy of a model on a dataset named as the CLI names it, the entry
point the trainer calls during training. Beside the protocol rather than in it, so that the
protocol needs only the image-reading leaf and not the dataset registry.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cloob.benchmarks.data.datasets import resolve_task
from cloob.benchmarks.options import in_process
from cloob.benchmarks.tasks.zeroshot.protocol import evaluate_task


def zeroshot_eval(
    model,
    preprocess,
    tokenizer,
    dataset: str,
    path: str | Path,
    *,
    classnames_file: str | Path | None = None,
    templates_file: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    precision: str = "fp32",
) -> dict:
    """Zero-shot top-1/top-5/mean-per-class recall (fractions) of an open_clip model on one dataset.

    `dataset`: "imagenet" (path = a `val/<wnid>/` folder), "imagenetv2" (integer class folders),
    "folder" (an ImageFolder dir, or a task dir with images/ + classnames.txt + templates.txt), or
    a registry name with path = the folder `benchmarks fetch` made. Returns acc1, acc5,
    mean_per_class_recall, n_images, n_classes and a few descriptive fields.
    """
    task = resolve_task(dataset, path, classnames_file, templates_file)
    opts = in_process(
        device=str(device), batch_size=batch_size, workers=workers, precision=precision
    )
    result = evaluate_task(model, preprocess, tokenizer, task, opts)
    return {"dataset": task.name, **result.summary()}
