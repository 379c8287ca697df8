"""What a prepared dataset folder holds and how it is listed: `SOURCE.json` (what `benchmarks
fetch` recorded), `classnames.txt`, `templates.txt`, one sub-folder per class; the linear-probe
splits beside it in `<name>-probe/`. Imports nothing else of the package: fetching, the train
splits and the task builders all read folders the same way.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from cloob.common.cli import UsageError

DEFAULT_TEMPLATE = "a photo of a {}."
SOURCE_FILE = "SOURCE.json"
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"
PROBE_SUFFIX = "-probe"


def read_lines(path: str | Path) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def read_templates(path: str | Path) -> list[str]:
    templates = read_lines(path)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise UsageError(
            f"{path}: every template needs exactly one '{{}}' (bad: {bad[:1] or 'empty file'})"
        )
    return templates


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_samples(root: Path, mapping: dict[str, int]) -> list[tuple[str, int]]:
    return make_dataset(str(root), mapping, extensions=IMG_EXTENSIONS, allow_empty=True)


def probe_folder(root: Path, name: str) -> Path:
    return root / f"{name}{PROBE_SUFFIX}"
