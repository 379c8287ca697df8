"""Evaluation during training: validation loss + image↔text retrieval, and zero-shot transfer
through the benchmarks package (one implementation for training-time and standalone evaluation)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from cloob.common.cli import UsageError
from cloob.common.precision import Precision
from cloob.trainer.config import EvalConfig


def load_zeroshot() -> Callable[..., dict[str, Any]]:
    """The benchmarks package's evaluator (benchmarks never imports the trainer)."""
    try:
        from cloob.benchmarks.tasks.zeroshot.evaluate import zeroshot_eval
    except ImportError as err:
        raise UsageError(
            f"zero-shot evaluation needs cloob.benchmarks.tasks.zeroshot.evaluate ({err})"
        ) from None
    return zeroshot_eval


def zeroshot_tasks(cfg: EvalConfig) -> list[tuple[str, str, str, dict[str, str]]]:
    """(task name, benchmarks dataset kind, path, extra kwargs) for every configured task."""
    tasks: list[tuple[str, str, str, dict[str, str]]] = []
    if cfg.imagenet_val:
        tasks.append(("imagenet", "imagenet", cfg.imagenet_val, {}))
    if cfg.imagenet_v2:
        tasks.append(("imagenetv2", "imagenetv2", cfg.imagenet_v2, {}))
    for d in cfg.zeroshot_tasks:
        root = Path(d)
        tasks.append(
            (
                root.name,
                "folder",
                str(root / "images"),
                {
                    "classnames_file": str(root / "classnames.txt"),
                    "templates_file": str(root / "templates.txt"),
                },
            )
        )
    return tasks


def check_zeroshot(cfg: EvalConfig) -> None:
    """Fail before training if a zero-shot task cannot run."""
    tasks = zeroshot_tasks(cfg)
    for name, _, path, extra in tasks:
        for p in (path, *extra.values()):
            if not os.path.exists(p):
                raise UsageError(f"zero-shot task {name}: {p} not found")
    if tasks:
        load_zeroshot()


def run_zeroshot(
    model: nn.Module,
    preprocess: Any,
    tokenizer: Any,
    cfg: EvalConfig,
    *,
    device: torch.device,
    precision: str,
    workers: int,
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    tasks = zeroshot_tasks(cfg)
    if not tasks:
        return metrics
    evaluate = load_zeroshot()
    for name, kind, path, extra in tasks:
        result = evaluate(
            model,
            preprocess,
            tokenizer,
            kind,
            path,
            device=str(device),
            batch_size=cfg.batch_size_eval,
            workers=workers,
            precision=precision,
            **extra,
        )
        for key in ("acc1", "acc5", "mean_per_class_recall", "n_classes"):
            if key in result:
                metrics[f"zeroshot/{name}/{key}"] = float(result[key])
    return metrics


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor
) -> dict[str, float]:
    """Mean/median rank (1-based) and R@1/5/10 of the paired item, both directions."""
    out: dict[str, float] = {}
    sims = image_features @ text_features.t()
    truth = torch.arange(sims.shape[0]).view(-1, 1)
    for name, logits in (("image_to_text", sims), ("text_to_image", sims.t())):
        ranking = torch.argsort(logits, dim=1, descending=True)
        preds = torch.nonzero(ranking == truth)[:, 1].float()
        out[f"{name}_mean_rank"] = preds.mean().item() + 1
        out[f"{name}_median_rank"] = preds.median().floor().item() + 1
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = (preds < k).float().mean().item()
    return out


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    precision: Precision,
) -> dict[str, float]:
    model.eval()
    images, texts, losses, weights = [], [], [], []
    for batch in loader:
        with precision.autocast(device):
            img, txt, inv_tau = model(
                precision.cast_input(batch["image"].to(device)), batch["text"].to(device)
            )
        img, txt = img.float(), txt.float()
        if img.shape[0] > 1:
            losses.append(loss_fn(img, txt, inv_tau.float()).item())
            weights.append(img.shape[0])
        images.append(img.cpu())
        texts.append(txt.cpu())
    model.train()
    if not images:
        return {}
    out = {f"val/{k}": v for k, v in retrieval_metrics(torch.cat(images), torch.cat(texts)).items()}
    if losses:
        out["val/loss"] = sum(v * w for v, w in zip(losses, weights, strict=True)) / sum(weights)
    out["val/n_samples"] = float(sum(x.shape[0] for x in images))
    return out
