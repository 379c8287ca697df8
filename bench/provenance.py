"""Where a measurement came from, and whether it still describes the code.

Every results file under `bench/results/` carries a `provenance` record (or one per entry of its
`measurements` list) written by `record()` when the bench script runs:

- `commit`: the git commit the measurement ran on (HEAD of the checkout);
- `script`: the bench script that made it, relative to the repository root;
- `code`: a fingerprint of that script's code — its syntax tree without docstrings, import
  statements and type annotations, so comments, formatting, docstrings, annotations, moves and
  import paths do not count, and any change to what the script computes does;
- `measures`: further paths whose code the measurement describes (a package module, a folder),
  compared by the same fingerprint;
- `dirty`: which files of `measures` had uncommitted changes when it ran (the script itself is
  covered by `code`).

`problems()` holds the staleness rule the docs test applies (CONTRIBUTING.md, "Benchmarks"): a
results file is stale when its script's code changed since, when its commit is not an ancestor of
HEAD, when the code of a path it `measures` differs from that commit's, or when it measured
uncommitted code.
Only the standard library: the docs test and the renderer import this without torch.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def code_fingerprint(source: str, name: str = "script.py") -> str:
    """sha256 (first 16 hex digits) of what a script computes. Python: the syntax tree minus
    docstrings, imports and type annotations; anything else (shell): the lines that are neither
    blank nor comments."""
    if name.endswith(".py"):
        tree = _Unannotated().visit(ast.parse(source))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list):
                body[:] = [s for s in body if not _docstring_or_import(s)] or [ast.Pass()]
        text = ast.dump(tree)
    else:
        lines = (line.strip() for line in source.splitlines())
        text = "\n".join(line for line in lines if line and not line.startswith("#"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Unannotated(ast.NodeTransformer):
    """Type annotations say nothing about what runs: `x: T = v` becomes `x = v`, `x: T` goes."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt | None:
        if node.value is None:
            return None
        return ast.Assign(targets=[node.target], value=self.visit(node.value), lineno=0)


def _docstring_or_import(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def git(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def head(root: Path = ROOT) -> str:
    return git("rev-parse", "HEAD", root=root).stdout.strip()


def record(
    script: Path | None = None,
    measures: Sequence[str] = (),
    root: Path = ROOT,
    commit: str | None = None,
) -> dict[str, Any]:
    """The provenance of a measurement made by `script` (default: the running `__main__`) from
    `commit` (default: HEAD now; a script that runs long passes the HEAD it started at)."""
    if script is None:
        script = Path(sys.modules["__main__"].__file__ or "")
    script = script.resolve()
    rel = script.relative_to(root.resolve()).as_posix()
    commit = commit or head(root)
    changed = git("status", "--porcelain", "--", *measures, root=root).stdout.splitlines()
    changed = changed if measures else []  # no paths: git would list the whole tree
    return {
        "commit": commit,
        "date": git("show", "-s", "--format=%cs", commit, root=root).stdout.strip(),
        "script": rel,
        "code": code_fingerprint(script.read_text(encoding="utf-8"), script.name),
        "measures": list(measures),
        "dirty": sorted(line[3:] for line in changed),
    }


def provenances(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(label, provenance) of each measurement in a results file: the file's own, or one per
    entry of its `measurements` list (files that gather runs made at different times)."""
    if "measurements" in payload:
        for i, entry in enumerate(payload["measurements"]):
            yield f"measurements[{i}]", entry.get("provenance")
    else:
        yield "", payload.get("provenance")


def problems(payload: dict[str, Any], where: str, root: Path = ROOT) -> list[str]:
    """Why the measurements of one results file no longer describe the code (empty: current)."""
    found = []
    for label, prov in provenances(payload):
        at = f"{where}{' ' + label if label else ''}"
        if not prov:
            found.append(f"{at}: no provenance (which commit and script measured it?)")
            continue
        found += _provenance_problems(prov, at, root)
    return found


def _provenance_problems(prov: dict[str, Any], at: str, root: Path) -> list[str]:
    found = []
    script = root / prov["script"]
    if not script.is_file():
        return [f"{at}: its script {prov['script']} does not exist"]
    if code_fingerprint(script.read_text(encoding="utf-8"), script.name) != prov["code"]:
        found.append(f"{at}: {prov['script']} changed since it measured (rerun it)")
    if prov.get("dirty"):
        found.append(f"{at}: measured uncommitted changes to {', '.join(prov['dirty'])}")
    if git("rev-parse", "--git-dir", root=root).returncode != 0:
        return found  # not a git checkout (an unpacked archive): the code check above is all
    commit = prov["commit"]
    if git("merge-base", "--is-ancestor", commit, "HEAD", root=root).returncode != 0:
        found.append(f"{at}: measured commit {commit[:10]} is not in this branch's history")
    else:
        changed = changed_since(commit, prov.get("measures", []), root)
        if changed:
            found.append(
                f"{at}: code it measures changed since {commit[:10]}: {', '.join(changed)}"
            )
    return found


def changed_since(commit: str, paths: Sequence[str], root: Path = ROOT) -> list[str]:
    """Files under `paths` whose code (`code_fingerprint`) differs between `commit` and the
    working tree, or that exist in only one of the two."""
    if not paths:
        return []
    then = set(git("ls-tree", "-r", "--name-only", commit, "--", *paths, root=root).stdout.split())
    now = set(git("ls-files", "--", *paths, root=root).stdout.split())
    changed = []
    for name in sorted(then | now):
        file = root / name
        if name not in then or name not in now or not file.is_file():
            changed.append(name)
            continue
        old = git("show", f"{commit}:{name}", root=root).stdout
        if code_fingerprint(old, name) != code_fingerprint(file.read_text(encoding="utf-8"), name):
            changed.append(name)
    return changed
