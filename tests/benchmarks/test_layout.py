"""The benchmarks package keeps the layout docs/architecture.md describes: one folder per concern,
dependencies pointing one way (data → models → tasks → cli; reporting beside), at most four import
floors, no task importing another. Read from the source (`support.import_graph`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import import_graph

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
    "models": {"options", "data", "models"},  # the encoders take the shared eval options
    "reporting": {"reporting"},
    "tasks": {"options", "data", "models", "reporting", "tasks"},
}
TOP = {"cli", "options"}  # the only modules outside a concern's folder


def graph() -> dict[str, set[str]]:
    return import_graph.graph(SRC, PACKAGE)


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
    return out + import_graph.too_many_floors(g, MAX_FLOORS)


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
    assert import_graph.floors(chain)["cli"] == MAX_FLOORS + 1
    n = MAX_FLOORS + 1
    assert problems(chain) == [f"{n} import floors (at most {MAX_FLOORS}): cli on floor {n}"]
