"""What `benchmarks list` shows: which datasets are present under a root, and where each one's
linear-probe train split comes from. Rows of text (rich markup for present/missing)."""

from __future__ import annotations

import json
from pathlib import Path

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.folders import SOURCE_FILE, probe_folder

TEST_SET_COLUMNS = ("name", "dataset", "present", "images", "classes", "label rule", "headline")
TRAIN_SPLIT_COLUMNS = ("name", "train split", "source")


def test_sets(root: Path) -> list[tuple[str, ...]]:
    """One row per registry dataset: present under `root` or not, its counts and label rule."""
    rows: list[tuple[str, ...]] = []
    for spec in registry.DATASETS.values():
        info = _source(root / spec.name) or {}
        rows.append(
            (
                spec.name,
                spec.title,
                "[green]yes[/]" if info else "[dim]no[/]",
                str(info.get("n_images", "")),
                str(info.get("n_classes", spec.n_classes)),
                info.get("label_rule", spec.label_rule),
                spec.headline,
            )
        )
    return rows


def train_splits(root: Path) -> list[tuple[str, ...]]:
    """One row per registry dataset: its linear-probe train split (present, downloadable, taken
    from another dataset, or a local folder to link) and where it comes from."""
    rows: list[tuple[str, ...]] = []
    for spec in registry.DATASETS.values():
        source = registry.TRAIN_SOURCES[spec.name]
        folder = probe_folder(root, source.train_from or spec.name)
        rows.append((spec.name, _train_split_words(source, folder), source.note))
    return rows


def _train_split_words(source: registry.TrainSource, folder: Path) -> str:
    info = _source(folder)
    if info is not None:
        return f"[green]yes[/] ({info.get('kind')}, {info.get('n_images')} images)"
    if source.kind == "download":
        return "fetch --linear-probe"
    if source.train_from:
        return f"from {source.train_from}"
    return "[yellow]local folder needed[/] (--train-dir)"


def _source(folder: Path) -> dict | None:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
