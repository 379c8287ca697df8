"""`benchmarks fetch --linear-probe`: the train (and official val/test) splits into
`ROOT/<name>-probe/`.

Official sources whose files have been stable for years (the md5s torchvision pins for them are
checked; a mirror serving other bytes needs `--checksums`, as for the zero-shot archives):
- Country211: OpenAI's `country211.tgz` with `country211/{train,valid,test}/<ISO code>/`;
- Flowers102: VGG's `102flowers.tgz` (flat `jpg/image_NNNNN.jpg`), `imagelabels.mat` (1-based
  labels) and `setid.mat` (`trnid`, `valid`, `tstid`: 1-based image numbers);
- GTSRB: the training zip (`GTSRB/Training/<5-digit class>/*.ppm`), the final test images
  (flat `GTSRB/Final_Test/Images/*.ppm`) and `GT-final_test.csv` (`;`-separated, `ClassId`).
Flat sources are sorted into `<split>/<class index>/` folders, every class folder made even when
empty, so the label rules of registry.py apply unchanged. Other datasets link a local folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloob.benchmarks.data import metadata, registry
from cloob.benchmarks.data.extract import extract
from cloob.benchmarks.data.fetch import (
    DOWNLOADS,
    ChecksumMismatch,
    FetchConfig,
    FetchResult,
    _download_verified,
    _staging,
    _swap_into_place,
    _write_lists,
    class_lists,
    describe,
    fetch_metadata,
)
from cloob.benchmarks.data.folders import CLASSNAMES_FILE, SOURCE_FILE, probe_folder, read_lines
from cloob.benchmarks.data.registry import TRAIN_SOURCES
from cloob.common.cli import UsageError
from cloob.common.files import sha256_file, write_json

VGG_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
GTSRB_ARCHIVES = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370"


@dataclass(frozen=True)
class SourceFile:
    filename: str
    url: str
    md5: str | None = (
        None  # published (torchvision pins it); None: sha256 recorded at first download
    )


OFFICIAL: dict[str, tuple[SourceFile, ...]] = {
    "country211": (
        SourceFile(
            "country211.tgz",
            "https://openaipublic.azureedge.net/clip/data/country211.tgz",
            "84988d7644798601126c29e9877aab6a",
        ),
    ),
    "flowers102": (
        SourceFile(
            "102flowers.tgz", f"{VGG_FLOWERS}/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"
        ),
        SourceFile(
            "imagelabels.mat", f"{VGG_FLOWERS}/imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"
        ),
        SourceFile("setid.mat", f"{VGG_FLOWERS}/setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"),
    ),
    "gtsrb": (
        SourceFile(
            "GTSRB-Training_fixed.zip",
            f"{GTSRB_ARCHIVES}/GTSRB-Training_fixed.zip",
            "513f3c79a4c5141765e10e952eaa2478",
        ),
        SourceFile(
            "GTSRB_Final_Test_Images.zip",
            f"{GTSRB_ARCHIVES}/GTSRB_Final_Test_Images.zip",
            "c7e4e6327067d32654124b0fe9e82185",
        ),
        SourceFile(
            "GTSRB_Final_Test_GT.zip",
            f"{GTSRB_ARCHIVES}/GTSRB_Final_Test_GT.zip",
            "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
        ),
    ),
}


def fetch_train_splits(
    names: list[str] | None,
    cfg: FetchConfig,
    train_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """`benchmarks fetch --linear-probe [NAMES]` (default: all): the official splits of each
    dataset that has them, one line each; `--train-dir PATH` links the train folder of the one
    dataset named instead."""
    specs = registry.select(names)
    if train_dir is not None:
        if len(specs) != 1 or not registry.named(names):
            raise UsageError("--train-dir links the train folder of one dataset: name exactly one")
        say(link_train_folder(specs[0], train_dir, cfg).line)
        return
    for spec in specs:
        if spec.name in OFFICIAL or registry.named(names):
            say(fetch_probe_splits(spec, cfg).line)
        else:
            say(
                f"[yellow]{spec.name}: skipped[/] (no downloadable train split; link one with "
                f"benchmarks fetch {spec.name} --root {cfg.root} --train-dir PATH)"
            )


def fetch_probe_splits(
    spec: registry.DatasetSpec, cfg: FetchConfig, files: dict[str, Path] | None = None
) -> FetchResult:
    """Download the official train/val/test of `spec` into `ROOT/<name>-probe/` (present → verified
    count)."""
    if spec.name not in OFFICIAL:
        source = TRAIN_SOURCES[spec.name]
        raise UsageError(
            f"{spec.title} has no downloadable train split ({source.note}); "
            f"run: benchmarks fetch {source.train_from or spec.name} --root {cfg.root} --train-dir "
            "PATH"
        )
    dest = probe_folder(cfg.root, spec.name)
    if (dest / SOURCE_FILE).is_file() and not cfg.force:
        return FetchResult(f"{spec.name} (linear probe)", "present", _count(dest), dest)
    classnames, templates, notes = class_lists(spec, files or fetch_metadata(cfg))
    record = _previous(dest)
    downloaded = {f.filename: _get(f, cfg, record.get(f.filename)) for f in OFFICIAL[spec.name]}
    with _staging(cfg.root, dest.name) as tmp:
        raw = tmp / "raw"
        archives = {name: cfg.root / DOWNLOADS / name for name in downloaded}
        splits = LAYOUTS[spec.name](archives, raw, tmp, len(classnames))
        shutil.rmtree(raw, ignore_errors=True)
        info = {key: describe(spec, tmp, classnames, tmp / rel) for key, rel in splits.items()}
        _write_lists(tmp, classnames, templates)
        write_json(
            tmp / SOURCE_FILE,
            {
                "name": spec.name,
                "title": spec.title,
                "kind": "official train/val/test",
                "splits": splits,
                "origin": TRAIN_SOURCES[spec.name].note,
                "files": {
                    name: {"url": cfg.url_for(name, _file(spec.name, name).url), **meta}
                    for name, meta in downloaded.items()
                },
                "split_info": info,
                "n_images": sum(i["n_images"] for i in info.values()),
                "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "metadata": notes,
            },
        )
        _swap_into_place(tmp, dest)
    if not cfg.keep_archives:
        for name in downloaded:
            (cfg.root / DOWNLOADS / name).unlink(missing_ok=True)
    return FetchResult(f"{spec.name} (linear probe)", "fetched", _count(dest), dest)


def link_train_folder(
    spec: registry.DatasetSpec, folder: str | Path, cfg: FetchConfig
) -> FetchResult:
    """A local train folder (class sub-folders as in the dataset's test split), linked, not
    copied."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such train folder")
    target = registry.get(TRAIN_SOURCES[spec.name].train_from or spec.name)
    if target.name == "imagenet":
        classnames, templates = metadata.imagenet_classnames(), metadata.imagenet_templates()
    else:
        test = cfg.root / target.name
        if not (test / CLASSNAMES_FILE).is_file():
            raise UsageError(
                f"{target.title}'s class list comes with its test split; first run: "
                f"{registry.fetch_command(target, str(cfg.root))}"
            )
        classnames, templates = (
            read_lines(test / CLASSNAMES_FILE),
            read_lines(test / "templates.txt"),
        )
    dest = probe_folder(cfg.root, target.name)
    with _staging(cfg.root, dest.name) as tmp:
        os.symlink(folder, tmp / "train", target_is_directory=True)
        info = describe(target, tmp, classnames, tmp / "train")
        if info["n_images"] == 0:
            raise UsageError(f"{folder}: no images found")
        _write_lists(tmp, classnames, templates)
        write_json(
            tmp / SOURCE_FILE,
            {
                "name": target.name,
                "title": target.title,
                "kind": "local folder (linked)",
                "source": str(folder),
                "splits": {"train": "train"},
                "origin": f"local folder {folder}",
                "split_info": {"train": info},
                "n_images": info["n_images"],
                "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
        _swap_into_place(tmp, dest)
    return FetchResult(f"{target.name} (linear-probe train)", "linked", info["n_images"], dest)


# ---------------------------------------------------------------- download + verify


def _get(source: SourceFile, cfg: FetchConfig, recorded: dict | None) -> dict:
    """Download one file; verify it against --checksums (sha256), else its published md5, else the
    sha256 recorded by the previous fetch. Returns what SOURCE.json records about it."""
    target = cfg.root / DOWNLOADS / source.filename
    url = cfg.url_for(source.filename, source.url)
    expected = cfg.checksums.get(source.filename)
    if expected is None and source.md5 is None and recorded:
        expected = recorded.get("sha256")
    if not (target.is_file() and expected and sha256_file(target) == expected):
        _download_verified(
            url,
            target,
            expected,
            cfg,
            "from --checksums"
            if source.filename in cfg.checksums
            else "recorded at the first download",
        )
    if source.filename not in cfg.checksums and source.md5:
        got = _md5(target)
        if got != source.md5:
            target.unlink()
            raise ChecksumMismatch(
                f"checksum mismatch for {source.filename} from {url}: md5 {got}, expected the "
                f"published {source.md5}. A mirror serving different bytes needs --checksums FILE"
            )
    return {
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "md5_checked": bool(source.md5 and source.filename not in cfg.checksums),
    }


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file(name: str, filename: str) -> SourceFile:
    return next(f for f in OFFICIAL[name] if f.filename == filename)


def _previous(dest: Path) -> dict:
    import json

    source = dest / SOURCE_FILE
    return (
        json.loads(source.read_text(encoding="utf-8")).get("files", {}) if source.is_file() else {}
    )


def _count(dest: Path) -> int:
    import json

    return int(json.loads((dest / SOURCE_FILE).read_text(encoding="utf-8"))["n_images"])


# ---------------------------------------------------------------- layouts: archives → split folders


def _country211(files: dict[str, Path], raw: Path, tmp: Path, n_classes: int) -> dict[str, str]:
    extract(files["country211.tgz"], raw)
    top = _find_dir_with(raw, "train")
    splits = {}
    for key, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        if not (top / folder).is_dir():
            raise UsageError(f"country211.tgz: no {folder}/ split inside")
        os.replace(top / folder, tmp / key)
        splits[key] = key
    return splits


def _flowers(files: dict[str, Path], raw: Path, tmp: Path, n_classes: int) -> dict[str, str]:
    from scipy.io import loadmat  # only the .mat readers need scipy

    extract(files["102flowers.tgz"], raw)
    images = _find_dir_with(raw, "jpg") / "jpg"
    labels = loadmat(files["imagelabels.mat"], squeeze_me=True)["labels"].reshape(-1)
    ids = loadmat(files["setid.mat"], squeeze_me=True)
    if labels.min() < 1 or labels.max() > n_classes:
        raise UsageError(
            f"imagelabels.mat: labels {labels.min()}..{labels.max()}, expected 1..{n_classes}"
        )
    splits = {}
    for key, var in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        rows = [
            (images / f"image_{int(i):05d}.jpg", int(labels[int(i) - 1]) - 1)
            for i in ids[var].reshape(-1)
        ]
        _sort_into(rows, tmp / key, n_classes, width=3, what="setid.mat")
        splits[key] = key
    return splits


def _gtsrb(files: dict[str, Path], raw: Path, tmp: Path, n_classes: int) -> dict[str, str]:
    extract(files["GTSRB-Training_fixed.zip"], raw / "train")
    training = _find_dir_with(raw / "train", "Training") / "Training"
    os.replace(training, tmp / "train")
    for n in range(n_classes):  # the label space is complete even if a class folder is missing
        (tmp / "train" / f"{n:05d}").mkdir(exist_ok=True)
    extract(files["GTSRB_Final_Test_Images.zip"], raw / "test")
    extract(files["GTSRB_Final_Test_GT.zip"], raw / "gt")
    images = _find_dir_with(raw / "test", "Images") / "Images"
    truth = next((raw / "gt").rglob("GT-final_test.csv"), None)
    if truth is None:
        raise UsageError("GTSRB_Final_Test_GT.zip: no GT-final_test.csv inside")
    with open(truth, newline="", encoding="utf-8") as f:
        rows = [
            (images / row["Filename"], int(row["ClassId"]))
            for row in csv.DictReader(f, delimiter=";")
        ]
    _sort_into(rows, tmp / "test", n_classes, width=5, what="GT-final_test.csv")
    return {"train": "train", "test": "test"}


LAYOUTS = {"country211": _country211, "flowers102": _flowers, "gtsrb": _gtsrb}


def _find_dir_with(folder: Path, child: str) -> Path:
    """The first folder (breadth-first) holding `child` as a sub-folder."""
    queue = [folder]
    while queue:
        current = queue.pop(0)
        if (current / child).is_dir():
            return current
        queue.extend(sorted(p for p in current.iterdir() if p.is_dir()))
    raise UsageError(f"no {child}/ folder in the archive")


def _sort_into(
    rows: list[tuple[Path, int]], split: Path, n_classes: int, width: int, what: str
) -> None:
    """Move (image, 0-based label) rows into `split/<label>/`; every class folder is made."""
    for n in range(n_classes):
        (split / f"{n:0{width}d}").mkdir(parents=True, exist_ok=True)
    for image, label in rows:
        if not 0 <= label < n_classes:
            raise UsageError(f"{what}: label {label} outside 0..{n_classes - 1}")
        if not image.is_file():
            raise UsageError(f"{what} lists {image.name}, which is not in the archive")
        os.replace(image, split / f"{label:0{width}d}" / image.name)
