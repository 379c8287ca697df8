"""The DuckDB manifest, rebuilt from the per-shard files so it always matches what is on disk.

Tables: `attempts` (every row of every complete shard's parquet), `samples` (one row per input
row: its latest attempt, so a retried sample shows its newest status), `shards`, `runs`.

The file is written in DuckDB's v1.1 storage format, which every DuckDB the package allows
(`duckdb>=1.1`) opens: newer DuckDBs write newer formats by default (2.0 writes version 999, and
DuckDB 1.x refuses it: "Trying to read a database file with version number 999").
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from cloob.common import storage
from cloob.common.cli import package_version
from cloob.common.files import atomic_path, write_json
from cloob.dataprep.layout import Layout
from cloob.dataprep.shards import complete_shards, shard_names

SAMPLE_COLUMNS = (
    "key",
    "shard",
    "source_id",
    "url",
    "caption",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "sha256",
)
_ATTEMPTS_DDL = """CREATE TABLE attempts (key VARCHAR, shard VARCHAR, source_id BIGINT,
    url VARCHAR, caption VARCHAR, status VARCHAR, error_message VARCHAR, width INTEGER,
    height INTEGER, original_width INTEGER, original_height INTEGER, sha256 VARCHAR)"""
_VERSIONED = ("cloob-dataprep", "img2dataset", "webdataset", "duckdb", "pyarrow")
STORAGE_VERSION = "v1.1.0"  # the oldest DuckDB in pyproject's range; see the module docstring


def _create(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is a new file at `path` in STORAGE_VERSION's format.
    DuckDB 1.1 itself has no STORAGE_VERSION option; its files are already in that format."""
    con = duckdb.connect()
    major, minor = (int(x) for x in duckdb.__version__.split(".")[:2])
    option = f" (STORAGE_VERSION '{STORAGE_VERSION}')" if (major, minor) >= (1, 2) else ""
    quoted = str(path).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS manifest{option}")
    con.execute("USE manifest")
    return con


def build_manifest(layout: Layout) -> Path:
    """Write `DIR/manifest.duckdb` from the shards on disk (temp file + rename)."""
    done = complete_shards(layout.shards)
    with atomic_path(layout.manifest) as tmp:
        tmp.unlink()  # DuckDB wants to create the file itself
        con = _create(tmp)
        try:
            storage.attach_to_duckdb(con, layout.shards)
            con.execute(_ATTEMPTS_DDL)
            files = [str(layout.shards / f"{name}.parquet") for name in done]
            if files:
                cols = ", ".join(c for c in SAMPLE_COLUMNS if c != "shard")
                con.execute(
                    f"INSERT INTO attempts BY NAME SELECT {cols}, "
                    "regexp_extract(filename, '(\\d+)\\.parquet$', 1) || '.tar' AS shard "
                    "FROM read_parquet(?, filename = true, union_by_name = true)",
                    [files],
                )
            if layout.refused.exists():  # rows never downloaded: failed, in no shard
                con.execute(
                    "INSERT INTO attempts BY NAME SELECT source_id, url, caption, status, "
                    "error_message FROM read_parquet(?)",
                    [str(layout.refused)],
                )
            con.execute("""CREATE TABLE samples AS
                SELECT * EXCLUDE (rn) FROM (
                    SELECT *, row_number() OVER (PARTITION BY source_id ORDER BY shard DESC) AS rn,
                           count(*) OVER (PARTITION BY source_id) AS n_attempts
                    FROM attempts)
                WHERE rn = 1 ORDER BY shard, key""")
            con.register("shards_src", _shards_table(layout, done))
            con.execute("CREATE TABLE shards AS SELECT * FROM shards_src ORDER BY shard")
            con.register("runs_src", _runs_table(layout))
            con.execute("CREATE TABLE runs AS SELECT * FROM runs_src")
        finally:
            con.close()
    return layout.manifest


def ensure_manifest(layout: Layout) -> Path:
    """The manifest, rebuilt first if any shard or run record is newer than it."""
    return build_manifest(layout) if is_stale(layout) else layout.manifest


def is_stale(layout: Layout) -> bool:
    """True when the manifest is missing or older than a shard file or runs.json. The shards are
    looked at in one listing: a HEAD per file costs minutes on thousands of remote shards."""
    if not layout.manifest.exists():
        return True
    built = layout.manifest.stat().st_mtime
    shards = storage.modified_times(layout.shards).values()
    runs = layout.runs_json.stat().st_mtime if layout.runs_json.exists() else 0.0
    return any(t > built for t in shards) or runs > built


def connect(layout: Layout) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(ensure_manifest(layout)), read_only=True)


def record_run(
    layout: Layout, command: str, options: dict, started: datetime, counts: dict
) -> None:
    """Append this run to `DIR/runs.json` (rewritten atomically; the manifest loads it)."""
    runs = _load_runs(layout)
    runs.append(
        {
            "command": command,
            "options": options,
            "versions": {dist: package_version(dist) for dist in _VERSIONED},
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now().isoformat(timespec="seconds"),
            **counts,
        }
    )
    write_json(layout.runs_json, runs)


def _load_runs(layout: Layout) -> list[dict]:
    try:
        runs = json.loads(layout.runs_json.read_text())
    except (OSError, ValueError):
        return []
    return runs if isinstance(runs, list) else []


def _runs_table(layout: Layout) -> pa.Table:
    rows = _load_runs(layout)
    return pa.table(
        {
            "command": pa.array([r.get("command") for r in rows], pa.string()),
            "options": pa.array([json.dumps(r.get("options", {})) for r in rows], pa.string()),
            "versions": pa.array([json.dumps(r.get("versions", {})) for r in rows], pa.string()),
            "started": pa.array([r.get("started") for r in rows], pa.string()).cast(
                pa.timestamp("s")
            ),
            "finished": pa.array([r.get("finished") for r in rows], pa.string()).cast(
                pa.timestamp("s")
            ),
            "rows": pa.array([r.get("rows") for r in rows], pa.int64()),
            "success": pa.array([r.get("success") for r in rows], pa.int64()),
            "failed": pa.array([r.get("failed") for r in rows], pa.int64()),
        }
    )


def _shards_table(layout: Layout, done: dict[str, dict]) -> pa.Table:
    names = shard_names(layout.shards)
    tars = [layout.shards / f"{n}.tar" for n in names]
    stats = [done.get(n) for n in names]
    return pa.table(
        {
            "shard": pa.array([t.name for t in tars], pa.string()),
            "path": pa.array([str(t.relative_to(layout.dataset)) for t in tars], pa.string()),
            "n_rows": pa.array([s["count"] if s else None for s in stats], pa.int64()),
            "n_success": pa.array([s["successes"] if s else None for s in stats], pa.int64()),
            "n_failed": pa.array(
                [s["failed_to_download"] + s["failed_to_resize"] if s else None for s in stats],
                pa.int64(),
            ),
            "bytes": pa.array([t.stat().st_size if t.exists() else None for t in tars], pa.int64()),
            "complete": pa.array([s is not None for s in stats], pa.bool_()),
        }
    )
