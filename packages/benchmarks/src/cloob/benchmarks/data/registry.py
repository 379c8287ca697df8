"""The CLOOB paper's eight zero-shot datasets: where their test and linear-probe train splits come
from, and how class folders become labels (`label_map`). Imports nothing else of the package."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloob.common.cli import UsageError

CLOOB_ZIPS = "https://ml.jku.at/research/CLOOB/downloads/zeroshot_datasets"
IMAGENETV2_URL = (
    "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
    "imagenetv2-matched-frequency.tar.gz"
)

# Label rules, named so results can say which one produced the labels.
BY_INDEX = "index"  # numeric folders → int(name) (0- or 1-based, checked); else sorted names
BY_INT = "int(folder)"  # ImageNet V2: the folder name *is* the ImageNet class index
BY_WNID = "sorted-wnid"  # ImageNet val: the standard order is the sorted wnids
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # registry key and folder name under --root
    title: str  # as the paper's tables write it
    n_classes: int
    url: str | None  # None: prepared from user-supplied files (ImageNet)
    label_rule: str
    headline: (
        str  # the metric to quote: CLOOB reports top-1 everywhere, CLIP mean-per-class on Flowers
    )
    metadata: (
        str  # where class names/templates come from: "cloob" (zeroshot_data.py) or "open_clip"
    )
    metadata_key: str = ""  # variable prefix in zeroshot_data.py / section in CLIP's prompts.md
    clip_section: str = ""

    @property
    def archive(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


def _zip(name: str, title: str, n: int, section: str, headline: str = "acc1") -> DatasetSpec:
    return DatasetSpec(
        name, title, n, f"{CLOOB_ZIPS}/{name}.zip", BY_INDEX, headline, "cloob", name, section
    )


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in [
        _zip("birdsnap", "Birdsnap", 500, "Birdsnap"),
        _zip("country211", "Country211", 211, "Country211"),
        _zip("flowers102", "Flowers102", 102, "Flowers102"),
        _zip("gtsrb", "GTSRB", 43, "GTSRB"),
        _zip("stanford_cars", "Stanford Cars", 196, "StanfordCars"),
        _zip("ucf101", "UCF101", 101, "UCF101"),
        DatasetSpec("imagenet", "ImageNet", 1000, None, BY_WNID, "acc1", "open_clip"),
        DatasetSpec("imagenetv2", "ImageNet V2", 1000, IMAGENETV2_URL, BY_INT, "acc1", "open_clip"),
    ]
}


def get(name: str) -> DatasetSpec:
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = {
        "cars": "stanford_cars",
        "stanfordcars": "stanford_cars",
        "flowers": "flowers102",
        "imagenet_v2": "imagenetv2",
        "imagenet2": "imagenetv2",
    }.get(key, key)
    if key not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def select(names: list[str] | None) -> list[DatasetSpec]:
    """`None`, `[]` or `["all"]` → all eight; names may also be comma-separated."""
    flat = [n for item in names or [] for n in item.split(",") if n.strip()]
    if not flat or flat == ["all"]:
        return list(DATASETS.values())
    return [get(n.strip()) for n in flat]


def named(names: list[str] | None) -> bool:
    """Whether the user named datasets (rather than `all` or nothing): a named one that cannot be
    had is an error, while `all` skips it with a word."""
    return bool(names) and names != ["all"]


def fetch_command(spec: DatasetSpec, root: str) -> str:
    """The command that makes `spec` present under `root` (for 'missing dataset' messages)."""
    if spec.name == "imagenet":
        return f"benchmarks fetch imagenet --root {root} --imagenet PATH"
    return f"benchmarks fetch {spec.name} --root {root}"


# ---------------------------------------------------------------- linear-probe train splits


@dataclass(frozen=True)
class TrainSource:
    """Where a dataset's train split comes from."""

    kind: str  # "download": `fetch --linear-probe` gets it; "local": the user links a folder
    train_from: str | None = None  # probe on another dataset's train split (ImageNet V2 → ImageNet)
    note: str = ""


