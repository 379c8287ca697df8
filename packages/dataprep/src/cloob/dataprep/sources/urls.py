"""Any url/caption list: parquet, csv, tsv or jsonl (optionally .gz), with a header naming columns.

source_id is the 0-based input row number; parquet and csv are streamed, never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cloob.common.cli import UsageError
from cloob.common.download import is_url
from cloob.dataprep.config import SourceSpec
from cloob.dataprep.sources import Source, identity, local_input, numbered, write_list

FORMATS = ("parquet", "csv", "tsv", "jsonl", "json")


def urls_source(input: str, url_col: str, caption_col: str) -> Source:
    """`dataprep fetch urls --input LIST`: any list with a url and a caption column, a local file
    or an http(s) URL (kept a string: a Path would fold `http://` into the folder `http:`)."""
    input_format(Path(urlsplit(input).path) if is_url(input) else Path(input))  # before a download

    def build(target: Path) -> str:
        path = local_input(input, target.parent, "url list")
        return f"url list: {build_urls_list(path, url_col, caption_col, target)} rows"

    args = {"input": identity(input), "url_col": url_col, "caption_col": caption_col}
    return Source(SourceSpec("urls", args), build)


def input_format(path: Path) -> str:
    suffixes = [s.lstrip(".") for s in path.suffixes]
    if suffixes and suffixes[-1] in ("gz", "bz2"):
        suffixes = suffixes[:-1]
    fmt = suffixes[-1] if suffixes else ""
    if fmt not in FORMATS:
        raise UsageError(
            f"{path}: unknown list format {fmt!r} (expected one of "
            f"{', '.join(FORMATS)}, optionally .gz)"
        )
    return fmt


def read_urls(path: Path, url_col: str, caption_col: str) -> Iterable[pa.RecordBatch]:
    fmt = input_format(path)
    cols = [url_col, caption_col]
    try:
        if fmt == "parquet":
            file = pq.ParquetFile(path)
            _require(path, cols, file.schema_arrow.names)
            yield from file.iter_batches(batch_size=65536, columns=cols)
            return
        if fmt in ("jsonl", "json"):
            table = pajson.read_json(path)
            _require(path, cols, table.column_names)
            yield from table.select(cols).to_batches(65536)
            return
        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","),
            convert_options=pacsv.ConvertOptions(
                include_columns=cols, column_types={c: pa.string() for c in cols}
            ),
        )
        _require(path, cols, reader.schema.names)
        yield from reader
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{path}: cannot read as {fmt}: {reason}") from None


def build_urls_list(path: Path, url_col: str, caption_col: str, target: Path) -> int:
    batches = numbered(read_urls(path, url_col, caption_col), url_col, caption_col)
    return write_list(batches, target, f"url list {path}")


def _require(path: Path, wanted: list[str], have: list[str]) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        raise UsageError(
            f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(have)})"
        )
