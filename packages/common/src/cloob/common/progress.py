"""The one rich progress bar of the toolkit: downloads (bytes), evaluation loops (counts) and the
training loop (counts plus a live stats column). Transient where it only reports a wait."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class ProgressBar:
    """A bar with `label`, `total` (None: unknown), `done` already; `unit` "items" or "bytes";
    `stats=True` adds a text column that `show()` updates. Disabled, every call is a no-op."""

    def __init__(
        self,
        enabled: bool,
        label: str,
        total: int | None,
        *,
        done: int = 0,
        unit: str = "items",
        stats: bool = False,
        transient: bool = True,
    ) -> None:
        columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn()]
        columns += (
            [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
        )
        columns.append(TimeRemainingColumn())
        if stats:
            columns.append(TextColumn("{task.fields[stats]}"))
        self._bar = Progress(*columns, transient=transient, disable=not enabled)
        self._task = self._bar.add_task(label, total=total, completed=done, stats="")

    def start(self) -> ProgressBar:
        self._bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)

    def show(self, stats: str) -> None:
        self._bar.update(self._task, stats=stats)

    def stop(self) -> None:
        self._bar.stop()

    def __enter__(self) -> ProgressBar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def progress_bar(
    enabled: bool, label: str, total: int | None, *, done: int = 0, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """`with progress_bar(...) as advance: advance(n)` — the bar for a loop over `total` things."""
    with ProgressBar(enabled, label, total, done=done, unit=unit) as bar:
        yield bar.advance