TRAIN_SOURCES: dict[str, TrainSource] = {
    "country211": TrainSource("download", note="official OpenAI archive: train/valid/test"),
    "flowers102": TrainSource("download", note="official VGG images + setid.mat train/val/test"),
    "gtsrb": TrainSource("download", note="official training set + final test with its CSV labels"),
    "imagenet": TrainSource("local", note="your ImageNet train/<wnid>/ folder"),
    "imagenetv2": TrainSource("local", train_from="imagenet", note="ImageNet's train split"),
    "birdsnap": TrainSource("local", note="no stable public train source: your folder"),
    "stanford_cars": TrainSource("local", note="no stable public train source: your folder"),
    "ucf101": TrainSource(
        "local", note="no stable public train source (video frames): your folder"
    ),
}


def train_command(spec: DatasetSpec, root: str) -> str:
    """The command that makes `spec`'s train split present under `root`."""
    source = TRAIN_SOURCES[spec.name]
    name = source.train_from or spec.name
    if source.kind == "download":
        return f"benchmarks fetch {name} --root {root} --linear-probe"
    return f"benchmarks fetch {name} --root {root} --train-dir PATH"


# ---------------------------------------------------------------- folders → labels


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def label_map(rule: str, folders: list[str], classnames: list[str]) -> tuple[dict[str, int], str]:
    """folder name → label, and the rule in words. Empty folders keep their label slot; two
    folders that would share a label (`a b` and `a_b`, `1` and `01`) are refused."""
    mapping, words = _label_map(rule, sorted(folders), classnames)
    seen: dict[int, str] = {}
    for folder, label in sorted(mapping.items()):
        if label in seen:
            raise UsageError(
                f"class folders {seen[label]!r} and {folder!r} both map to label {label} ({words})"
            )
        seen[label] = folder
    return mapping, words


def _label_map(rule: str, folders: list[str], classnames: list[str]) -> tuple[dict[str, int], str]:
    n = len(classnames)
    if not folders:
        raise UsageError("no class folders found")
    if rule == BY_WNID:
        if not all(_WNID.fullmatch(f) for f in folders) or len(folders) != n:
            raise UsageError(
                f"ImageNet val needs {n} wnid folders (n01440764 …); found {len(folders)}"
            )
        return {f: i for i, f in enumerate(folders)}, "sorted wnid folders"
    if rule == BY_INT:
        return _numeric(folders, n, base=0), "int(folder)"
    by_name = {_norm(c): i for i, c in enumerate(classnames)}
    if all(_norm(f) in by_name for f in folders):
        return {f: by_name[_norm(f)] for f in folders}, "folder name = class name"
    if all(f.isdigit() for f in folders):
        values = [int(f) for f in folders]
        if len(folders) == n or 0 in values:
            base = min(values) if len(folders) == n else 0
        elif n in values:
            base = 1
        else:
            raise UsageError(
                f"cannot tell whether the numeric class folders are 0- or 1-based "
                f"({len(folders)} folders for {n} classes)"
            )
        return _numeric(folders, n, base), "int(folder)" if base == 0 else f"int(folder) - {base}"
    if len(folders) != n:
        raise UsageError(
            f"{len(folders)} class folders but {n} class names; cannot map by sorted order"
        )
    return {f: i for i, f in enumerate(folders)}, "sorted folder names"


def _numeric(folders: list[str], n: int, base: int) -> dict[str, int]:
    try:
        mapping = {f: int(f) - base for f in folders}
    except ValueError:
        raise UsageError(f"class folders must be integers; found {folders[:3]}") from None
    outside = [f for f, v in mapping.items() if not 0 <= v < n]
    if outside:
        raise UsageError(f"class folder {outside[0]!r} is outside 0..{n - 1}")
    return mapping
