"""A fetch, start to finish: source list → input parts → img2dataset → sizes.json → manifest.

Every step is either skipped because its result is already on disk, or writes under a temp name:
re-running the same command after a kill at any moment finishes the job. With a remote dataset
(`data`, e.g. s3://bucket/prefix) the shards go to the bucket, the records stay in `root` (the
working folder) and are copied to the bucket when the run ends (see `layout.push_records`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cloob.common import storage
from cloob.common.cli import UsageError, package_version
from cloob.common.files import write_json
from cloob.dataprep.allowed_urls import REFUSED_MESSAGE, REFUSED_STATUS, fetchable_mask
from cloob.dataprep.config import DownloadOptions, SourceSpec
from cloob.dataprep.download import IncompleteError, run_img2dataset
from cloob.dataprep.engines import preflight
from cloob.dataprep.layout import Layout, existing, locked, place, pull_records, push_records
from cloob.dataprep.manifest import build_manifest, connect, record_run
from cloob.dataprep.shards import complete_shards, remove_incomplete, write_sizes
from cloob.dataprep.sources import Source

# Parts of the list given to img2dataset: it reads each part whole, so bounded parts bound memory.
PART_ROWS = 1_000_000
# What a fetch writes into DIR; anything else there means DIR is not ours to write into.
_OURS = {
    "shards",
    "urls.parquet",
    "urls.json",
    "input",
    "input.tmp",
    "retry",
    "sources",
    "fetch.json",
    "runs.json",
    "manifest.duckdb",
    "sizes.json",
    "img2dataset.log",
    ".lock",
    "refused.parquet",
    ".dataprep",
}


@dataclass
class Counts:
    rows: int
    success: int
    failed: int
    shards: int

    @property
    def rate(self) -> float:
        return self.success / self.rows if self.rows else 0.0


# A source's list builder: writes the parquet list at the given path, returns a summary line.
ListBuilder = Callable[[Path], str]


def fetch_dataset(
    out: str,
    source: Callable[[Path], Source],
    opts: DownloadOptions,
    *,
    force: bool = False,
    work: Path | None = None,
    storage_options: str | None = None,
    say: Callable[[str], None] = print,
) -> Counts:
    """`dataprep fetch <source>`: where the dataset goes, the download options, then the
    source's own inputs are checked in that order, before anything is written; a summary table
    at the end."""
    from cloob.dataprep.report import print_counts

    root, data = place(out, work, storage_options)
    opts.check()
    preflight(opts.distributor)  # after the cheap checks: it may try to connect for a few seconds
    chosen = source(root)
    counts = fetch(root, chosen.spec, chosen.build_list, opts, data=data, force=force, say=say)
    print_counts(data or str(root), counts)
    return counts


def retry_dataset(
    dataset: str,
    overrides: dict,
    *,
    work: Path | None = None,
    storage_options: str | None = None,
    say: Callable[[str], None] = print,
) -> Counts:
    """`dataprep retry DIR`: the options in `overrides` that are not None replace the fetch's;
    a summary table at the end."""
    from cloob.dataprep.report import print_counts

    local, data = place(dataset, work, storage_options)
    if data is None:
        existing(dataset)
    changed = {k: v for k, v in overrides.items() if v is not None}
    counts = retry(local, changed, data=data, say=say)
    print_counts(dataset, counts)
    return counts


def fetch(
    root: Path,
    spec: SourceSpec,
    build_list: ListBuilder,
    opts: DownloadOptions,
    *,
    data: str | None = None,
    force: bool = False,
    command: str = "fetch",
    say: Callable[[str], None] = print,
) -> Counts:
    layout = Layout(root, data)
    if data:
        storage.check_access(data)
        _check_ours_remote(layout)
    before = _entries(root)
    if before:
        _check_ours(layout, before)  # before the lock file is created in someone else's directory
    started = datetime.now()
    downloading = False
    try:
        with locked(root):
            pull_records(layout)
            if not layout.marker.exists():
                write_json(
                    layout.marker,
                    {"made_by": "cloob-dataprep", "version": package_version("cloob-dataprep")},
                )
            identity = {"source": spec.name, "args": spec.args, **opts.identity()}
            if not force:
                _refuse_other_options(layout, identity)
            # The list is built (and bad input found) before --force removes anything.
            _ensure_list(layout, spec, build_list, say)
            if force:
                _start_over(layout)
            state = _ensure_inputs(layout, identity, opts, spec)
            downloading = True
            if layout.is_remote:  # claim the prefix before the first shard lands there
                storage.put_file(layout.marker, layout.dataset / layout.marker.name)
            _download(
                layout, opts, spec.extra_columns, range(state["n_shards"]), extend=False, say=say
            )
            counts = _finish(
                layout, command, {**asdict(opts), "source": spec.name, **spec.args}, started
            )
    except Exception:
        if not downloading:  # bad input: leave DIR as it was found
            _undo_start(root, before)
        raise
    return counts


def retry(
    root: Path, overrides: dict, *, data: str | None = None, say: Callable[[str], None] = print
) -> Counts:
    """Download the failed samples again into new shards, then update sizes and manifest."""
    layout = Layout(root, data)
    if data:
        storage.check_access(data)
        with locked(root):
            pull_records(layout)
    if not layout.fetch_json.exists():
        raise UsageError(f"{layout.shown} is not a finished dataprep fetch (no fetch.json)")
    started = datetime.now()
    with locked(root):
        state = json.loads(layout.fetch_json.read_text())
        opts = DownloadOptions(**{**state["options"], **overrides})
        preflight(opts.distributor)
        remove_incomplete(layout.shards)
        missing = set(range(state["n_shards"])) - {int(n) for n in complete_shards(layout.shards)}
        if missing:
            raise UsageError(
                f"{len(missing)} shards of the fetch are not finished: re-run the "
                "fetch command first"
            )
        build_manifest(layout)
        n = _write_retry_input(layout)
        if n == 0:
            say("nothing to retry: every sample succeeded (or has a URL that is never fetched)")
        else:
            say(f"retrying {n} failed samples")
            _download(
                layout,
                opts,
                tuple(state.get("extra_columns", ())),
                None,
                extend=True,
                inputs=layout.retries,
                say=say,
            )
        shutil.rmtree(layout.retries, ignore_errors=True)
        return _finish(layout, "retry", {**asdict(opts)}, started)


def _entries(root: Path) -> set[str] | None:
    """The names in `root`, or None when it does not exist."""
    return {p.name for p in root.iterdir()} if root.exists() else None


def _check_ours(layout: Layout, names: set[str]) -> None:
    """A non-empty DIR must be one dataprep made, holding nothing else: we never write, delete or
    overwrite files in someone else's folder (a hand-made shards/ and sizes.json look like ours)."""
    strangers = (
        names
        if not layout.made_by_dataprep()
        else {n for n in names if n not in _OURS and not n.startswith(".")}
    )
    if strangers:
        raise UsageError(
            f"{layout.root} holds files dataprep did not write "
            f"({', '.join(sorted(strangers)[:3])}): use a new or empty directory"
        )


