"""CLIP's YFCC-15M: OpenAI's subset list joined on photo id with the YFCC100M metadata.

The metadata is 100M rows (~15 GB bz2), so nothing here holds it in memory: pyarrow streams and
parses the TSV (decompressing bz2/gz natively, off the GIL) or Python's sqlite3 streams the SQLite
variant, and DuckDB consumes that stream, hash-joining it against the 15M subset ids and spilling
to disk under a memory limit. Only photos (marker 0) are kept; captions are URL-decoded, stripped of
HTML and whitespace-collapsed, and both cleaned fields are kept for choosing at training time.
"""

from __future__ import annotations

import html
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from cloob.common.cli import UsageError
from cloob.common.files import atomic_path
from cloob.dataprep.config import SourceSpec
from cloob.dataprep.layout import Layout
from cloob.dataprep.sources import Source, identity, local_input

SUBSET_URL = "https://openaipublic.azureedge.net/clip/data/yfcc100m_subset_data.tsv.bz2"
CAPTION_MODES = ("title", "description", "title+description")
EXTRA_COLUMNS = ("title", "description")

# Column positions in the 25-column `yfcc100m_dataset` TSV (0-indexed).
_TSV_COLUMNS = {1: "photoid", 8: "title", 9: "description", 16: "downloadurl", 24: "marker"}
_N_TSV_COLUMNS = 25
_SQLITE_TABLE = "yfcc100m_dataset"
_META_SCHEMA = pa.schema(
    [
        ("photoid", pa.int64()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("downloadurl", pa.string()),
        ("marker", pa.string()),
    ]
)
_TAG = re.compile(r"<[^>]*>")


@dataclass
class JoinReport:
    subset_ids: int
    matched: int
    videos: int
    rows: int  # photos written to the list

    @property
    def missing(self) -> int:
        return self.subset_ids - self.matched


def yfcc15m_source(metadata: str, subset: str | None, caption: str, root: Path) -> Source:
    """`dataprep fetch yfcc15m`: the subset list (default OpenAI's) joined with the metadata."""
    if caption not in CAPTION_MODES:
        raise UsageError(f"--caption must be one of {', '.join(CAPTION_MODES)}")
    subset = subset or SUBSET_URL

    def build(target: Path) -> str:
        sources = Layout(root).sources
        r = build_yfcc_list(
            local_input(subset, sources, "subset list"),
            local_input(metadata, sources, "YFCC100M metadata"),
            target,
            caption,
        )
        return (
            f"YFCC-15M list: {r.rows} photos ({r.subset_ids} subset ids, {r.missing} not in "
            f"the metadata, {r.videos} videos dropped)"
        )

    args = {"subset": identity(subset), "metadata": identity(metadata), "caption": caption}
    return Source(SourceSpec("yfcc15m", args, extra_columns=EXTRA_COLUMNS), build)


def clean_text(text: str | None) -> str:
    """URL-decode (`+` is a space), drop HTML tags and entities, collapse whitespace."""
    if not text:
        return ""
    text = _TAG.sub(" ", unquote_plus(text))
    return " ".join(html.unescape(text).split())


def build_yfcc_list(
    subset: Path,
    metadata: Path,
    target: Path,
    caption: str = "title+description",
    *,
    memory_limit: str = "2GB",
    threads: int = 2,
) -> JoinReport:
    """Join `subset` with `metadata` into the parquet list `target`, ordered by subset line."""
    if caption not in CAPTION_MODES:
        raise UsageError(f"--caption must be one of {', '.join(CAPTION_MODES)}, not {caption!r}")
    with tempfile.TemporaryDirectory(prefix=".yfcc-join-", dir=target.parent) as work:
        con = duckdb.connect(str(Path(work) / "join.duckdb"))
        try:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(f"SET threads = {int(threads)}")
            con.execute(f"SET temp_directory = '{Path(work) / 'spill'}'")
            # The string works with every duckdb >= 1.1; the enum moved module (functional → func)
            # between 1.x and 2.x, and the 2.x stubs accept only the enum.
            con.create_function("clean_text", _clean_arrow, ["VARCHAR"], "VARCHAR", type="arrow")  # type: ignore[call-overload]
            subset_ids = _load_subset(con, subset)
            _join_metadata(con, metadata)
            return _write_list(con, target, caption, subset_ids)
        finally:
            con.close()


def _load_subset(con: duckdb.DuckDBPyConnection, subset: Path) -> int:
    reader = _tsv_reader(
        subset,
        "subset list",
        ["line", "photoid", "hash"],
        {"line": pa.int64(), "photoid": pa.int64()},
        ["line", "photoid"],
    )
    _create_from_stream(
        con,
        reader,
        "CREATE TABLE subset AS SELECT photoid, min(line) AS line FROM src GROUP BY photoid",
        subset,
        "subset list (line<TAB>photo id<TAB>hash)",
    )
    n = con.execute("SELECT count(*) FROM subset").fetchall()[0][0]
    if n == 0:
        raise UsageError(f"{subset}: the subset list has no rows")
    return n


def _join_metadata(con: duckdb.DuckDBPyConnection, metadata: Path) -> None:
    """Stream the metadata through a hash join against the subset; keep both markers for
    counting."""
    if _is_sqlite(metadata):
        reader = _sqlite_reader(metadata)
    else:
        names = [_TSV_COLUMNS.get(i, f"c{i}") for i in range(_N_TSV_COLUMNS)]
        reader = _tsv_reader(
            metadata,
            "YFCC100M metadata",
            names,
            {"photoid": pa.int64()},
            list(_TSV_COLUMNS.values()),
        )
    _create_from_stream(
        con,
        reader,
        "CREATE TABLE joined AS SELECT s.line, m.photoid, m.title, "
        "m.description, m.downloadurl, m.marker "
        "FROM src m JOIN subset s USING (photoid)",
        metadata,
        "YFCC100M metadata (25-column TSV or SQLite)",
    )


def _create_from_stream(
    con: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader, sql: str, path: Path, what: str
) -> None:
    """Run `sql` with the stream `reader` as table `src`; parse errors become usage errors."""
    con.register("src", reader)
    try:
        con.execute(sql)
    except duckdb.Error as err:
        raise _bad_input(path, what, err) from None
    finally:
        con.unregister("src")


def _write_list(
    con: duckdb.DuckDBPyConnection, target: Path, caption: str, subset_ids: int
) -> JoinReport:
    matched, videos = con.execute(
        "SELECT count(DISTINCT photoid), count(*) FILTER (WHERE trim(marker) <> '0') FROM joined"
    ).fetchall()[0]
    caption_sql = {
        "title": "title",
        "description": "description",
        "title+description": "CASE WHEN title = '' THEN description "
        "WHEN description = '' THEN title "
        "WHEN regexp_matches(title, '[.!?]$') THEN title || ' ' || description "
        "ELSE title || '. ' || description END",
    }[caption]
    with atomic_path(target) as tmp:
        con.execute(
            f"""COPY (
                SELECT source_id, url, {caption_sql} AS caption, title, description FROM (
                    SELECT photoid AS source_id, downloadurl AS url, line,
                           clean_text(title) AS title, clean_text(description) AS description
                    FROM joined WHERE trim(marker) = '0'
                    QUALIFY row_number() OVER (PARTITION BY photoid ORDER BY line) = 1)
                ORDER BY line
            ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{tmp}')").fetchall()[0][0]
        if rows == 0:
            raise UsageError("no photo of the subset list was found in the metadata")
    return JoinReport(subset_ids=subset_ids, matched=matched, videos=videos, rows=rows)


def _tsv_reader(
    path: Path, what: str, names: list[str], types: dict[str, pa.DataType], keep: list[str]
) -> pacsv.CSVStreamingReader:
    """A streaming reader of a headerless TSV (plain, .gz or .bz2, detected from the bytes)."""
    column_types = {n: types.get(n, pa.string()) for n in keep}
    try:
        stream = pa.input_stream(str(path), compression=_compression(path))
        return pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            # YFCC fields are URL-encoded: no quoting, no tabs or newlines inside values.
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=keep, column_types=column_types, strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, OSError) as err:
        raise _bad_input(path, what, err) from None


def _compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        magic = f.read(3)
    return {b"BZh": "bz2", b"\x1f\x8b\x08": "gzip"}.get(magic)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _sqlite_reader(path: Path, size: int = 100_000) -> pa.RecordBatchReader:
    """Stream the SQLite table in batches (DuckDB's sqlite extension needs a download)."""
    # DuckDB pulls batches from its own threads, one at a time.
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        cur = con.execute(
            f"SELECT photoid, title, description, downloadurl, marker FROM {_SQLITE_TABLE}"
        )
    except sqlite3.Error as err:
        con.close()
        raise UsageError(
            f"{path}: not a YFCC100M SQLite database (need table {_SQLITE_TABLE} "
            f"with photoid, title, description, downloadurl, marker): {err}"
        ) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while rows := cur.fetchmany(size):
                ids, titles, descs, urls, markers = zip(*rows, strict=True)
                yield pa.record_batch(
                    [
                        pa.array([int(i) for i in ids], pa.int64()),
                        pa.array(titles, pa.string()),
                        pa.array(descs, pa.string()),
                        pa.array(urls, pa.string()),
                        pa.array([str(m) for m in markers], pa.string()),
                    ],
                    schema=_META_SCHEMA,
                )
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(_META_SCHEMA, batches())


def _clean_arrow(values: pa.Array) -> pa.Array:
    return pa.array([clean_text(v) for v in values.to_pylist()], pa.string())


def _bad_input(path: Path, what: str, err: Exception) -> UsageError:
    if isinstance(err, UsageError):
        return err
    reason = " ".join(str(err).split())[:300] or type(err).__name__
    return UsageError(f"{path}: not a {what}: {reason}")
