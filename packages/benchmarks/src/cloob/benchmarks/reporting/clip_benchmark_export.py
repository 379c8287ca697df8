"""Our result records as clip_benchmark result files, so `clip_benchmark build` aggregates them.

clip_benchmark's `eval` writes one JSON per (model, pretrained, dataset, task):
`{"dataset", "model", "pretrained", "task", "metrics", "language"}`, and `build` reads each file's
top-level `metrics` (our `results.json` holds a list of records, hence its `KeyError: 'metrics'`).
Each record becomes such a file under `OUT/clip_benchmark/`, named with clip_benchmark's default
template `{dataset}_{pretrained}_{model}_{language}_{task}.json`, with clip_benchmark's dataset
names
and metric keys, so the rows sit beside clip_benchmark's own:

    clip_benchmark build results/cc/clip_benchmark --output benchmark.csv
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cloob.common.files import write_json

FOLDER = "clip_benchmark"
# our dataset name → clip_benchmark's (Birdsnap and UCF101 have none there: they keep ours)
DATASETS = {
    "imagenet": "imagenet1k",
    "imagenetv2": "imagenetv2",
    "stanford_cars": "cars",
    "flowers102": "flowers",
    "gtsrb": "gtsrb",
    "country211": "country211",
}
# our record["task"] → clip_benchmark's task (embedding-geometry analysis has no counterpart)
TASKS = {
    "zeroshot": "zeroshot_classification",
    "linear_probe": "linear_probe",
    "retrieval": "zeroshot_retrieval",
}


def clip_benchmark_record(record: Mapping[str, Any]) -> dict | None:
    """The clip_benchmark result dict for one of our records; None for a task it does not have."""
    task = TASKS.get(record.get("task", "zeroshot"))
    if task is None:
        return None
    return {
        "dataset": DATASETS.get(record["dataset"], record["dataset"]),
        "model": record["model"],
        "pretrained": _pretrained(record),
        "task": task,
        "metrics": _metrics(task, record["metrics"]),
        "language": "en",
    }


def write_clip_benchmark(records: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """`OUT/clip_benchmark/*.json`, one file per record that has a clip_benchmark task; files of an
    earlier run into the same OUT are removed (`build` reads every .json in the folder)."""
    converted = [c for c in map(clip_benchmark_record, records) if c is not None]
    if not converted:
        return None
    folder = out / FOLDER
    names = set()
    for c in converted:
        name = f"{c['dataset']}_{c['pretrained']}_{c['model']}_{c['language']}_{c['task']}.json"
        names.add(name.replace("/", "_"))
        write_json(folder / name.replace("/", "_"), c)
    for stale in folder.glob("*.json"):
        if stale.name not in names:
            stale.unlink()
    return folder


def _pretrained(record: Mapping[str, Any]) -> str:
    """clip_benchmark's `pretrained`: the open_clip tag when there is one; for our checkpoint files
    the run label (unique among the evaluated files, where two `latest.pt` basenames would
    clash)."""
    tag = (record.get("checkpoint_info") or {}).get("pretrained")
    if tag and not record.get("checkpoint"):
        return str(tag)
    return str(record["label"])


def _metrics(task: str, metrics: dict) -> dict:
    if task == "zeroshot_classification":
        return {k: metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall")}
    if task == "linear_probe":
        return {f"lp_{k}": metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall")}
    # retrieval: clip_benchmark's "text retrieval" ranks captions for an image (our i2t), "image
    # retrieval" images for a caption (our t2i); both are CLIP-paper recall@k (a hit in the top k)
    out = {}
    for k in sorted({int(key.rsplit("_r", 1)[1]) for key in metrics if key.startswith("i2t_r")}):
        out[f"image_retrieval_recall@{k}"] = metrics[f"t2i_r{k}"]
        out[f"text_retrieval_recall@{k}"] = metrics[f"i2t_r{k}"]
    return out
