"""`benchmarks linear-probe`: every checkpoint on every dataset; features cached, records
written."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloob.benchmarks.data.images import ImageList, ImageSet
from cloob.benchmarks.models.checkpoints import LoadedModel, labels_for
from cloob.benchmarks.models.features import (
    FeatureCache,
    Features,
    encode_images,
    image_feature_mode,
)
from cloob.benchmarks.options import EvalOptions
from cloob.benchmarks.reporting import report, stats
from cloob.benchmarks.reporting.run_files import RunFiles
from cloob.benchmarks.tasks.linear_probe.protocol import (
    GRID,
    PROTOCOL,
    ProbeConfig,
    check_labels,
    probe,
)
from cloob.common.progress import progress_bar

if TYPE_CHECKING:  # the CLI builds the ProbeData (data.probe_data); the run only reads it
    from cloob.benchmarks.data.probe_data import ProbeData


@dataclass
class ProbeRunConfig(EvalOptions):
    out: Path
    features: str = "pre-projection"
    cache_dir: Path | None = None  # None → OUT/.features
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def cache(self) -> FeatureCache:
        return FeatureCache(self.cache_dir or self.out / ".features")


def split_features(
    loaded: LoadedModel,
    task: ImageSet,
    split: str,
    cfg: ProbeRunConfig,
    files: RunFiles | None = None,
) -> Features:
    """Image features of one split, from the cache when (checkpoint, dataset, split, …) match."""
    path = cfg.cache.path(
        loaded.sha256, task.name.split(":")[0], split, cfg.features, cfg.precision, task.samples
    )
    found = cfg.cache.load(path)
    if found is not None:
        return found
    feats = encode_images(
        loaded.model,
        ImageList(task.samples, loaded.preprocess),
        cfg,
        label=f"{task.name.split(':')[0]} {split}",
    )
    if path is not None and cfg.cache.save(path, feats) and files is not None:
        files.wrote(path)
    return feats


def run(
    models: list[LoadedModel],
    datasets: list[ProbeData],
    cfg: ProbeRunConfig,
    echo: Callable[[str], None] = print,
) -> list[report.ProbeRecord]:
    """Every model on every dataset; a run that fails leaves OUT (and its feature cache) as
    found."""
    for data in datasets:  # before any image is read: labels no probe can be fitted on
        check_labels(
            np.array([label for _, label in data.train.samples]),
            cfg.probe.val_fraction,
            data.val is not None,
            data.name,
        )
    folder = cfg.cache.folder
    assert folder is not None  # ProbeRunConfig always caches: cache_dir or OUT/.features
    files = RunFiles(folder)
    with files.undone_on_failure():
        return _run(models, datasets, cfg, echo, files)


def _run(
    models: list[LoadedModel],
    datasets: list[ProbeData],
    cfg: ProbeRunConfig,
    echo: Callable[[str], None],
    files: RunFiles,
) -> list[report.ProbeRecord]:
    records = []
    versions = {**report.software_versions(), "scikit-learn": _sklearn_version()}
    for loaded, label in zip(models, labels_for(models), strict=True):
        loaded.model.to(cfg.device).eval()
        for data in datasets:
            started = time.perf_counter()
            with image_feature_mode(loaded.model, cfg.features) as feature_words:
                splits = {
                    "train": split_features(loaded, data.train, "train", cfg, files),
                    "test": split_features(loaded, data.test, "test", cfg, files),
                }
                if data.val is not None:
                    splits["val"] = split_features(loaded, data.val, "val", cfg, files)
            record = probe_record(loaded, label, data, splits, feature_words, cfg, versions)
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
            skipped = ", ".join(f"{n} {k}" for k, n in record["skipped_by_split"].items() if n)
            echo(
                report.accuracy_line(
                    record,
                    f"λ = {record['lambda']:.3g}, {record['n_train']} train / "
                    f"{record['n_val']} val / {record['n_images']} test images"
                    + (f"; unreadable images skipped: {skipped}" if skipped else ""),
                )
            )
            if not record["converged"]:
                echo(f"[yellow]warning: {unconverged_words(record, cfg.probe.max_iter)}[/]")
        loaded.model.to("cpu")
    return records


def probe_record(
    loaded: LoadedModel,
    label: str,
    data: ProbeData,
    splits: dict[str, Features],
    feature_words: str,
    cfg: ProbeRunConfig,
    versions: dict,
) -> report.ProbeRecord:
    pcfg = ProbeConfig(
        cfg.probe.max_iter, cfg.probe.val_fraction, cfg.probe.seed, data.test.headline
    )
    train, test, val = splits["train"], splits["test"], splits.get("val")
    with progress_bar(cfg.progress, f"{data.name} λ search", 15) as advance:
        result = probe(
            train.x,
            train.labels,
            test.x,
            test.labels,
            pcfg,
            val.x if val else None,
            val.labels if val else None,
            on_step=lambda: advance(1),
            name=f"{data.name} (readable train images)",
        )
    val_words = (
        f"the dataset's validation split ({data.source.get('val')})"
        if val
        else (
            f"a validation split carved from train ({100 * pcfg.val_fraction:g}% of each class, "
            f"seed {pcfg.seed})"
        )
    )
    record: report.ProbeRecord = {
        **report.base_record(loaded, label, data.name, cfg, versions, task="linear_probe"),
        "dataset_root": str(data.test.root),
        "n_images": len(test.labels),
        "n_skipped": test.skipped,
        "skipped_by_split": {k: f.skipped for k, f in splits.items()},
        "n_classes": data.n_classes,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "metrics": result.metrics,
        "headline": data.test.headline,
        "label_rule": data.test.label_rule,
        "features": cfg.features,
        "feature_description": feature_words,
        "feature_dim": int(train.x.shape[1]),
        "lambda": result.lam,
        "C": 1.0 / result.lam,
        "lambda_search": result.search,
        "grid": [float(GRID[0]), float(GRID[-1]), len(GRID)],
        "converged": result.converged,
        "iterations": result.iterations,
        "unconverged_search_fits": result.unconverged_search_fits,
        "splits": data.source,
        "features_cached": {k: f.cached for k, f in splits.items()},
        "protocol": PROTOCOL.format(
            feature=cfg.features, max_iter=pcfg.max_iter, val=val_words, metric=pcfg.select_metric
        ),
    }
    if result.topk is not None:  # the test images in feature order: the same for every checkpoint
        items = stats.classification_items(np.arange(len(test.labels)), test.labels, result.topk)
        stats.attach_intervals(record, items, cfg.bootstrap)
        record[stats.ITEMS] = items
    return record


def unconverged_words(record: Mapping[str, Any], max_iter: int) -> str:
    """The one warning line for a (checkpoint, dataset) whose final fit did not converge."""
    return (
        f"{record['label']} · {record['dataset']}: the final L-BFGS fit (λ = "
        f"{record['lambda']:.3g}) stopped "
        f"at --max-iter {max_iter} before converging, so its accuracy can move with tiny feature "
        "changes; "
        f"raise --max-iter (marked {report.UNCONVERGED} in the table)"
    )


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
