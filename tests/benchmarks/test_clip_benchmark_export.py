"""Our records, exported for clip_benchmark, aggregate with clip_benchmark's own `build` code."""

from __future__ import annotations

import argparse

import pandas as pd
from clip_benchmark.cli import main_build

from cloob.benchmarks.reporting.clip_benchmark_export import write_clip_benchmark

CLASSIFICATION = {"acc1": 0.5, "acc5": 0.75, "mean_per_class_recall": 0.4}
RECALLS = {
    "i2t_r1": 0.1,
    "i2t_r5": 0.2,
    "i2t_r10": 0.3,
    "t2i_r1": 0.4,
    "t2i_r5": 0.5,
    "t2i_r10": 0.6,
    "mean_recall": 0.35,
}


def record(label: str, dataset: str, metrics: dict, task: str | None = None, **extra) -> dict:
    base = {
        "label": label,
        "model": "RN50",
        "dataset": dataset,
        "metrics": metrics,
        "checkpoint": f"runs/{label}.pt",
        "checkpoint_info": {},
        **extra,
    }
    return base if task is None else {**base, "task": task}  # zero-shot records carry no task


def build(folder, tmp_path) -> pd.DataFrame:
    """clip_benchmark's `build` subcommand, as its CLI calls it."""
    csv = tmp_path / "benchmark.csv"
    main_build(argparse.Namespace(files=[str(folder)], output=str(csv)))
    return pd.read_csv(csv)


def test_build_reads_every_task(tmp_path):
    records = [
        record("clip/latest", "stanford_cars", CLASSIFICATION),
        record("cloob/latest", "ucf101", CLASSIFICATION),
        record(
            "openai",
            "imagenet",
            CLASSIFICATION,
            checkpoint=None,
            checkpoint_info={"pretrained": "openai"},
        ),
        record("clip/latest", "flowers102", CLASSIFICATION, task="linear_probe"),
        record("clip/latest", "coco", RECALLS, task="retrieval"),
        record("clip/latest", "demo", {"alignment": 1.0}, task="analyze"),  # no clip_benchmark task
    ]
    table = build(write_clip_benchmark(records, tmp_path / "out"), tmp_path).set_index(
        ["dataset", "pretrained", "task"]
    )
    assert len(table) == 5
    cars = table.loc[("cars", "clip/latest", "zeroshot_classification")]
    assert (cars.acc1, cars.acc5, cars.mean_per_class_recall) == (0.5, 0.75, 0.4)
    assert cars.model_fullname == "RN50 clip/latest" and cars.language == "en"
    assert ("ucf101", "cloob/latest", "zeroshot_classification") in table.index  # no name there
    assert ("imagenet1k", "openai", "zeroshot_classification") in table.index
    assert table.loc[("flowers", "clip/latest", "linear_probe")].lp_acc1 == 0.5
    coco = table.loc[("coco", "clip/latest", "zeroshot_retrieval")]
    assert coco["text_retrieval_recall@5"] == 0.2 and coco["image_retrieval_recall@5"] == 0.5


def test_a_second_run_into_the_same_out_replaces_the_files(tmp_path):
    write_clip_benchmark([record("old", "gtsrb", CLASSIFICATION)], tmp_path / "out")
    folder = write_clip_benchmark([record("new", "gtsrb", CLASSIFICATION)], tmp_path / "out")
    assert list(build(folder, tmp_path).pretrained) == ["new"]
