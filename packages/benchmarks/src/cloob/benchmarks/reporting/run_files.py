"""A failed evaluation leaves its results folder as it found it.

Runs write cache entries (zero-shot classifiers, linear-probe features) before they know whether
they will finish. `RunFiles` remembers the entries it wrote and the folders that did not exist
before; when the run fails, it removes those entries and then those folders if nothing else is in
them. Files it did not write are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class RunFiles:
    def __init__(self, *folders: Path) -> None:
        """`folders`: where the run may write (made when needed)."""
        self.new_folders = [f for f in map(_outermost_missing, folders) if f is not None]
        self.written: list[Path] = []

    def wrote(self, path: Path) -> None:
        self.written.append(path)

    @contextlib.contextmanager
    def undone_on_failure(self) -> Iterator[RunFiles]:
        try:
            yield self
        except Exception:
            self.undo()
            raise

    def undo(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        for folder in self.new_folders:
            _remove_empty(folder)


def _outermost_missing(folder: Path) -> Path | None:
    """The highest folder on the way to `folder` that does not exist yet (None: it exists)."""
    folder = Path(folder).absolute()
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def _remove_empty(folder: Path) -> None:
    """Remove `folder` and the folders inside it, as far as they are empty."""
    if not folder.is_dir():
        return
    for sub in sorted(
        (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()
