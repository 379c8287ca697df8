"""A bad-input matrix for a CLI: each case is one line (input → exit code, first stderr line,
files left behind), checked the same way for every CLI.

A case's `make(scratch)` writes whatever input files it needs under `scratch` and returns the
argument list. After the run, `scratch` must hold what it held before (same names, same bytes)
plus exactly the new entries named in `leaves` (the outermost new paths, relative to `scratch`).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


# --- URLs given to path options: each option that names a file or folder declares the places it
# takes (`place=` in cloob.common.cli); a URL of any other scheme must be refused in one line, and
# never become a local folder named `s3:` or `http:`.

URLS = {"s3": "s3://bucket/x", "http": "http://127.0.0.1:9/x.csv", "file": "file:///x"}
UNREACHABLE = "the storage endpoint cannot be reached"  # s3:// with AWS_ENDPOINT_URL on a dead port


@dataclass(frozen=True)
class PathOption:
    """`command flag`, and how to build a command line that gives `flag` a URL (everything else
    valid enough that the URL is what fails). `takes`: the schemes it takes, with the first line
    such a URL ends in here (the test points the object store at a dead port)."""

    command: str
    flag: str
    make: Callable[[Path, str], Sequence[object]]  # (scratch, url) → CLI arguments
    takes: Mapping[str, str] = field(default_factory=dict)


def url_cases(options: Sequence[PathOption]) -> list[BadInput]:
    """Every option × every scheme of URLS, as bad-input rows."""
    return [
        BadInput(
            f"{o.command.replace(' ', '-')}-{o.flag.lstrip('-')}-{scheme}",
            lambda s, o=o, url=url: o.make(s, url),
            o.takes.get(scheme, f"is a {scheme}:// URL; this option takes"),
        )
        for o in options
        for scheme, url in URLS.items()
    ]


def unanswered_store(monkeypatch: Any) -> None:
    """Credentials and an endpoint for an object store on a loopback port nobody listens on: a
    URL that reaches the storage layer fails there, fast, and never leaves the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def placed_options(app: Any) -> set[tuple[str, str]]:
    """(command, flag) of every option of a typer `app` that refuses some URL scheme (so names a
    place), found by asking each option's own check."""
    import typer

    found = set()
    for path, command in _commands(typer.main.get_command(app), ""):
        for param in command.params:
            if param.callback is None or param.is_eager:
                continue
            try:
                param.callback(None, param, ("zz://x",) if param.multiple else "zz://x")
            except typer.BadParameter:
                found.add((path, param.opts[0] if param.opts[0].startswith("-") else param.name))
    return found


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    sub = getattr(command, "commands", None)
    if sub is None:
        yield path, command
        return
    for name, child in sub.items():
        yield from _commands(child, f"{path} {name}".strip())
