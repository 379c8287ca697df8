"""What `--train-data` / `--val-data` point at: a dataprep output folder, shards (brace patterns,
'::'-joined lists), local or s3://, a CSV, or the synthetic scenes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand
import webdataset as wds

from cloob.common import storage
from cloob.common.cli import UsageError
from cloob.common.shard_layout import SIZES, shard_files, shard_folder
from cloob.trainer.data.remote import use_remote_opener
from cloob.trainer.data.samples import decode_sample


@dataclass
class Source:
    kind: str  # webdataset | csv | synthetic
    shards: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # shard path -> samples, when known
    csv_path: str | None = None

    @property
    def known_samples(self) -> int | None:
        if self.kind == "webdataset" and self.sizes and len(self.sizes) == len(self.shards):
            return sum(self.sizes.values())
        return None

    @property
    def csv_file(self) -> str:
        """The CSV of a `csv` source."""
        if self.csv_path is None:
            raise ValueError(f"a {self.kind} source has no CSV")
        return self.csv_path


def read_sizes(path: Path | storage.RemotePath) -> dict[str, int]:
    """A sizes.json (shard name -> sample count); anything else is a UsageError."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(table, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in table.values()
    ):
        raise UsageError(f"{path} must map shard names to sample counts (integers >= 0)")
    return table


def _sizes_next_to(paths: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for folder in sorted({os.path.dirname(p) or "." for p in paths}):
        f = storage.location(folder) / SIZES
        if f.is_file():
            for name, n in read_sizes(f).items():
                sizes[_join(folder, name)] = n
    return {p: sizes[p] for p in paths if p in sizes}


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if storage.is_remote(folder) else str(Path(folder) / name)


def _missing(shards: list[str]) -> list[str]:
    """The shards that do not exist (one listing per remote folder)."""
    listed: dict[str, set[str]] = {}
    missing = []
    for s in shards:
        if s.startswith("pipe:") or ("://" in s and not storage.is_remote(s)):
            continue  # opened by webdataset itself
        if not storage.is_remote(s):
            if not os.path.exists(s):
                missing.append(s)
            continue
        folder, name = s.rsplit("/", 1)
        if folder not in listed:
            listed[folder] = {p.name for p in storage.location(folder).iterdir()}
        if name not in listed[folder]:
            missing.append(s)
    return missing


def _is_dir(part: str) -> bool:
    if storage.is_remote(part):
        storage.check_access(part)  # a missing bucket or refused key: one line, before any work
        return storage.location(part).is_dir()
    return os.path.isdir(part)


def _dataprep_dir(d: Path | storage.RemotePath) -> tuple[list[str], dict[str, int]]:
    sizes_file = d / SIZES
    if not sizes_file.is_file():
        tars = [str(p) for p in shard_files(d)]
        if not tars:
            raise UsageError(f"{d} holds no sizes.json and no .tar shards")
        return tars, _sizes_next_to(tars)
    table = read_sizes(sizes_file)
    shard_dir = shard_folder(d)
    shards = [str(shard_dir / name) for name in sorted(table)]
    missing = _missing(shards)
    if missing:
        raise UsageError(
            f"{sizes_file} lists {len(missing)} shard(s) that do not exist, e.g. {missing[0]}"
        )
    return shards, {str(shard_dir / n): int(c) for n, c in table.items()}


def resolve_source(spec: str | None, dataset_type: str) -> Source:
    """Parse `--train-data`/`--val-data`; raises UsageError for anything unusable."""
    if dataset_type == "synthetic":
        return Source("synthetic")
    if not spec:
        raise UsageError(
            "no --train-data given: pass a dataprep output folder, shards like "
            "'data/{00000..00009}.tar', a CSV, or --dataset-type synthetic"
        )
    parts = [p for p in spec.split("::") if p]
    if dataset_type == "csv" or (
        dataset_type == "auto" and len(parts) == 1 and parts[0].endswith((".csv", ".tsv"))
    ):
        if len(parts) != 1:
            raise UsageError("csv data takes a single file")
        if not os.path.isfile(parts[0]):
            raise UsageError(f"csv file {parts[0]} not found")
        return Source("csv", csv_path=parts[0])
    shards: list[str] = []
    sizes: dict[str, int] = {}
    for part in parts:
        if _is_dir(part):
            s, z = _dataprep_dir(storage.location(part))
        else:
            s = list(braceexpand.braceexpand(part))
            missing = _missing(s)
            if missing:
                raise UsageError(
                    f"data path {missing[0]} not found"
                    + (f" ({len(missing)} of {len(s)} shards missing)" if len(s) > 1 else "")
                )
            z = _sizes_next_to(s)
        shards += s
        sizes.update(z)
    if not shards:
        raise UsageError(f"--train-data {spec!r} expands to an empty shard list")
    _require_a_sample(shards)
    return Source("webdataset", shards, sizes)


def _require_a_sample(shards: list[str]) -> None:
    """Fail with one line, before any work, when no shard (local or in the bucket) holds a single
    usable sample: the workers would otherwise skip sample after sample without end, re-reading
    the shards pass after pass. A clean dataset costs one sample; an all-corrupt one, one read."""
    ours = [
        s for s in shards if storage.is_remote(s) or ("://" not in s and not s.startswith("pipe:"))
    ]
    if len(ours) < len(shards):
        return  # pipe: and other URLs are only opened by the workers

    def ignore(exn: Exception) -> bool:
        return True

    for url in ours:
        use_remote_opener(url)
    for sample in wds.tarfile_to_samples(handler=ignore)({"url": s} for s in ours):
        try:
            decode_sample(sample)
            return
        except Exception:  # corrupt bytes: try the next sample
            continue
    raise UsageError(
        f"no readable sample in {len(ours)} shard(s) (e.g. {ours[0]}): "
        "are they webdataset tars with images and .txt captions?"
    )
