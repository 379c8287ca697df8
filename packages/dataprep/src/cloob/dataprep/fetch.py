"""A fetch, start to finish: source list → input parts → img2dataset → sizes.json → manifest.

Every step is either skipped because its result is already on disk, or writes under a temp name:
re-running the same command after a kill at any moment finishes the job.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from cloob.common.cli import UsageError
from cloob.common.files import write_json
from cloob.dataprep.config import DownloadOptions, SourceSpec
from cloob.dataprep.download import IncompleteError, run_img2dataset
from cloob.dataprep.layout import Layout, locked
from cloob.dataprep.manifest import build_manifest, connect, record_run
from cloob.dataprep.shards import complete_shards, remove_incomplete, write_sizes

# Parts of the list given to img2dataset: it reads each part whole, so bounded parts bound memory.
PART_ROWS = 1_000_000
# What a fetch writes into DIR; anything else there means DIR is not ours to write into.
_OURS = {"shards", "urls.parquet", "urls.json", "input", "input.tmp", "retry", "sources",
         "fetch.json", "runs.json", "manifest.duckdb", "sizes.json", "img2dataset.log", ".lock"}


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


def fetch(root: Path, spec: SourceSpec, build_list: ListBuilder, opts: DownloadOptions, *,
          force: bool = False, command: str = "fetch", say: Callable[[str], None] = print) -> Counts:
    layout = Layout(root)
    created = not root.exists()
    started = datetime.now()
    downloading = False
    try:
        if not created:
            _check_ours(root)  # before the lock file is created in someone else's directory
        with locked(root):
            identity = {"source": spec.name, "args": spec.args, **opts.identity()}
            if not force:
                _refuse_other_options(layout, identity)
            # The list is built (and bad input found) before --force removes anything.
            _ensure_list(layout, spec, build_list, say)
            if force:
                _start_over(layout)
            state = _ensure_inputs(layout, identity, opts, spec)
            downloading = True
            _download(layout, opts, spec.extra_columns, range(state["n_shards"]), extend=False)
            counts = _finish(layout, command, {**asdict(opts), "source": spec.name, **spec.args},
                             started)
    except UsageError:
        if created and not downloading:  # bad input on a fresh directory: leave nothing behind
            shutil.rmtree(root, ignore_errors=True)
        raise
    return counts


def retry(root: Path, overrides: dict, *, say: Callable[[str], None] = print) -> Counts:
    """Download the failed samples again into new shards, then update sizes and manifest."""
    layout = Layout(root)
    if not layout.fetch_json.exists():
        raise UsageError(f"{root} is not a finished dataprep fetch (no fetch.json)")
    started = datetime.now()
    with locked(root):
        state = json.loads(layout.fetch_json.read_text())
        opts = DownloadOptions(**{**state["options"], **overrides})
        remove_incomplete(layout.shards)
        missing = set(range(state["n_shards"])) - {int(n) for n in complete_shards(layout.shards)}
        if missing:
            raise UsageError(f"{len(missing)} shards of the fetch are not finished: re-run the "
                             "fetch command first")
        build_manifest(layout)
        n = _write_retry_input(layout)
        if n == 0:
            say("nothing to retry: every sample succeeded")
        else:
            say(f"retrying {n} failed samples")
            _download(layout, opts, tuple(state.get("extra_columns", ())), None, extend=True,
                      inputs=layout.retries)
        shutil.rmtree(layout.retries, ignore_errors=True)
        return _finish(layout, "retry", {**asdict(opts)}, started)


def _check_ours(root: Path) -> None:
    strangers = [p.name for p in root.iterdir() if p.name not in _OURS
                 and not p.name.startswith(".")]
    if strangers:
        raise UsageError(f"{root} holds files dataprep did not write ({', '.join(sorted(strangers)[:3])}"
                         "): use a new or empty directory")


def _start_over(layout: Layout) -> None:
    """--force: drop everything but the url list and downloaded sources (rebuilt only if stale)."""
    for name in ("shards", "input", "input.tmp", "retry"):
        shutil.rmtree(layout.root / name, ignore_errors=True)
    for path in (layout.fetch_json, layout.runs_json, layout.manifest, layout.sizes_json,
                 layout.log):
        path.unlink(missing_ok=True)


def _refuse_other_options(layout: Layout, identity: dict) -> None:
    if not layout.fetch_json.exists():
        return
    before = json.loads(layout.fetch_json.read_text())["identity"]
    if before != identity:
        diff = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        shown = ", ".join(f"{k}: {before.get(k)!r} → {identity.get(k)!r}" for k in diff)
        raise UsageError(f"{layout.root} was made with different options ({shown}); "
                         "use --force to start over")


def _ensure_list(layout: Layout, spec: SourceSpec, build_list: ListBuilder,
                 say: Callable[[str], None]) -> None:
    wanted = {"source": spec.name, "args": spec.args}
    if layout.url_list.exists() and layout.url_list_meta.exists() and \
            json.loads(layout.url_list_meta.read_text()) == wanted:
        say(f"reusing url list {layout.url_list}")
        return
    fresh = layout.root / ".urls.new.parquet"
    say(build_list(fresh))  # bad input fails here, before the old list is touched
    # A list without urls.json is rebuilt next time, so a kill between these steps is safe.
    layout.url_list_meta.unlink(missing_ok=True)
    fresh.replace(layout.url_list)
    write_json(layout.url_list_meta, wanted)


def _ensure_inputs(layout: Layout, identity: dict, opts: DownloadOptions,
                   spec: SourceSpec) -> dict:
    """Cut the list into img2dataset's input parts once; fetch.json marks them complete."""
    if layout.fetch_json.exists() and layout.inputs.is_dir():
        return json.loads(layout.fetch_json.read_text())
    spp = opts.samples_per_shard
    rows = _write_parts(layout.url_list, layout.inputs, spp * max(1, PART_ROWS // spp),
                        opts.max_samples)
    state = {"identity": identity, "options": asdict(opts), "rows": rows,
             "n_shards": math.ceil(rows / spp), "extra_columns": list(spec.extra_columns)}
    write_json(layout.fetch_json, state)
    return state


def _write_parts(src: Path, out: Path, part_rows: int, limit: int | None) -> int:
    """Copy the first `limit` rows of `src` into parts of exactly `part_rows` rows (the last may
    be shorter), so img2dataset's shard boundaries are the same as for one big file."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    total = in_part = part = 0
    writer = None
    for batch in pq.ParquetFile(src).iter_batches(batch_size=65536):
        if limit is not None:
            batch = batch.slice(0, limit - total)
        while batch.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(tmp / f"{part:05d}.parquet", batch.schema)
            take = min(batch.num_rows, part_rows - in_part)
            writer.write_batch(batch.slice(0, take))
            batch, in_part, total = batch.slice(take), in_part + take, total + take
            if in_part == part_rows:
                writer.close()
                writer, in_part, part = None, 0, part + 1
        if limit is not None and total >= limit:
            break
    if writer is not None:
        writer.close()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return total


def _write_retry_input(layout: Layout) -> int:
    shutil.rmtree(layout.retries, ignore_errors=True)
    layout.retries.mkdir(parents=True)
    target = layout.retries / "00000.parquet"
    with connect(layout) as con:
        n = con.execute("SELECT count(*) FROM samples WHERE status <> 'success'").fetchall()[0][0]
        if n:
            con.execute(
                f"""COPY (SELECT l.* FROM read_parquet('{layout.url_list}') l
                    WHERE l.source_id IN (SELECT source_id FROM samples WHERE status <> 'success')
                    ORDER BY l.source_id) TO '{target}' (FORMAT parquet)""")
    return n


def _download(layout: Layout, opts: DownloadOptions, extra_columns: tuple[str, ...],
              expected: range | None, *, extend: bool, inputs: Path | None = None) -> None:
    remove_incomplete(layout.shards)
    done = {int(n) for n in complete_shards(layout.shards)}
    if expected is not None and set(expected) <= done:
        return
    before = set(done)
    run_img2dataset(inputs or layout.inputs, layout.shards, opts, extra_columns=extra_columns,
                    log=layout.log, extend=extend)
    done = {int(n) for n in complete_shards(layout.shards)}
    if expected is not None and not set(expected) <= done:
        failed = len(set(expected) - done)
        raise IncompleteError(f"{failed} shards did not finish (see {layout.log}); "
                              "re-run the same command to resume")
    if extend and done == before:
        raise IncompleteError(f"the retry wrote no shard (see {layout.log})")


def _finish(layout: Layout, command: str, options: dict, started: datetime) -> Counts:
    write_sizes(layout)
    build_manifest(layout)
    with connect(layout) as con:
        rows, success = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM samples").fetchall()[0]
        shards = con.execute("SELECT count(*) FROM shards").fetchall()[0][0]
    counts = Counts(rows=rows, success=success, failed=rows - success, shards=shards)
    record_run(layout, command, options, started,
               {"rows": rows, "success": success, "failed": rows - success})
    build_manifest(layout)  # again, so `runs` includes this run
    return counts
