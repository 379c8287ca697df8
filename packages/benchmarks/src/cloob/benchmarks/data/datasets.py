"""Folders of images → `ImageSet`s (path, label lists, class names and templates), with explicit
label rules.

torchvision's `ImageFolder` is not used directly: it refuses empty class folders (Birdsnap has
some, and dropping them shifts every later label) and string-sorts integer folders (ImageNet V2's
`0, 1, 10, 100, …`). We build the folder → label map ourselves (`registry.label_map`) and let
torchvision list the files (`folders.list_samples`).
"""

from __future__ import annotations

import json
from pathlib import Path

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.folders import (
    CLASSNAMES_FILE,
    DEFAULT_TEMPLATE,
    SOURCE_FILE,
    TEMPLATES_FILE,
    class_folders,
    list_samples,
    read_lines,
    read_templates,
)
from cloob.benchmarks.data.images import ImageSet
from cloob.common.cli import UsageError


def build_task(
    name: str,
    root: Path,
    classnames: list[str],
    templates: list[str],
    rule: str,
    headline: str = "acc1",
) -> ImageSet:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    mapping, rule_words = registry.label_map(rule, class_folders(root), classnames)
    samples = list_samples(root, mapping)
    if not samples:
        raise UsageError(f"{root}: no images found")
    return ImageSet(name, root, classnames, templates, samples, rule_words, headline)


def folder_task(
    path: str | Path,
    classnames_file: str | Path | None = None,
    templates_file: str | Path | None = None,
    name: str | None = None,
) -> ImageSet:
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
    classnames = (
        read_lines(classnames_file) if classnames_file else [f.replace("_", " ") for f in folders]
    )
    templates = read_templates(templates_file) if templates_file else [DEFAULT_TEMPLATE]
    return build_task(name or path.name, path, classnames, templates, registry.BY_INDEX)


def registry_task(spec: registry.DatasetSpec, path: str | Path) -> ImageSet:
    """A dataset made by `benchmarks fetch`: `path` is `ROOT/<name>` (or ROOT itself)."""
    path = Path(path)
    if not (path / SOURCE_FILE).is_file() and (path / spec.name / SOURCE_FILE).is_file():
        path = path / spec.name
    source = path / SOURCE_FILE
    if not source.is_file():
        raise FileNotFoundError(
            f"{spec.title} is not prepared under {path}; run: "
            f"{registry.fetch_command(spec, str(path.parent))}"
        )
    info = json.loads(source.read_text(encoding="utf-8"))
    classnames = read_lines(path / CLASSNAMES_FILE)
    templates = read_templates(path / TEMPLATES_FILE)
    task = build_task(
        spec.name, path / info["images"], classnames, templates, spec.label_rule, spec.headline
    )
    task.extra["source"] = {k: info.get(k) for k in ("url", "sha256", "size", "metadata")}
    return task


def resolve_task(
    dataset: str,
    path: str | Path,
    classnames_file: str | Path | None = None,
    templates_file: str | Path | None = None,
) -> ImageSet:
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
