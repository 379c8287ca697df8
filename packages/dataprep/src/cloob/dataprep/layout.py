"""Where everything lives inside a dataset directory, and the lock that keeps two runs apart."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloob.common.cli import UsageError
from cloob.common.shard_layout import SHARDS, SIZES

MARKER = ".dataprep"


@dataclass(frozen=True)
class Layout:
    """The files of one dataset directory `DIR` (see the README's output layout)."""

    root: Path

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    @property
    def url_list(self) -> Path:  # the source's url/caption list, reused on re-runs
        return self.root / "urls.parquet"

    @property
    def url_list_meta(self) -> Path:  # what the url list was built from
        return self.root / "urls.json"

    @property
    def inputs(self) -> Path:  # img2dataset's input: the list cut into parts
        return self.root / "input"

    @property
    def retries(self) -> Path:
        return self.root / "retry"

    @property
    def sources(self) -> Path:  # downloaded TSV / subset / metadata files
        return self.root / "sources"

    @property
    def fetch_json(self) -> Path:  # the options this directory was made with
        return self.root / "fetch.json"

    @property
    def runs_json(self) -> Path:
        return self.root / "runs.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.duckdb"

    @property
    def sizes_json(self) -> Path:
        return self.root / SIZES

    @property
    def shard_sizes_json(self) -> Path:  # OpenCLIP looks for sizes.json next to the shards
        return self.shards / SIZES

    @property
    def log(self) -> Path:
        return self.root / "img2dataset.log"

    @property
    def refused(self) -> Path:  # url-list rows that were never downloaded (not http/https)
        return self.root / "refused.parquet"

    @property
    def marker(self) -> Path:  # written first into a directory dataprep takes over
        return self.root / MARKER

    def made_by_dataprep(self) -> bool:
        """True for a directory a fetch has started in, or a finished `fetch demo` (fetch.json: a
        fetch from before the marker existed)."""
        return any(p.is_file() for p in (self.marker, self.fetch_json, self.root / "demo.json"))


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold `DIR/.lock` so a second process cannot write into the same directory at once."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{root} is in use by another dataprep process") from None
        yield
    finally:
        os.close(fd)
