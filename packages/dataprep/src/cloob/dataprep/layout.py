"""Where everything lives inside a dataset directory, and the lock that keeps two runs apart.

A dataset may live in an object store (`--out s3://bucket/prefix`): then the shards and
sizes.json are written there by img2dataset, while the records (url list, fetch.json, runs.json,
manifest, log) are kept in a local working folder and copied to the bucket when a run ends
(`push_records`), and back from it when a later run or command starts (`pull_records`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloob.common import folder_lock, storage
from cloob.common.cli import UsageError
from cloob.common.shard_layout import SHARDS, SIZES

MARKER = ".dataprep"


@dataclass(frozen=True)
class Layout:
    """The files of one dataset directory `DIR` (see the README's output layout)."""

    root: Path  # the local folder: the dataset itself, or the working folder of a remote one
    data: str | None = None  # the dataset's URL when it lives in an object store

    @property
    def dataset(self) -> Path | storage.RemotePath:
        """Where the shards and sizes.json live."""
        return storage.location(self.data) if self.data else self.root

    @property
    def is_remote(self) -> bool:
        return self.data is not None

    @property
    def shown(self) -> str:  # how the dataset is named in messages
        return self.data or str(self.root)

    @property
    def shards(self) -> Path | storage.RemotePath:
        return self.dataset / SHARDS

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
    def sizes_json(self) -> Path | storage.RemotePath:
        return self.dataset / SIZES

    @property
    def shard_sizes_json(self) -> Path | storage.RemotePath:  # OpenCLIP looks next to the shards
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

    def records(self) -> list[Path]:
        """The local files that are copied to a remote dataset, the commit (fetch.json) last."""
        return [
            self.marker,
            self.url_list,
            self.url_list_meta,
            self.refused,
            self.log,
            self.manifest,
            self.runs_json,
            self.fetch_json,
        ]


def push_records(layout: Layout) -> None:
    """Copy the records of a finished run next to the remote shards (each object whole)."""
    if not layout.is_remote:
        return
    for path in layout.records():
        if path.is_file():
            storage.put_file(path, layout.dataset / path.name)


def pull_records(layout: Layout) -> None:
    """Bring the records of the last finished run from the bucket into the working folder (the
    bucket is the truth: another machine may have run `retry` since)."""
    dataset = layout.dataset
    if not isinstance(dataset, storage.RemotePath):
        return
    remote = {p.name for p in dataset.iterdir()}
    for path in layout.records():
        if path.name in remote:
            (dataset / path.name).download(path)


def place(
    dataset: str, work: Path | None = None, storage_options: str | None = None
) -> tuple[Path, str | None]:
    """(local folder, dataset URL or None) for a dataset named on the command line (`--out` or
    DIR): a dataset in an object store keeps its records in `work` (default: `default_work`)."""
    storage.configure(storage_options)
    storage.location(dataset)  # refuses schemes we do not support
    if storage.is_remote(dataset):
        return (work or default_work(dataset)).expanduser().absolute(), dataset.rstrip("/")
    if work is not None:
        raise UsageError("--work is for a dataset in an object store (--out s3://...)")
    return Path(dataset).expanduser(), None


def existing(dataset: str, work: Path | None = None, storage_options: str | None = None) -> Layout:
    """The dataprep dataset at `dataset`; a remote one's records are first brought into its
    working folder."""
    local, data = place(dataset, work, storage_options)
    layout = Layout(local, data)
    if data:
        storage.check_access(data)
        with locked(local):
            pull_records(layout)
    if not layout.shards.is_dir() or not layout.made_by_dataprep():
        raise UsageError(f"{dataset} is not a dataprep dataset directory (no shards/)")
    return layout


def default_work(data: str) -> Path:
    """Where a remote dataset's working folder goes unless --work says: beside the command."""
    return Path.cwd() / "dataprep-work" / data.split("://", 1)[1].strip("/").replace("/", "--")


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold `DIR/.lock` so a second process cannot write into the same directory at once."""
    with folder_lock.held(root, "another dataprep process", record=False):
        yield
