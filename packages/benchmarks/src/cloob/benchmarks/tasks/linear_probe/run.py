"""`benchmarks linear-probe`: every checkpoint on every dataset; features cached, records written."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloob.benchmarks.data.datasets import ImageList, Task
from cloob.benchmarks.data.probe_data import ProbeData
from cloob.benchmarks.models.checkpoints import LoadedModel, labels_for
from cloob.benchmarks.models.features import (
    FeatureCache,
    Features,
    encode_images,
    image_feature_mode,
)
from cloob.benchmarks.options import EvalOptions
from cloob.benchmarks.reporting import report
from cloob.benchmarks.tasks.linear_probe.protocol import GRID, PROTOCOL, ProbeConfig, probe
from cloob.common.progress import progress_bar


@dataclass
class ProbeRunConfig(EvalOptions):
    out: Path
    features: str = "pre-projection"
    cache_dir: Path | None = None  # None → OUT/.features
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def cache(self) -> FeatureCache:
        return FeatureCache(self.cache_dir or self.out / ".features")


def split_features(loaded: LoadedModel, task: Task, split: str, cfg: ProbeRunConfig) -> Features:
    """Image features of one split, from the cache when (checkpoint, dataset, split, …) match."""
    path = cfg.cache.path(loaded.sha256, task.name.split(":")[0], split, cfg.features, cfg.precision, task.samples)
    found = cfg.cache.load(path)
    if found is not None:
        return found
    feats = encode_images(loaded.model, ImageList(task.samples, loaded.preprocess), batch_size=cfg.batch_size,
                          workers=cfg.workers, device=cfg.device, precision=cfg.precision, progress=cfg.progress,
                          label=f"{task.name.split(':')[0]} {split}")
    cfg.cache.save(path, feats)
    return feats


def run(models: list[LoadedModel], datasets: list[ProbeData], cfg: ProbeRunConfig,
        echo: Callable[[str], None] = print) -> list[dict]:
    records = []
    versions = {**report.software_versions(), "scikit-learn": _sklearn_version()}
    for loaded, label in zip(models, labels_for(models), strict=True):
        loaded.model.to(cfg.device).eval()
        for data in datasets:
            started = time.perf_counter()
            with image_feature_mode(loaded.model, cfg.features) as feature_words:
                splits = {"train": split_features(loaded, data.train, "train", cfg),
                          "test": split_features(loaded, data.test, "test", cfg)}
                if data.val is not None:
                    splits["val"] = split_features(loaded, data.val, "val", cfg)
            record = probe_record(loaded, label, data, splits, feature_words, cfg, versions)
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
            echo(report.accuracy_line(record, f"λ = {record['lambda']:.3g}, {record['n_train']} train / "
                                              f"{record['n_val']} val / {record['n_images']} test images"))
        loaded.model.to("cpu")
    return records


def probe_record(loaded: LoadedModel, label: str, data: ProbeData, splits: dict[str, Features], feature_words: str,
                 cfg: ProbeRunConfig, versions: dict) -> dict:
    pcfg = ProbeConfig(cfg.probe.max_iter, cfg.probe.val_fraction, cfg.probe.seed, data.test.headline)
    train, test, val = splits["train"], splits["test"], splits.get("val")
    with progress_bar(cfg.progress, f"{data.name} λ search", 15) as advance:
        result = probe(train.x, train.labels, test.x, test.labels, pcfg,
                       val.x if val else None, val.labels if val else None, on_step=lambda: advance(1))
    val_words = (f"the dataset's validation split ({data.source.get('val')})" if val else
                 f"a validation split carved from train ({100 * pcfg.val_fraction:g}% of each class, seed {pcfg.seed})")
    return {
        **report.base_record(loaded, label, data.name, cfg, versions, task="linear_probe"),
        "dataset_root": str(data.test.root),
        "n_images": len(test.labels), "n_classes": data.n_classes, "n_train": result.n_train,
        "n_val": result.n_val, "metrics": result.metrics, "headline": data.test.headline,
        "label_rule": data.test.label_rule, "features": cfg.features, "feature_description": feature_words,
        "feature_dim": int(train.x.shape[1]), "lambda": result.lam, "C": 1.0 / result.lam,
        "lambda_search": result.search, "grid": [float(GRID[0]), float(GRID[-1]), len(GRID)],
        "converged": result.converged, "splits": data.source,
        "features_cached": {k: f.cached for k, f in splits.items()},
        "protocol": PROTOCOL.format(feature=cfg.features, max_iter=pcfg.max_iter, val=val_words,
                                    metric=pcfg.select_metric),
    }


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
