"""The benchmarks package keeps the layout docs/architecture.md describes: one folder per concern,
dependencies pointing one way (data → models → tasks → cli; reporting beside), at most four import
floors, no task importing another. Read from the source with `ast` (module- and function-level
imports alike, as both run), so no import of torch is needed and a test takes milliseconds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "packages/benchmarks/src"
PACKAGE = "cloob.benchmarks"
# Seven floors before the layout (registry → datasets → zeroshot → runner → retrieval → analyze →
# cli), four now: data's leaves (registry, folders, images, …) → data builders and models →
# tasks → cli (docs/architecture.md).
MAX_FLOORS = 4
# what each concern may import from inside the package (cli may import everything)
ALLOWED = {
    "options": {"reporting"},  # the shared eval options may take a default from reporting (stats)
    "data": {"data"},
    "models": {"data", "models"},
    "reporting": {"reporting"},
    "tasks": {"options", "data", "models", "reporting", "tasks"},
}
TOP = {"cli", "options"}  # the only modules outside a concern's folder


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted name below cloob.benchmarks (`data.registry`; a package: `tasks.zeroshot`) → file."""
    root = src / PACKAGE.replace(".", "/")
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The package modules `path` imports anywhere in its body (not under `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([PACKAGE, *here, *filter(None, [base])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if not target.startswith(PACKAGE + "."):
                continue
            dotted = target[len(PACKAGE) + 1 :]
            while dotted and dotted not in known:  # `from pkg.mod import function` → pkg.mod
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                found.add(dotted)
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    known = modules(src)
    return {name: imports(path, name, known) for name, path in known.items()}


def floors(g: dict[str, set[str]]) -> dict[str, int]:
    """1 for a module that imports nothing of the package, else one more than its highest import."""
    floor: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> int:
        if name in chain:
            raise AssertionError("import cycle: " + " → ".join([*chain[chain.index(name) :], name]))
        if name not in floor:
            floor[name] = 1 + max((visit(d, (*chain, name)) for d in g[name]), default=0)
        return floor[name]

    for name in g:
        visit(name, ())
    return floor


def concern(name: str) -> str:
    return name.split(".")[0] if name else ""


def task_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 1 else None


def problems(g: dict[str, set[str]]) -> list[str]:
    out = []
    for name, deps in sorted(g.items()):
        if "." not in name and name not in TOP and name not in ALLOWED and name:
            out.append(f"{name}: a module outside data/, models/, tasks/, reporting/")
        home = concern(name)
        if name and "." not in name and name in ALLOWED and name != "options" and deps:
            out.append(f"{name}/__init__.py imports {sorted(deps)} (package __init__s stay empty)")
        for dep in sorted(deps):
            if home in ALLOWED and concern(dep) not in ALLOWED[home]:
                allowed = sorted(ALLOWED[home]) or "nothing"
                out.append(f"{name} imports {dep}: {home}/ may import only {allowed}")
            if task_of(name) and task_of(dep) and task_of(dep) != task_of(name):
                out.append(f"{name} imports {dep}: a task imports another task")
    deepest = floors(g)
    over = {n: f for n, f in deepest.items() if f > MAX_FLOORS}
    if over:
        out.append(
            f"{max(deepest.values())} import floors (at most {MAX_FLOORS}): "
            + ", ".join(f"{n} on floor {f}" for n, f in sorted(over.items()))
        )
    return out


def test_benchmarks_layout():
    assert problems(graph()) == []


def test_the_graph_sees_function_level_imports():
    g = graph()
    assert "data.metadata" in g["data.datasets"]  # imported inside resolve_task only
    assert {"data.inventory", "data.fetch", "data.train_splits"} <= g["cli"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"analyze": {"retrieval"}},
            "analyze: a module outside data/, models/, tasks/, reporting/",
        ),
        ({"tasks.analyze": {"tasks.retrieval"}}, "tasks.analyze imports tasks.retrieval: a task"),
        (
            {"data.extract": {"models.checkpoints"}},
            "data.extract imports models.checkpoints: data/ may",
        ),
        ({"reporting.paper": {"models.features"}}, "reporting.paper imports models.features"),
        ({"data.registry": {"cli"}}, "import cycle"),
    ],
)
def test_the_checks_can_fail(edit, expected):
    g = {name: set(deps) for name, deps in graph().items()}
    for name, deps in edit.items():
        g.setdefault(name, set()).update(deps)
        for dep in deps:
            g.setdefault(dep, set())
    try:
        found = problems(g)
    except AssertionError as err:
        found = [str(err)]
    assert any(p.startswith(expected) for p in found), found


def test_the_floor_count_can_fail():
    chain = {
        "cli": {"data.a0"},
        f"data.a{MAX_FLOORS - 1}": set(),
        **{f"data.a{i}": {f"data.a{i + 1}"} for i in range(MAX_FLOORS - 1)},
    }
    assert floors(chain)["cli"] == MAX_FLOORS + 1
    n = MAX_FLOORS + 1
    assert problems(chain) == [f"{n} import floors (at most {MAX_FLOORS}): cli on floor {n}"]
