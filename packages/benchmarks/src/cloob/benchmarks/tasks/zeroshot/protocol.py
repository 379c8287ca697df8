"""CLIP's zero-shot protocol: one implementation for the CLI and for evaluation during training
(`zeroshot_eval` in evaluate.py: a dataset by name, then `evaluate_task`).

Classifier: every template filled with every class name goes through the text tower (in large
batches, not class by class); each embedding is L2-normalised, averaged over templates and
normalised again. Images are classified by the largest cosine similarity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cloob.benchmarks.data.images import ImageList, ImageSet, ReadableBatches, collate_readable
from cloob.benchmarks.options import EvalOptions
from cloob.common.cli import UsageError
from cloob.common.precision import resolve
from cloob.common.text import encode_text

TEXT_BATCH = 512  # texts per text-tower forward: all templates of many classes at once
TOPK = 5


@dataclass
class Predictions:
    labels: np.ndarray  # (N,) int
    topk_index: np.ndarray  # (N, k) class indices, best first
    topk_score: np.ndarray  # (N, k) cosine similarities
    seconds: float  # wall time of the image pass
    index: np.ndarray | None = (
        None  # (N,) positions in the task's samples (unreadable ones left out)
    )
    skipped: int = 0  # images that did not decode

    @property
    def n(self) -> int:
        return len(self.labels)


@torch.no_grad()
def build_classifier(
    model,
    tokenizer,
    classnames: list[str],
    templates: list[str],
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    text_batch: int = TEXT_BATCH,
) -> torch.Tensor:
    """(n_classes, dim) unit vectors: mean of the normalised template embeddings, renormalised."""
    texts = [t.format(c) for c in classnames for t in templates]
    chunks = []
    with resolve(precision, device).autocast(device):
        for start in range(0, len(texts), text_batch):
            tokens = tokenizer(texts[start : start + text_batch]).to(device)
            # only up to the chunk's longest text, where that is exact (see cloob.common.text)
            chunks.append(F.normalize(encode_text(model, tokens).float(), dim=-1))
    per_text = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
    return F.normalize(per_text.mean(dim=1), dim=-1)


@torch.no_grad()
def classify(
    model,
    classifier: torch.Tensor,
    loader: DataLoader,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    label: str = "",
) -> Predictions:
    """Top-k classes and cosine scores for every image the loader yields."""
    k = min(TOPK, classifier.shape[0])
    classifier = classifier.to(device)
    prec = resolve(precision, device)
    labels, index, score, kept = [], [], [], []
    started = time.perf_counter()
    batches = ReadableBatches(loader, progress, label or "images")
    for images, targets, positions in batches:
        with prec.autocast(device):
            features = model.encode_image(prec.cast_input(images.to(device)))
        logits = F.normalize(features.float(), dim=-1) @ classifier.T
        top = logits.topk(k, dim=1)
        labels.append(targets.numpy())
        index.append(top.indices.cpu().numpy())
        score.append(top.values.cpu().numpy())
        kept.append(positions.numpy())
    skipped = batches.skipped
    if not labels:
        raise UsageError(f"{label or 'dataset'}: none of its {skipped} images could be read")
    return Predictions(
        np.concatenate(labels),
        np.concatenate(index),
        np.concatenate(score),
        time.perf_counter() - started,
        np.concatenate(kept),
        skipped,
    )


def metrics(pred: Predictions) -> dict[str, float]:
    """top-1, top-5 (top-k with k = min(5, classes)) and recall averaged over the classes
    present."""
    hit = pred.topk_index == pred.labels[:, None]
    recall = [hit[pred.labels == c, 0].mean() for c in np.unique(pred.labels)]
    return {
        "acc1": float(hit[:, 0].mean()),
        "acc5": float(hit[:, :TOPK].any(axis=1).mean()),
        "mean_per_class_recall": float(np.mean(recall)),
    }


def loader_for(task: ImageSet, preprocess, opts: EvalOptions) -> DataLoader:
    return DataLoader(
        ImageList(task.samples, preprocess),
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.workers,
        pin_memory=torch.device(opts.device).type == "cuda",
        collate_fn=collate_readable,
    )


@dataclass
class Evaluation:
    task: ImageSet
    predictions: Predictions
    metrics: dict[str, float]

    def summary(self) -> dict:
        return {
            **self.metrics,
            "n_images": self.predictions.n,
            "n_skipped": self.predictions.skipped,
            "n_classes": self.task.n_classes,
            "headline": self.task.headline,
            "label_rule": self.task.label_rule,
            "n_templates": len(self.task.templates),
            "images_per_s": self.predictions.n / max(self.predictions.seconds, 1e-9),
        }


def evaluate_task(
    model,
    preprocess,
    tokenizer,
    task: ImageSet,
    opts: EvalOptions,
    *,
    classifier: torch.Tensor | None = None,
) -> Evaluation:
    """Evaluate `model` on `task`; pass a cached `classifier` to skip the text tower."""
    was_training = model.training
    model.eval()  # the trainer calls us mid-training: restore its mode afterwards
    try:
        if classifier is None:
            classifier = build_classifier(
                model,
                tokenizer,
                task.classnames,
                task.templates,
                device=opts.device,
                precision=opts.precision,
            )
        _check_dims(classifier, task)
        pred = classify(
            model,
            classifier,
            loader_for(task, preprocess, opts),
            device=opts.device,
            precision=opts.precision,
            progress=opts.progress,
            label=task.name,
        )
    finally:
        model.train(was_training)
    return Evaluation(task, pred, metrics(pred))


def _check_dims(classifier: torch.Tensor, task: ImageSet) -> None:
    if classifier.shape[0] != task.n_classes:
        raise UsageError(
            f"{task.name}: classifier has {classifier.shape[0]} classes, dataset {task.n_classes}"
        )
    top = max(label for _, label in task.samples)
    if top >= task.n_classes:
        raise UsageError(f"{task.name}: label {top} but only {task.n_classes} class names")
