"""`benchmarks zeroshot`: every checkpoint on every dataset, classifiers cached, records written."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.datasets import folder_task, registry_task
from cloob.benchmarks.data.images import ImageSet
from cloob.benchmarks.models.checkpoints import LoadedModel, labels_for
from cloob.benchmarks.options import EvalOptions
from cloob.benchmarks.reporting import report, stats
from cloob.benchmarks.reporting.run_files import RunFiles
from cloob.benchmarks.tasks.zeroshot.protocol import build_classifier, evaluate_task

log = logging.getLogger(__name__)


@dataclass
class ZeroshotRunConfig(EvalOptions):
    """One `benchmarks zeroshot` run: where results go and how the models are evaluated."""

    out: Path
    save_predictions: bool = False
    compare_paper: str | None = None
    cache: bool = (
        True  # classifiers on disk under OUT/.classifiers, per (checkpoint, dataset, texts)
    )
    notes: dict = field(default_factory=dict)


def tasks_for(
    names: list[str] | None,
    root: Path | None,
    dataset_dir: Path | None,
    classnames: Path | None,
    templates: Path | None,
    warn: Callable[[str], None] = print,
) -> list[ImageSet]:
    """Registry datasets under `root` (with `all`, missing ones are skipped with the fetch command)
    plus an optional custom ImageFolder."""
    tasks: list[ImageSet] = []
    if names or dataset_dir is None:
        explicit = bool(names) and names != ["all"]
        for spec in registry.select(names):
            present = root is not None and (root / spec.name / "SOURCE.json").is_file()
            if present or explicit:
                if root is None:
                    raise FileNotFoundError(f"--root is needed for {spec.name}")
                tasks.append(registry_task(spec, root / spec.name))
            else:
                warn(
                    f"skipping {spec.name}: not prepared; run: "
                    f"{registry.fetch_command(spec, str(root))}"
                )
    if dataset_dir is not None:
        tasks.append(folder_task(dataset_dir, classnames, templates))
    if not tasks:
        raise FileNotFoundError(
            f"no datasets to evaluate under {root}; run: benchmarks fetch all --root {root}"
        )
    return tasks


def run(
    models: list[LoadedModel],
    tasks: list[ImageSet],
    cfg: ZeroshotRunConfig,
    echo: Callable[[str], None] = print,
) -> list[report.ZeroshotRecord]:
    """Every model on every task; a run that fails leaves cfg.out as it found it."""
    files = RunFiles(cfg.out / ".classifiers", cfg.out / "predictions")
    with files.undone_on_failure():
        return _run(models, tasks, cfg, echo, files)


def _run(
    models: list[LoadedModel],
    tasks: list[ImageSet],
    cfg: ZeroshotRunConfig,
    echo: Callable[[str], None],
    files: RunFiles,
) -> list[report.ZeroshotRecord]:
    records = []
    versions = report.software_versions()
    for loaded, label in zip(models, labels_for(models), strict=True):
        loaded.model.to(cfg.device)
        for task in tasks:
            classifier = cached_classifier(loaded, task, cfg, files)
            result = evaluate_task(
                loaded.model,
                loaded.preprocess,
                loaded.tokenizer,
                task,
                cfg,
                classifier=classifier,
            )
            record = make_record(loaded, label, task, result, cfg, versions)
            pred = result.predictions
            items = stats.classification_items(
                pred.index if pred.index is not None else np.arange(pred.n),
                pred.labels,
                pred.topk_index,
            )
            stats.attach_intervals(record, items, cfg.bootstrap)
            record[stats.ITEMS] = items  # for the paired tests; the report takes it out
            if cfg.save_predictions:
                target = cfg.out / "predictions" / f"{_slug(label)}__{task.name}.parquet"
                report.write_predictions(
                    report.predictions_frame(task.root, task.samples, result.predictions), target
                )
                files.wrote(target)
                record["predictions"] = target.relative_to(cfg.out).as_posix()
            records.append(record)
            echo(
                report.accuracy_line(
                    record, f"{record['n_images']} images, {record['images_per_s']:.1f}/s"
                )
            )
        loaded.model.to("cpu")
    return records


def cached_classifier(
    loaded: LoadedModel, task: ImageSet, cfg: ZeroshotRunConfig, files: RunFiles | None = None
) -> torch.Tensor:
    """The text side depends only on (weights, class names, templates, precision): cache it."""

    def build() -> torch.Tensor:
        return build_classifier(
            loaded.model,
            loaded.tokenizer,
            task.classnames,
            task.templates,
            device=cfg.device,
            precision=cfg.precision,
        ).cpu()

    if not (cfg.cache and loaded.sha256):
        return build()
    texts = hashlib.sha256(
        "\n".join([*task.classnames, "\x00", *task.templates]).encode()
    ).hexdigest()
    path = (
        cfg.out
        / ".classifiers"
        / f"{loaded.sha256[:16]}-{task.name}-{texts[:12]}-{cfg.precision}.pt"
    )
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    classifier = build()
    from cloob.common.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(classifier, tmp)
    if files is not None:
        files.wrote(path)
    return classifier


def make_record(
    loaded: LoadedModel, label: str, task: ImageSet, result, cfg: ZeroshotRunConfig, versions: dict
) -> report.ZeroshotRecord:
    summary = result.summary()
    return {
        **report.base_record(loaded, label, task.name, cfg, versions),
        "dataset_root": str(task.root),
        "n_images": summary["n_images"],
        "n_skipped": summary["n_skipped"],
        "n_classes": summary["n_classes"],
        "metrics": {m: summary[m] for m in report.METRICS},
        "headline": task.headline,
        "label_rule": task.label_rule,
        "templates": task.templates,
        "images_per_s": summary["images_per_s"],
        "predictions": None,
        "source": task.extra.get("source"),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
