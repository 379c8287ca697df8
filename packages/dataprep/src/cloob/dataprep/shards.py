"""Shards on disk: which are complete, cleaning up what a kill left, sizes.json, verification.

A shard is complete when img2dataset has written its `NNNNN_stats.json` (it writes it last). A tar
without a readable stats file was interrupted mid-write and must be redone from scratch.
`shards` is a local folder or an object-store prefix (`cloob.common.storage`); one listing
serves each question, as every look in a bucket is a request.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cloob.common import storage
from cloob.common.shard_layout import IMAGE_EXTS, SIZES
from cloob.dataprep.layout import Layout

Location = Path | storage.RemotePath

_SHARD = re.compile(r"^(\d+)(?:\.tar|\.parquet|_stats\.json)$")


def read_stats(path: Location) -> dict | None:
    """The stats of a finished shard, or None when missing or cut short by a kill."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) and "successes" in stats else None


def _files(shards: Location) -> set[str]:
    """The names in the shards folder (one listing)."""
    return {p.name for p in shards.iterdir()} if shards.is_dir() else set()


def shard_names(shards: Location, files: set[str] | None = None) -> list[str]:
    """Zero-padded ids of every shard that has any file on disk, sorted."""
    files = _files(shards) if files is None else files
    return sorted({m.group(1) for name in files if (m := _SHARD.match(name))})


def complete_shards(shards: Location) -> dict[str, dict]:
    """Shard id → stats, for shards whose tar, parquet and stats are all there."""
    files = _files(shards)
    done = {}
    for name in shard_names(shards, files):
        if f"{name}.tar" not in files or f"{name}.parquet" not in files:
            continue
        stats = read_stats(shards / f"{name}_stats.json")
        if stats is not None:
            done[name] = stats
    return done


def remove_incomplete(shards: Location) -> list[str]:
    """Delete the files of shards that a kill interrupted, so img2dataset redoes them whole."""
    done = complete_shards(shards)
    files = _files(shards)
    removed = []
    for name in shard_names(shards, files):
        if name not in done:
            for suffix in (".tar", ".parquet", "_stats.json"):
                if f"{name}{suffix}" in files:
                    (shards / f"{name}{suffix}").unlink(missing_ok=True)
            removed.append(name)
    # img2dataset globs `*.json` in its output folder as shard stats: sizes.json would crash it.
    if SIZES in files:
        (shards / SIZES).unlink(missing_ok=True)
    if "_tmp" in files:
        storage.rmtree(shards / "_tmp")
    return removed


def write_sizes(layout: Layout) -> dict[str, int]:
    """sizes.json (tar name → successful samples) in DIR and next to the shards."""
    sizes = {
        f"{name}.tar": int(stats["successes"])
        for name, stats in complete_shards(layout.shards).items()
    }
    storage.write_json(layout.sizes_json, sizes)
    storage.write_json(layout.shard_sizes_json, sizes)
    return sizes


@dataclass
class ShardCheck:
    name: str
    samples: int = 0
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _open_tar(tar: Location) -> Iterator[tarfile.TarFile]:
    if isinstance(tar, Path):
        with tarfile.open(tar, "r") as archive:
            yield archive
        return
    with tar.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|") as archive:  # streamed
        yield archive


def check_tar(tar: Location, expected_keys: set[str] | None) -> ShardCheck:
    """Open every member: each sample needs an image that decodes, a caption and its json."""
    check = ShardCheck(tar.name)
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with _open_tar(tar) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                content = archive.extractfile(member)
                if content is None:  # not a regular file after all (checked above)
                    continue
                data = content.read()
                samples.setdefault(key, {})[ext] = data
    except (tarfile.TarError, OSError, EOFError) as err:
        check.problems.append(f"unreadable tar: {err}")
        return check
    check.samples = len(samples)
    for key, parts in sorted(samples.items()):
        problem = _check_sample(parts)
        if problem:
            check.problems.append(f"{key}: {problem}")
    if expected_keys is not None:
        missing, extra = expected_keys - samples.keys(), samples.keys() - expected_keys
        if missing:
            check.problems.append(
                f"{len(missing)} samples of the manifest missing (e.g. {min(missing)})"
            )
        if extra:
            check.problems.append(f"{len(extra)} samples not in the manifest (e.g. {min(extra)})")
    return check


def _check_sample(parts: dict[str, bytes]) -> str | None:
    images = [ext for ext in parts if ext in IMAGE_EXTS]
    if not images:
        return "no image"
    if "txt" not in parts:
        return "no caption"
    if "json" not in parts:
        return "no json"
    try:
        with Image.open(io.BytesIO(parts[images[0]])) as img:
            img.load()
    except Exception as err:  # PIL raises many types for bad bytes
        return f"image does not decode: {err}"
    return None
