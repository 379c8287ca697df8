"""The splits a linear probe needs: train (+ a provided validation split) and test, same label
space.

Registry datasets read their train splits from `ROOT/<name>-probe/` (made by `benchmarks fetch
--linear-probe`, see train_splits.py); the test split is the probe folder's own when the official
source ships one (Country211, Flowers102, GTSRB), else the zero-shot test set `ROOT/<name>/`.
ImageNet V2 is probed with ImageNet's train split. Any ImageFolder pair works too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.datasets import build_task, registry_task
from cloob.benchmarks.data.folders import (
    CLASSNAMES_FILE,
    DEFAULT_TEMPLATE,
    SOURCE_FILE,
    class_folders,
    probe_folder,
    read_lines,
)
from cloob.benchmarks.data.images import ImageSet
from cloob.benchmarks.data.registry import TRAIN_SOURCES, train_command
from cloob.common.cli import UsageError


@dataclass
class ProbeData:
    name: str
    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None  # the dataset's own validation split, if it has one
    source: dict = field(default_factory=dict)  # which folders the splits came from, in words

    @property
    def n_classes(self) -> int:
        return self.test.n_classes


def registry_probe(spec: registry.DatasetSpec, root: Path) -> ProbeData:
    """The probe splits of a registry dataset under `root` (see the module docstring)."""
    source = TRAIN_SOURCES[spec.name]
    folder = probe_folder(root, source.train_from or spec.name)
    info_file = folder / SOURCE_FILE
    if not info_file.is_file():
        why = "" if source.kind == "download" else f" ({source.note})"
        raise UsageError(
            f"{spec.name} has no train split under {root}{why}; run: "
            f"{train_command(spec, str(root))}"
        )
    info = json.loads(info_file.read_text(encoding="utf-8"))
    classnames = read_lines(folder / CLASSNAMES_FILE)
    rule = registry.get(source.train_from or spec.name).label_rule

    def split(key: str) -> ImageSet:
        # named after the dataset that owns the split: ImageNet V2's probe reuses ImageNet's cached
        # features
        return build_task(
            f"{source.train_from or spec.name}:{key}",
            folder / info["splits"][key],
            classnames,
            [DEFAULT_TEMPLATE],
            rule,
            spec.headline,
        )

    train = split("train")
    val = split("val") if "val" in info["splits"] else None
    if "test" in info["splits"] and source.train_from is None:
        test, test_from = split("test"), f"{folder.name}/{info['splits']['test']}"
    else:
        test, test_from = (
            registry_task(spec, root / spec.name),
            f"{spec.name} (the zero-shot test set)",
        )
    test.name = spec.name
    words = {
        "train": f"{folder.name}/{info['splits']['train']}",
        "test": test_from,
        "val": f"{folder.name}/{info['splits']['val']}" if val else None,
        "train_origin": info.get("origin"),
    }
    return checked(ProbeData(spec.name, train, test, val, words))


def folder_probe(train_dir: Path, test_dir: Path, name: str | None = None) -> ProbeData:
    """An ImageFolder pair: classes are the train folder's sub-folders; test must have the same
    ones."""
    for split, path in (("train", train_dir), ("test", test_dir)):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: no such {split} folder")
    train_dir, test_dir = Path(train_dir), Path(test_dir)
    train_classes, test_classes = class_folders(train_dir), class_folders(test_dir)
    if len(train_classes) != len(test_classes):
        raise UsageError(
            f"class-count mismatch: {len(train_classes)} class folders in train ({train_dir}), "
            f"{len(test_classes)} in test ({test_dir})"
        )
    if train_classes != test_classes:
        differ = sorted(set(train_classes) ^ set(test_classes))
        raise UsageError(f"train and test class folders differ: {differ[:3]}")
    name = name or (
        train_dir.parent.name if train_dir.parent == test_dir.parent else train_dir.name
    )
    classnames = [c.replace("_", " ") for c in train_classes]
    train = build_task(
        f"{name}:train", train_dir, classnames, [DEFAULT_TEMPLATE], registry.BY_INDEX
    )
    test = build_task(name, test_dir, classnames, [DEFAULT_TEMPLATE], registry.BY_INDEX)
    return checked(
        ProbeData(
            name, train, test, None, {"train": str(train_dir), "test": str(test_dir), "val": None}
        )
    )


def checked(data: ProbeData) -> ProbeData:
    if data.train.n_classes != data.test.n_classes:
        raise UsageError(
            f"{data.name}: class-count mismatch between train ({data.train.n_classes}) "
            f"and test ({data.test.n_classes})"
        )
    return data


def probes_for(
    names: list[str] | None,
    root: Path | None,
    train_dir: Path | None,
    test_dir: Path | None,
    name: str | None = None,
) -> list[ProbeData]:
    """Registry datasets (explicit names; `all` = those whose train split is present) and/or a
    pair."""
    if (train_dir is None) != (test_dir is None):
        raise UsageError("--train-dir and --test-dir go together")
    out: list[ProbeData] = []
    if names:
        if root is None:
            raise UsageError("--root is needed with --datasets")
        explicit = names != ["all"]
        for spec in registry.select(names):
            source = TRAIN_SOURCES[spec.name]
            present = (probe_folder(root, source.train_from or spec.name) / SOURCE_FILE).is_file()
            if explicit or present:
                out.append(registry_probe(spec, root))
    if train_dir is not None and test_dir is not None:  # both or neither (checked above)
        out.append(folder_probe(train_dir, test_dir, name))
    if not out:
        raise UsageError(
            "nothing to probe: give --datasets NAMES --root ROOT, or --train-dir and --test-dir"
        )
    return out
