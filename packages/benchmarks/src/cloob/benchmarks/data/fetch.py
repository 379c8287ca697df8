"""Download, verify and unpack the benchmark datasets into `ROOT/<name>/`.

A prepared dataset folder holds the class folders (as unpacked), `classnames.txt`, `templates.txt`
and `SOURCE.json` (url, size, sha256 of the archive, label rule, metadata sources). Everything is
built in `ROOT/.tmp-<name>-*` and renamed into place, so a failed or interrupted fetch leaves the
previous good copy untouched. Archives are downloaded to `ROOT/.downloads/` (resumable `.part`).

Checksums: the metadata files are pinned (metadata.PINNED). Dataset archives have no published
checksums, so the first download's sha256 is recorded and later downloads must match it. A
`--checksums FILE` (sha256sum format: `<hex>  <filename>`) adds or overrides expected values — this
is how a mirror serving other bytes (e.g. test stand-ins) is verified instead of trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloob.benchmarks.data import metadata, registry
from cloob.benchmarks.data.extract import extract
from cloob.benchmarks.data.folders import (
    CLASSNAMES_FILE,
    SOURCE_FILE,
    TEMPLATES_FILE,
    class_folders,
    list_samples,
)
from cloob.common.cli import UsageError
from cloob.common.download import download
from cloob.common.files import atomic_open, sha256_file, write_json

MIRROR_ENV = "CLOOB_BENCHMARKS_MIRROR"
CHECKSUMS_ENV = "CLOOB_BENCHMARKS_CHECKSUMS"
DOWNLOADS = ".downloads"
METADATA_DIR = ".metadata"


class ChecksumMismatch(UsageError):
    pass


@dataclass
class FetchConfig:
    root: Path
    base_url: str | None = None  # mirror holding <archive> and the metadata files side by side
    checksums: dict[str, str] = field(default_factory=dict)  # filename → expected sha256
    force: bool = False  # re-download even if present (still verified against the record)
    keep_archives: bool = False
    progress: bool = True
    retries: int = 3
    timeout: float = 60.0

    def url_for(self, filename: str, default: str) -> str:
        base = self.base_url or os.environ.get(MIRROR_ENV)
        return f"{base.rstrip('/')}/{filename}" if base else default


def read_checksums(path: str | Path | None) -> dict[str, str]:
    """sha256sum-format lines → {filename: hex}; `path` None → the env var's file, if set."""
    path = path or os.environ.get(CHECKSUMS_ENV)
    if not path:
        return {}
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise UsageError(f"{path}:{n}: expected '<sha256>  <filename>'")
        out[parts[1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
    return out


@dataclass
class FetchResult:
    name: str
    status: str  # "fetched" | "present"
    n_images: int
    path: Path

    @property
    def line(self) -> str:  # what `benchmarks fetch` says about it
        return f"{self.name}: {self.status}, {self.n_images} images → {self.path}"


# ---------------------------------------------------------------- the command


def fetch_test_sets(
    names: list[str] | None,
    cfg: FetchConfig,
    imagenet: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """`benchmarks fetch [NAMES]`: each named dataset (default: all) made present under cfg.root,
    one line each. ImageNet is prepared from `imagenet` (a local copy): without it a named
    ImageNet is an error, an unnamed one is skipped."""
    for spec in registry.select(names):
        if spec.name != "imagenet":
            result = fetch_dataset(spec, cfg)
        elif imagenet is not None:
            result = prepare_imagenet(imagenet, cfg)
        elif (cfg.root / spec.name / SOURCE_FILE).is_file():
            say("imagenet: present")
            continue
        elif registry.named(names):
            raise UsageError(
                "ImageNet is not downloadable: pass --imagenet PATH (a val/<wnid>/ folder, "
                "or the raw val tar + devkit)"
            )
        else:
            say("[yellow]imagenet: skipped[/] (pass --imagenet PATH to prepare it)")
            continue
        say(result.line)


# ---------------------------------------------------------------- metadata


def fetch_metadata(cfg: FetchConfig) -> dict[str, Path]:
    """The pinned class-name/template files in `ROOT/.metadata/`, each checked against its
    sha256."""
    out = {}
    for pin in metadata.PINNED.values():
        expected = cfg.checksums.get(pin.filename, pin.sha256)
        target = cfg.root / METADATA_DIR / pin.filename
        if not (target.is_file() and sha256_file(target) == expected):
            _download_verified(
                cfg.url_for(pin.filename, pin.url),
                target,
                expected,
                cfg,
                hint="pinned" if pin.filename not in cfg.checksums else "from --checksums",
            )
        out[pin.filename] = target
    return out


def _download_verified(
    url: str,
    target: Path,
    expected: str | None,
    cfg: FetchConfig,
    hint: str,
    previous: Path | None = None,
) -> str:
    """Download to a side name, check sha256, then rename onto `target` (kept intact on
    mismatch)."""
    incoming = target.with_name(target.name + ".incoming")
    download(url, incoming, retries=cfg.retries, timeout=cfg.timeout, progress=cfg.progress)
    got = sha256_file(incoming)
    if expected and got != expected:
        incoming.unlink()
        previous = previous or target
        keep = f"; the previous copy {previous} is kept" if previous.exists() else ""
        raise ChecksumMismatch(
            f"checksum mismatch for {target.name} from {url}: sha256 {got}, expected {expected} "
            f"({hint}){keep}. A mirror serving different bytes needs --checksums FILE"
        )
    os.replace(incoming, target)
    return got


def class_lists(
    spec: registry.DatasetSpec, files: dict[str, Path]
) -> tuple[list[str], list[str], dict]:
    """Class names + templates for a zip dataset (CLOOB's lists: the zips' folder order)."""
    cloob = metadata.load_cloob(files["zeroshot_data.py"])
    clip = metadata.load_clip(files["prompts.md"])
    if spec.metadata_key not in cloob:
        raise UsageError(f"zeroshot_data.py has no {spec.metadata_key}_classnames/_templates")
    chosen = cloob[spec.metadata_key]
    other = clip.get(spec.clip_section)
    notes = {
        "classnames": "zeroshot_data.py",
        "templates": "zeroshot_data.py",
        "templates_match_clip_prompts_md": bool(other and other.templates == chosen.templates),
        "classnames_match_clip_order": bool(other and other.classnames == chosen.classnames),
    }
    return chosen.classnames, chosen.templates, notes


# ---------------------------------------------------------------- datasets


def fetch_dataset(
    spec: registry.DatasetSpec, cfg: FetchConfig, files: dict[str, Path] | None = None
) -> FetchResult:
    """Make `ROOT/<name>` present and verified; download only what is missing."""
    url, archive_name = spec.url, spec.archive  # archive_name is None exactly when url is
    if url is None or archive_name is None:
        raise UsageError(
            f"{spec.title} is not downloadable; run: {registry.fetch_command(spec, str(cfg.root))}"
        )
    dest = cfg.root / spec.name
    record = _record(dest)
    if record and not cfg.force:
        return FetchResult(spec.name, "present", verify_present(spec, dest, record, cfg), dest)
    files = files or fetch_metadata(cfg)
    archive = cfg.root / DOWNLOADS / archive_name
    expected = cfg.checksums.get(archive_name) or (record or {}).get("sha256")
    hint = "from --checksums" if archive_name in cfg.checksums else "recorded at the first download"
    if archive.is_file() and expected and sha256_file(archive) == expected:
        got = expected  # a kept archive that still matches: no need to download again
    else:
        got = _download_verified(cfg.url_for(archive_name, url), archive, expected, cfg, hint, dest)
    size = archive.stat().st_size
    if spec.metadata == "cloob":
        classnames, templates, notes = class_lists(spec, files)
    else:
        classnames, templates = metadata.imagenet_classnames(), metadata.imagenet_templates()
        notes = {
            "classnames": "open_clip IMAGENET_CLASSNAMES",
            "templates": "open_clip OPENAI_IMAGENET_TEMPLATES",
        }
    with _staging(cfg.root, spec.name) as tmp:
        extract(archive, tmp)
        info = describe(spec, tmp, classnames)
        _write_lists(tmp, classnames, templates)
        write_json(
            tmp / SOURCE_FILE,
            {
                "name": spec.name,
                "title": spec.title,
                "url": cfg.url_for(archive_name, url),
                "archive": archive_name,
                "size": size,
                "sha256": got,
                "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **info,
                "metadata": _metadata_record(files, notes),
            },
        )
        _swap_into_place(tmp, dest)
    if not cfg.keep_archives:
        archive.unlink(missing_ok=True)
    return FetchResult(spec.name, "fetched", info["n_images"], dest)


def describe(
    spec: registry.DatasetSpec, folder: Path, classnames: list[str], images: Path | None = None
) -> dict:
    """Find the class-folder root, check the label rule works, count images and empty folders."""
    images = images or find_class_root(folder)
    folders = class_folders(images)
    mapping, rule = registry.label_map(spec.label_rule, folders, classnames)
    samples = list_samples(images, mapping)
    used = {label for _, label in samples}
    return {
        "images": images.relative_to(folder).as_posix(),
        "n_images": len(samples),
        "n_classes": len(classnames),
        "n_class_folders": len(folders),
        "label_rule": rule,
        "empty_class_folders": sorted(f for f in folders if mapping[f] not in used),
    }


def find_class_root(folder: Path) -> Path:
    """Descend through single-folder wrappers (`birdsnap/`), preferring a `test/` split."""
    current = folder
    while True:
        subdirs = class_folders(current)
        if "test" in subdirs:
            current = current / "test"
        elif len(subdirs) == 1 and not any(
            p.is_file() for p in current.iterdir() if p.suffix != ".json"
        ):
            current = current / subdirs[0]
        else:
            return current


def verify_present(spec: registry.DatasetSpec, dest: Path, record: dict, cfg: FetchConfig) -> int:
    """A present dataset must still hold the recorded number of images (and a kept archive its
    sha)."""
    classnames = (dest / CLASSNAMES_FILE).read_text(encoding="utf-8").splitlines()
    now = describe(spec, dest, [c for c in classnames if c], dest / record["images"])
    if now["n_images"] != record["n_images"]:
        raise UsageError(
            f"{dest}: {now['n_images']} images but {record['n_images']} were unpacked; "
            f"re-fetch with: benchmarks fetch {spec.name} --root {cfg.root} --force"
        )
    archive = cfg.root / DOWNLOADS / (spec.archive or "")
    if archive.is_file() and sha256_file(archive) != record["sha256"]:
        raise ChecksumMismatch(
            f"{archive}: sha256 differs from the one recorded in {dest / SOURCE_FILE}"
        )
    return now["n_images"]


def _record(dest: Path) -> dict | None:
    source = dest / SOURCE_FILE
    return json.loads(source.read_text(encoding="utf-8")) if source.is_file() else None


def _write_lists(folder: Path, classnames: list[str], templates: list[str]) -> None:
    with atomic_open(folder / CLASSNAMES_FILE, encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in classnames))
    with atomic_open(folder / TEMPLATES_FILE, encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in templates))


def _metadata_record(files: dict[str, Path] | None, notes: dict) -> dict:
    sources = {
        name: {"url": pin.url, "sha256": sha256_file(files[name])}
        for name, pin in metadata.PINNED.items()
        if files and name in files
    }
    return {**notes, "files": sources}


class _staging:  # a context manager that reads like a function
    """A temp folder beside the destination; removed unless it was renamed into place."""

    def __init__(self, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        # mkdir, not mkdtemp: the folder is renamed into place, and mkdtemp's 0700 would keep
        # other users of a shared filesystem out of the dataset; mkdir honours the umask.
        while True:
            self.path = root / f".tmp-{name}-{secrets.token_hex(4)}"
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                continue

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename `tmp` onto `dest`; an existing `dest` is moved aside first and removed last."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- ImageNet from user files


def prepare_imagenet(source: str | Path, cfg: FetchConfig) -> FetchResult:
    """`source`: a `val/<wnid>/` folder (linked, not copied), or the raw val tar + devkit."""
    source = Path(source).expanduser().resolve()
    spec = registry.get("imagenet")
    dest = cfg.root / spec.name
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such ImageNet file or folder")
    origin: dict[str, str | int]
    with _staging(cfg.root, spec.name) as tmp:
        if source.is_dir() and not _raw_files(source):
            val = source / "val" if (source / "val").is_dir() else source
            os.symlink(val, tmp / "val", target_is_directory=True)
            origin = {"source": str(val), "kind": "folder (linked)"}
        else:
            tar, devkit = _raw_files(source) or (None, None)
            if not (tar and devkit):
                raise UsageError(
                    f"{source}: expected a val/<wnid>/ folder, or ILSVRC2012_img_val.tar "
                    "with ILSVRC2012_devkit_t12.tar.gz beside it"
                )
            from cloob.benchmarks.data.imagenet_raw import unpack_val

            unpack_val(tar, devkit, tmp / "val")
            origin = {
                "source": str(tar),
                "devkit": str(devkit),
                "kind": "raw tar + devkit",
                "sha256": sha256_file(tar),
                "size": tar.stat().st_size,
            }
        classnames = metadata.imagenet_classnames()
        info = describe(spec, tmp, classnames, tmp / "val")
        _write_lists(tmp, classnames, metadata.imagenet_templates())
        write_json(
            tmp / SOURCE_FILE,
            {
                "name": spec.name,
                "title": spec.title,
                "url": None,
                **origin,
                "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **info,
                "metadata": {
                    "classnames": "open_clip IMAGENET_CLASSNAMES",
                    "templates": "open_clip OPENAI_IMAGENET_TEMPLATES",
                },
            },
        )
        _swap_into_place(tmp, dest)
    return FetchResult(spec.name, "fetched", info["n_images"], dest)


def _raw_files(source: Path) -> tuple[Path, Path] | None:
    folder = source if source.is_dir() else source.parent
    tar = source if source.is_file() else folder / "ILSVRC2012_img_val.tar"
    devkit = folder / "ILSVRC2012_devkit_t12.tar.gz"
    return (tar, devkit) if tar.is_file() and devkit.is_file() else None