def _check_ours_remote(layout: Layout) -> None:
    """The same rule for a bucket prefix: empty, or marked as ours by an earlier fetch."""
    names = {p.name for p in layout.dataset.iterdir()}
    if names and layout.marker.name not in names:
        raise UsageError(
            f"{layout.data} holds objects dataprep did not write "
            f"({', '.join(sorted(names)[:3])}): use a new or empty prefix"
        )


def _undo_start(root: Path, before: set[str] | None) -> None:
    """Remove what this run added to `root` (all of it if the run created it)."""
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for name in _entries(root) or set():
        if name not in before:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _start_over(layout: Layout) -> None:
    """--force: drop everything but the url list and downloaded sources (rebuilt only if stale)."""
    for name in ("input", "input.tmp", "retry"):
        shutil.rmtree(layout.root / name, ignore_errors=True)
    storage.rmtree(layout.shards)
    for path in (
        layout.fetch_json,
        layout.runs_json,
        layout.manifest,
        layout.sizes_json,
        layout.log,
        layout.refused,
    ):
        path.unlink(missing_ok=True)
    if layout.is_remote:  # or a killed --force run would find the old records there again
        for path in (
            layout.fetch_json,
            layout.runs_json,
            layout.manifest,
            layout.log,
            layout.refused,
        ):
            (layout.dataset / path.name).unlink(missing_ok=True)


def _refuse_other_options(layout: Layout, identity: dict) -> None:
    if not layout.fetch_json.exists():
        return
    before = json.loads(layout.fetch_json.read_text())["identity"]
    if before != identity:
        diff = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        shown = ", ".join(f"{k}: {before.get(k)!r} → {identity.get(k)!r}" for k in diff)
        raise UsageError(
            f"{layout.root} was made with different options ({shown}); use --force to start over"
        )


def _ensure_list(
    layout: Layout, spec: SourceSpec, build_list: ListBuilder, say: Callable[[str], None]
) -> None:
    wanted = {"source": spec.name, "args": spec.args}
    if (
        layout.url_list.exists()
        and layout.url_list_meta.exists()
        and json.loads(layout.url_list_meta.read_text()) == wanted
    ):
        say(f"reusing url list {layout.url_list}")
        return
    fresh = layout.root / ".urls.new.parquet"
    say(build_list(fresh))  # bad input fails here, before the old list is touched
    # A list without urls.json is rebuilt next time, so a kill between these steps is safe.
    layout.url_list_meta.unlink(missing_ok=True)
    fresh.replace(layout.url_list)
    write_json(layout.url_list_meta, wanted)


