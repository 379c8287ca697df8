"""The tables the `benchmarks` commands print: results records and dataset listings, as rich
tables on stdout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from cloob.benchmarks.reporting import report

ACCURACY_TITLE = "Zero-shot accuracy (%) — headline in bold"


def show_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[str] = ()
) -> None:
    """A titled table; the `right` columns right-aligned (numbers)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def show_columns(
    records: Sequence[Mapping[str, Any]], title: str, columns: dict[str, str], scale: float = 100.0
) -> None:
    """One row per record: checkpoint, dataset and the metrics named in `columns` (key → title),
    as percentages (`scale` 100) or plain numbers (`scale` 1)."""
    rows = [
        (
            r["label"],
            r["dataset"],
            *(
                f"{scale * r['metrics'][k]:.2f}" if scale != 1.0 else f"{r['metrics'][k]:.3f}"
                for k in columns
            ),
        )
        for r in records
    ]
    show_table(title, ("checkpoint", "dataset", *columns.values()), rows, (*columns.values(),))


def show_accuracy(
    records: Sequence[Mapping[str, Any]], compare: str | None, title: str = ACCURACY_TITLE
) -> None:
    """Accuracy per record (headline in bold), then, for several checkpoints or a paper to compare
    with, the headlines side by side."""
    rows = [
        (
            r["label"],
            r["dataset"],
            str(r["n_images"]),
            str(r.get("n_skipped", 0)),
            *(
                f"[bold]{100 * r['metrics'][m]:.2f}[/]{report.unconverged(r)}"
                if m == r["headline"]
                else f"{100 * r['metrics'][m]:.2f}"
                for m in report.METRICS
            ),
        )
        for r in records
    ]
    numbers = ("images", "skipped", "top-1", "top-5", "mean-per-class")
    show_table(title, ("checkpoint", "dataset", *numbers), rows, numbers)
    if any(report.unconverged(r) for r in records):
        Console().print(report.UNCONVERGED_NOTE)
    if len({r["label"] for r in records}) > 1 or compare:
        side = report.side_by_side(records, compare)
        grid = [
            (str(name), *("" if v != v else f"{v:.2f}" for v in row))
            for name, row in side.iterrows()
        ]
        columns = [str(col) for col in side.columns]
        show_table("Side by side (headline %)", ("dataset", *columns), grid, columns)
