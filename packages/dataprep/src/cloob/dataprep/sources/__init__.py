"""Sources: each turns its published files into one url list (parquet) with a `source_id`.

Every list has the columns `source_id` (int64), `url`, `caption`, plus source-specific extras; it
is written under a temp name and renamed, so a list on disk is always complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cloob.common.cli import UsageError
from cloob.common.download import download, is_url
from cloob.common.files import atomic_path
from cloob.dataprep.config import SourceSpec

LIST_COLUMNS = ("source_id", "url", "caption")


@dataclass(frozen=True)
class Source:
    """What a fetch downloads: the source's recorded identity, and the builder that writes its url
    list at a given path and returns a summary line."""

    spec: SourceSpec
    build_list: Callable[[Path], str]


def identity(path_or_url: str) -> str:
    """How an input is recorded in fetch.json: URLs as given, files by absolute path."""
    return path_or_url if is_url(path_or_url) else str(Path(path_or_url).expanduser().resolve())


def local_input(path_or_url: str, downloads: Path, what: str) -> Path:
    """A readable local file for `path_or_url`; URLs are downloaded (resumably) into `downloads`."""
    if is_url(path_or_url):
        name = path_or_url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or what
        return download(path_or_url, downloads / name)
    path = Path(path_or_url).expanduser()
    if not path.exists():
        raise UsageError(f"{what} not found: {path}")
    if not path.is_file():
        raise UsageError(f"{what} is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} is not readable: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"{what} is empty: {path}")
    return path


def numbered(batches: Iterable[pa.RecordBatch], url: str, caption: str) -> Iterable[pa.RecordBatch]:
    """(url, caption) batches → list batches whose source_id is the 0-based input row number."""
    start = 0
    for batch in batches:
        n = batch.num_rows
        yield pa.record_batch(
            [
                pa.array(range(start, start + n), pa.int64()),
                batch.column(url).cast(pa.string()),
                batch.column(caption).cast(pa.string()),
            ],
            names=list(LIST_COLUMNS),
        )
        start += n


def write_list(batches: Iterable[pa.RecordBatch], target: Path, what: str) -> int:
    """Stream `batches` into the parquet list `target` (atomically); returns the row count."""
    rows = 0
    with atomic_path(target) as tmp:
        writer = None
        try:
            for batch in batches:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema, compression="zstd")
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        if rows == 0:
            raise UsageError(f"{what} has no rows")
    return rows
