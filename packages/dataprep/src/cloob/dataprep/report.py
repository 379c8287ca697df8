"""Rich tables for `stats`, `verify`, `query` and the summary after a fetch."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from rich.console import Console
from rich.progress import track
from rich.table import Table

from cloob.common.cli import UsageError
from cloob.dataprep.layout import Layout
from cloob.dataprep.manifest import connect
from cloob.dataprep.shards import check_tar, complete_shards, shard_names

console = Console()


def _layout(root: Path | Layout) -> Layout:
    return root if isinstance(root, Layout) else Layout(root)


def print_counts(root: Path | str, counts) -> None:  # counts: fetch.Counts
    table = Table(title=f"dataprep: {root}", show_header=False)
    table.add_row("rows", f"{counts.rows:,}")
    table.add_row("success", f"{counts.success:,} ({counts.rate:.1%})")
    table.add_row("failed", f"{counts.failed:,}")
    table.add_row("shards", f"{counts.shards:,}")
    console.print(table)


def print_stats(root: Path | Layout) -> None:
    layout = _layout(root)
    with connect(layout) as con:
        rows, ok, n_bytes, n_shards = con.execute(
            "SELECT (SELECT count(*) FROM samples), "
            "(SELECT count(*) FROM samples WHERE status = 'success'), "
            "(SELECT coalesce(sum(bytes), 0) FROM shards), (SELECT count(*) FROM shards)"
        ).fetchall()[0]
        summary = Table(title=layout.shown, show_header=False)
        summary.add_row("samples", f"{rows:,}")
        summary.add_row("success", f"{ok:,} ({ok / rows:.1%})" if rows else "0")
        summary.add_row("failed", f"{rows - ok:,}")
        summary.add_row("shards", f"{n_shards:,}")
        summary.add_row("bytes", f"{n_bytes:,} ({n_bytes / 2**20:.1f} MiB)")
        console.print(summary)
        _print_result(
            con.execute(
                "SELECT status, error_message, count(*) AS n FROM samples "
                "WHERE status <> 'success' "
                "GROUP BY ALL ORDER BY n DESC, error_message LIMIT 10"
            ),
            "top errors",
            10,
        )
        _print_result(
            con.execute(
                "SELECT shard, n_rows, n_success, n_failed, "
                "round(100.0 * n_success / nullif(n_rows, 0), 1) AS success_pct, bytes, complete "
                "FROM shards ORDER BY shard"
            ),
            "shards",
            10**9,
        )


def print_query(root: Path | Layout, sql: str, limit: int) -> None:
    with connect(_layout(root)) as con:
        try:
            result = con.execute(sql)
        except duckdb.Error as err:
            raise UsageError(f"query failed: {' '.join(str(err).split())}") from None
        if result.description is None:
            return
        _print_result(result, None, limit)


def verify_dir(root: Path | Layout) -> bool:
    """Check every shard; print a table of bad ones. True when all are good and the fetch
    finished (every shard fetch.json expects is complete)."""
    layout = _layout(root)
    done = complete_shards(layout.shards)
    unfinished = _unfinished(layout, done)
    bad: list[tuple[str, str]] = []
    checked = 0
    with connect(layout) as con:
        for name in track(
            shard_names(layout.shards), description="verifying", console=console, transient=True
        ):
            tar = layout.shards / f"{name}.tar"
            if name not in done:
                bad.append((tar.name, "incomplete: no stats file (re-run the fetch)"))
                continue
            keys = {
                k
                for (k,) in con.execute(
                    "SELECT key FROM attempts WHERE shard = ? AND status = 'success'", [tar.name]
                ).fetchall()
            }
            check = check_tar(tar, keys)
            checked += check.samples
            if check.samples != done[name]["successes"]:
                check.problems.append(
                    f"{check.samples} samples, stats say {done[name]['successes']}"
                )
            bad.extend((tar.name, p) for p in check.problems[:5])
    if unfinished:
        console.print(f"[red]incomplete[/red]: {unfinished}")
    if bad:
        table = Table(title="bad shards")
        table.add_column("shard")
        table.add_column("problem")
        for shard, problem in bad:
            table.add_row(shard, problem)
        console.print(table)
        n = len({s for s, _ in bad})
        console.print(f"[red]{n} bad shard(s)[/red] of {len(shard_names(layout.shards))}")
        return False
    if unfinished:
        return False
    console.print(f"[green]ok[/green]: {len(done)} shards, {checked:,} samples verified")
    return True


def _unfinished(layout: Layout, done: dict[str, dict]) -> str | None:
    """What is missing when the fetch did not finish: fetch.json fixes the shard count when the
    download starts, a shard is finished once its stats file is written (runs.json gets the run
    only after all of them are). A dataset in a bucket gets its fetch.json only when a run ends,
    so a bucket without one holds a run that was cut short, whatever the working folder says."""
    try:
        expected = int(json.loads(layout.fetch_json.read_text())["n_shards"])
    except (OSError, ValueError, KeyError, TypeError):
        expected = None  # a `fetch demo` directory, one from before fetch.json, a fresh --work
    finished = (
        len(done) if expected is None else len(set(range(expected)) & {int(name) for name in done})
    )
    if layout.is_remote and not (layout.dataset / layout.fetch_json.name).exists():
        of = "" if expected is None else f" of {expected}"
        return (
            f"{finished}{of} shards finished; the fetch did not complete ({layout.data} has "
            "no fetch.json, which a fetch copies there when it ends; re-run the same fetch "
            "command to finish it)"
        )
    if expected is None or finished == expected:
        return None
    return (
        f"{finished} of {expected} shards finished; the fetch did not complete "
        "(re-run the same fetch command to finish it)"
    )


def _print_result(result: duckdb.DuckDBPyConnection, title: str | None, limit: int) -> None:
    columns = [d[0] for d in result.description]
    rows = result.fetchmany(limit + 1)
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows[:limit]:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if len(rows) > limit:
        console.print(f"(first {limit} rows shown; use --limit)")
