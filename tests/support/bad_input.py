"""A bad-input matrix for a CLI: each case is one line (input → exit code, first stderr line,
files left behind), checked the same way for every CLI.

A case's `make(scratch)` writes whatever input files it needs under `scratch` and returns the
argument list. After the run, `scratch` must hold what it held before (same names, same bytes)
plus exactly the new entries named in `leaves` (the outermost new paths, relative to `scratch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BadInput:
    id: str
    # scratch dir (and, for the bucket cases, the S3 server) → CLI arguments
    make: Callable[..., Sequence[object]]
    first_line: str  # a substring of the one `error:` line
    code: int = 2
    leaves: frozenset[str] = frozenset()  # outermost new paths the run must leave in scratch


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → sha256 (files) or "dir", for everything under `root`."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def check(case: BadInput, scratch: Path, run: Callable[..., tuple[int, str]]) -> None:
    """Run `run(*args) -> (exit code, stderr)` for `case` and check the three promises."""
    args = case.make(scratch)
    before = snapshot(scratch)
    code, err = run(*args)
    lines = err.strip().splitlines()
    assert code == case.code, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.first_line in lines[0], lines[0]
    after = snapshot(scratch)
    new = after.keys() - before.keys()
    added = {rel for rel in new if rel.rpartition("/")[0] not in new}
    assert added == set(case.leaves), f"left behind: {sorted(added)}"
    changed = [rel for rel in before if after.get(rel) != before[rel]]
    assert not changed, f"changed or deleted: {changed}"
