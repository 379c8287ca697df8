"""Folders of images → (path, label) lists, class names and templates, with explicit label rules.

torchvision's `ImageFolder` is not used directly: it refuses empty class folders (Birdsnap has
some, and dropping them shifts every later label) and string-sorts integer folders (ImageNet V2's
`0, 1, 10, 100, …`). We build the folder → label map ourselves and let torchvision list the files.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from cloob.benchmarks.data import registry
from cloob.common.cli import UsageError

DEFAULT_TEMPLATE = "a photo of a {}."
SOURCE_FILE = "SOURCE.json"
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"
_WNID = re.compile(r"n\d{8}")
log = logging.getLogger(__name__)


@dataclass
class Task:
    """One zero-shot classification problem, ready to evaluate."""

    name: str
    root: Path  # the folder holding one sub-folder per class
    classnames: list[str]
    templates: list[str]  # each with one `{}`
    samples: list[tuple[str, int]]
    label_rule: str  # how folder names became labels, in words
    headline: str = "acc1"
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classnames)


class ImageList(Dataset):
    """(image tensor, label, index) for a list of (path, label); None for an image that does not
    decode (corrupt, truncated, empty), which `collate_readable` drops and counts."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = read_image(lambda: Image.open(path), path)
        return None if image is None else (self.transform(image), label, i)


def read_image(opener, name: object):
    """`opener()`'s image as RGB, or None (logged) when its bytes do not decode: the one place
    every evaluation decides what an unreadable image is."""
    try:
        with opener() as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises many types for bad bytes
        log.warning("skipping unreadable image %s: %s", name, " ".join(str(err).split())[:200])
        return None


def collate_readable(items: list) -> tuple:
    """A batch of the readable items: (images, labels, indices, number skipped). The collate of
    every evaluation's image loader (zero-shot, features for linear probes, retrieval, analyze)."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0), empty, empty, skipped
    images, labels, indices = default_collate(kept)
    return images, labels, indices, skipped


def read_lines(path: str | Path) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def read_templates(path: str | Path) -> list[str]:
    templates = read_lines(path)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise UsageError(f"{path}: every template needs exactly one '{{}}' (bad: {bad[:1] or 'empty file'})")
    return templates


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def label_map(rule: str, folders: list[str], classnames: list[str]) -> tuple[dict[str, int], str]:
    """folder name → label, and the rule in words. Empty folders keep their label slot; two
    folders that would share a label (`a b` and `a_b`, `1` and `01`) are refused."""
    mapping, words = _label_map(rule, sorted(folders), classnames)
    seen: dict[int, str] = {}
    for folder, label in sorted(mapping.items()):
        if label in seen:
            raise UsageError(f"class folders {seen[label]!r} and {folder!r} both map to label "
                             f"{label} ({words})")
        seen[label] = folder
    return mapping, words


def _label_map(rule: str, folders: list[str], classnames: list[str]) -> tuple[dict[str, int], str]:
    n = len(classnames)
    if not folders:
        raise UsageError("no class folders found")
    if rule == registry.BY_WNID:
        if not all(_WNID.fullmatch(f) for f in folders) or len(folders) != n:
            raise UsageError(f"ImageNet val needs {n} wnid folders (n01440764 …); found {len(folders)}")
        return {f: i for i, f in enumerate(folders)}, "sorted wnid folders"
    if rule == registry.BY_INT:
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
            raise UsageError(f"cannot tell whether the numeric class folders are 0- or 1-based "
                             f"({len(folders)} folders for {n} classes)")
        return _numeric(folders, n, base), "int(folder)" if base == 0 else f"int(folder) - {base}"
    if len(folders) != n:
        raise UsageError(f"{len(folders)} class folders but {n} class names; cannot map by sorted order")
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


def list_samples(root: Path, mapping: dict[str, int]) -> list[tuple[str, int]]:
    return make_dataset(str(root), mapping, extensions=IMG_EXTENSIONS, allow_empty=True)


def build_task(name: str, root: Path, classnames: list[str], templates: list[str], rule: str,
               headline: str = "acc1") -> Task:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    mapping, rule_words = label_map(rule, class_folders(root), classnames)
    samples = list_samples(root, mapping)
    if not samples:
        raise UsageError(f"{root}: no images found")
    return Task(name, root, classnames, templates, samples, rule_words, headline)


def folder_task(path: str | Path, classnames_file: str | Path | None = None,
                templates_file: str | Path | None = None, name: str | None = None) -> Task:
    """An ImageFolder dir; also a task dir holding `images/`, `classnames.txt`, `templates.txt`."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset folder")
    if (path / "images").is_dir() and (path / CLASSNAMES_FILE).is_file():
        classnames_file = classnames_file or path / CLASSNAMES_FILE
        if templates_file is None and (path / TEMPLATES_FILE).is_file():
            templates_file = path / TEMPLATES_FILE
        name = name or path.name
        path = path / "images"
    folders = class_folders(path)
    classnames = read_lines(classnames_file) if classnames_file else [f.replace("_", " ") for f in folders]
    templates = read_templates(templates_file) if templates_file else [DEFAULT_TEMPLATE]
    return build_task(name or path.name, path, classnames, templates, registry.BY_INDEX)


def registry_task(spec: registry.DatasetSpec, path: str | Path) -> Task:
    """A dataset made by `benchmarks fetch`: `path` is `ROOT/<name>` (or ROOT itself)."""
    path = Path(path)
    if not (path / SOURCE_FILE).is_file() and (path / spec.name / SOURCE_FILE).is_file():
        path = path / spec.name
    source = path / SOURCE_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{spec.title} is not prepared under {path}; run: "
                                f"{registry.fetch_command(spec, str(path.parent))}")
    info = json.loads(source.read_text(encoding="utf-8"))
    classnames = read_lines(path / CLASSNAMES_FILE)
    templates = read_templates(path / TEMPLATES_FILE)
    task = build_task(spec.name, path / info["images"], classnames, templates, spec.label_rule,
                      spec.headline)
    task.extra["source"] = {k: info.get(k) for k in ("url", "sha256", "size", "metadata")}
    return task


def resolve_task(dataset: str, path: str | Path, classnames_file: str | Path | None = None,
                 templates_file: str | Path | None = None) -> Task:
    """`dataset` is "folder", "imagenet" (a val/<wnid>/ folder), "imagenetv2" (integer folders) or a
    registry name; a folder fetched by `benchmarks fetch` is recognised by its SOURCE.json."""
    if dataset == "folder":
        return folder_task(path, classnames_file, templates_file)
    spec = registry.get(dataset)
    path = Path(path)
    fetched = (path / SOURCE_FILE).is_file() or (path / spec.name / SOURCE_FILE).is_file()
    if fetched and not (classnames_file or templates_file):
        return registry_task(spec, path)
    if spec.name in ("imagenet", "imagenetv2"):
        from cloob.benchmarks.data.metadata import imagenet_classnames, imagenet_templates

        classnames = read_lines(classnames_file) if classnames_file else imagenet_classnames()
        templates = read_templates(templates_file) if templates_file else imagenet_templates()
        return build_task(spec.name, path, classnames, templates, spec.label_rule, spec.headline)
    if not fetched:
        return registry_task(spec, path)  # raises the 'run benchmarks fetch' message
    task = registry_task(spec, path)
    if classnames_file:
        task.classnames = read_lines(classnames_file)
    if templates_file:
        task.templates = read_templates(templates_file)
    return task