def _ensure_inputs(layout: Layout, identity: dict, opts: DownloadOptions, spec: SourceSpec) -> dict:
    """Cut the list into img2dataset's input parts once; fetch.json marks them complete."""
    if layout.fetch_json.exists() and layout.inputs.is_dir():
        return json.loads(layout.fetch_json.read_text())
    spp = opts.samples_per_shard
    rows, fetchable = _write_parts(layout, spp * max(1, PART_ROWS // spp), opts.max_samples)
    state = {
        "identity": identity,
        "options": asdict(opts),
        "rows": rows,
        "n_shards": math.ceil(fetchable / spp),
        "extra_columns": list(spec.extra_columns),
    }
    write_json(layout.fetch_json, state)
    return state


def _write_parts(layout: Layout, part_rows: int, limit: int | None) -> tuple[int, int]:
    """Copy the http(s) rows among the first `limit` rows of the url list into parts of exactly
    `part_rows` rows (the last may be shorter), so img2dataset's shard boundaries are the same as
    for one big file; the other rows go to refused.parquet. Returns (rows read, rows in parts)."""
    out = layout.inputs
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    total = kept = in_part = part = 0
    writer = None
    refused = _RefusedRows(layout.root / ".refused.parquet.tmp")
    for read in pq.ParquetFile(layout.url_list).iter_batches(batch_size=65536):
        if limit is not None:
            read = read.slice(0, limit - total)
        total += read.num_rows
        mask = fetchable_mask(read.column("url"))
        refused.add(read.filter(pc.invert(mask)))
        batch = read.filter(mask)
        kept += batch.num_rows
        while batch.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(tmp / f"{part:05d}.parquet", batch.schema)
            take = min(batch.num_rows, part_rows - in_part)
            writer.write_batch(batch.slice(0, take))
            batch, in_part = batch.slice(take), in_part + take
            if in_part == part_rows:
                writer.close()
                writer, in_part, part = None, 0, part + 1
        if limit is not None and total >= limit:
            break
    if writer is not None:
        writer.close()
    refused.close_onto(layout.refused)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return total, kept


class _RefusedRows:
    """refused.parquet, streamed: the rows no downloader may see, as failed samples for the
    manifest. Written under a temp name; `close_onto` renames it (or removes a stale one)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.writer: pq.ParquetWriter | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        n = batch.num_rows
        table = pa.table(
            {
                "source_id": batch.column("source_id"),
                "url": batch.column("url"),
                "caption": batch.column("caption"),
                "status": pa.array([REFUSED_STATUS] * n, pa.string()),
                "error_message": pa.array([REFUSED_MESSAGE] * n, pa.string()),
            }
        )
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)

    def close_onto(self, target: Path) -> None:
        if self.writer is None:
            target.unlink(missing_ok=True)
            return
        self.writer.close()
        self.tmp.replace(target)


def _write_retry_input(layout: Layout) -> int:
    shutil.rmtree(layout.retries, ignore_errors=True)
    layout.retries.mkdir(parents=True)
    target = layout.retries / "00000.parquet"
    with connect(layout) as con:
        failed = con.sql(
            f"""SELECT l.* FROM read_parquet('{layout.url_list}') l
                WHERE l.source_id IN (SELECT source_id FROM samples WHERE status <> 'success')
                ORDER BY l.source_id"""
        ).to_arrow_table()
    # Refused rows (and any non-http(s) row of a dataset made before they were refused) stay failed.
    failed = failed.filter(fetchable_mask(failed.column("url")))
    if failed.num_rows:
        pq.write_table(failed, target)
    return failed.num_rows


def _download(
    layout: Layout,
    opts: DownloadOptions,
    extra_columns: tuple[str, ...],
    expected: range | None,
    *,
    extend: bool,
    inputs: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    remove_incomplete(layout.shards)
    done = {int(n) for n in complete_shards(layout.shards)}
    if expected is not None and set(expected) <= done:
        return
    before = set(done)
    if opts.distributor != "multiprocessing":
        say(f"downloading with {opts.distributor}; its output goes to {layout.log}")
    run_img2dataset(
        inputs or layout.inputs,
        layout.shards,
        opts,
        extra_columns=extra_columns,
        log=layout.log,
        extend=extend,
    )
    done = {int(n) for n in complete_shards(layout.shards)}
    if expected is not None and not set(expected) <= done:
        failed = len(set(expected) - done)
        raise IncompleteError(
            f"{failed} shards did not finish (see {layout.log}); re-run the same command to resume"
        )
    if extend and done == before:
        raise IncompleteError(f"the retry wrote no shard (see {layout.log})")


def _finish(layout: Layout, command: str, options: dict, started: datetime) -> Counts:
    write_sizes(layout)
    build_manifest(layout)
    with connect(layout) as con:
        rows, success = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM samples"
        ).fetchall()[0]
        shards = con.execute("SELECT count(*) FROM shards").fetchall()[0][0]
    counts = Counts(rows=rows, success=success, failed=rows - success, shards=shards)
    record_run(
        layout,
        command,
        options,
        started,
        {"rows": rows, "success": success, "failed": rows - success},
    )
    build_manifest(layout)  # again, so `runs` includes this run
    push_records(layout)
    return counts
