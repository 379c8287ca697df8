"""The trainer package keeps the layout docs/architecture.md describes: dependencies pointing one
way (contracts → data, objectives, models → loop → cli), no import cycle, at most seven import
floors, a thin CLI on top whose import loads no torch (so `--help` is fast), and the other
packages reached only lazily. Read from the source (`support.import_graph`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import import_graph

SRC = Path(__file__).resolve().parents[2] / "packages/trainer/src"
PACKAGE = "cloob.trainer"
# config/methods/checkpoint/… (floor 1) → data sources, objectives, distributed (2) → run folder
# and map-style data (3) → data loaders (4) → the `data` package (5) → loop (6) → cli (7)
MAX_FLOORS = 7
# what data/ may import from the rest of the package: the config it is built from, the uint8
# transforms, the stop flag it polls, and (lazily) the demo's scene generator
DATA_MAY_IMPORT = {"config", "transforms", "preemption", "demo"}
# floor 1: what the rest builds on imports nothing of the package
LEAVES = {"config", "methods", "checkpoint", "launch", "hopfield", "preemption", "openclip_compat"}
HEAVY = {"torch", "open_clip", "numpy", "webdataset", "torchvision"}  # not loaded by `--help`


def graph(*, module_level: bool = False) -> dict[str, set[str]]:
    return import_graph.graph(SRC, PACKAGE, module_level=module_level)


def heavy_at_import(name: str) -> set[str]:
    """The heavy libraries importing module `name` loads (its module-level imports only)."""
    path = import_graph.modules(SRC, PACKAGE)[name]
    names = import_graph.imported_names(path, name, PACKAGE, module_level=True)
    return {n.split(".")[0] for n in names} & HEAVY


def problems(g: dict[str, set[str]], at_import: dict[str, set[str]]) -> list[str]:
    """`g`: every import; `at_import`: the imports that run when a module is imported, each
    module mapped to the heavy libraries it loads itself under the key `"!" + name`."""
    out = []
    for name, deps in sorted(g.items()):
        if name in LEAVES and deps:
            out.append(f"{name} imports {sorted(deps)}: it is a leaf, importing nothing of ours")
        for dep in sorted(deps):
            if dep == "cli":
                out.append(f"{name} imports cli: the CLI is the top, nothing imports it")
            if dep == "loop" and name != "cli":
                out.append(f"{name} imports loop: only the CLI calls train()")
            outside = dep.split(".")[0] != "data" and dep not in DATA_MAY_IMPORT
            if name.startswith("data.") and outside:
                out.append(f"{name} imports {dep}: data/ may import only {DATA_MAY_IMPORT}")
    loaded, todo = set(), ["cli"]
    while todo:  # what `import cloob.trainer.cli` loads of the package
        name = todo.pop()
        if name not in loaded:
            loaded.add(name)
            todo.extend(at_import.get(name, set()))
    for name in sorted(loaded):
        for lib in sorted(at_import.get("!" + name, set())):
            out.append(f"{name} imports {lib} when the CLI is imported: keep it inside a function")
    try:
        return out + import_graph.too_many_floors(g, MAX_FLOORS)
    except AssertionError as cycle:
        return [*out, str(cycle)]


def at_import_graph() -> dict[str, set[str]]:
    g = graph(module_level=True)
    return {**g, **{"!" + name: heavy_at_import(name) for name in g}}


def test_trainer_layout():
    assert problems(graph(), at_import_graph()) == []


def test_the_cli_imports_the_library_inside_its_commands():
    assert {"loop", "export", "preemption"} <= graph()["cli"]
    assert not {"loop", "export", "preemption"} & graph(module_level=True)["cli"]
    assert heavy_at_import("loop") >= {"torch"}  # so the check above has something to keep out


def test_other_packages_only_lazily():
    """benchmarks for zero-shot during training, dataprep for the demo (through
    `importlib`): neither when a trainer module is imported, so a training node needs neither."""
    for name, path in import_graph.modules(SRC, PACKAGE).items():
        names = import_graph.imported_names(path, name, PACKAGE, module_level=True)
        assert not {n for n in names if n.startswith(("cloob.benchmarks", "cloob.dataprep"))}, name
    evaluate = import_graph.modules(SRC, PACKAGE)["evaluate"]
    assert any(
        n.startswith("cloob.benchmarks")
        for n in import_graph.imported_names(evaluate, "evaluate", PACKAGE)
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"losses": {"cli"}}, "losses imports cli: the CLI is the top"),
        ({"export": {"loop"}}, "export imports loop: only the CLI"),
        ({"data.stream": {"models"}}, "data.stream imports models: data/ may import only"),
        ({"cli": {"loop"}}, "loop imports torch when the CLI is imported"),
        ({"methods": {"!torch"}}, "methods imports torch when the CLI is imported"),
        ({"config": {"loop"}}, "import cycle"),
        ({"checkpoint": {"models"}}, "checkpoint imports ['models']: it is a leaf"),
    ],
)
def test_the_checks_can_fail(edit, expected):
    """Each edit adds imports to the real graph (`!torch`: a module-level `import torch`)."""
    g = {name: set(deps) for name, deps in graph().items()}
    at_import = at_import_graph()
    for name, deps in edit.items():
        for dep in deps:
            if dep.startswith("!"):
                at_import["!" + name] = at_import["!" + name] | {dep[1:]}
                continue
            g[name].add(dep)
            at_import[name] = at_import[name] | {dep}
    found = problems(g, at_import)
    assert any(p.startswith(expected) for p in found), found


def test_the_floor_count_can_fail():
    g = {name: set(deps) for name, deps in graph().items()}
    g["config"].add("methods")
    g["methods"].add("hopfield")  # config → methods → hopfield: one floor more under cli
    found = import_graph.too_many_floors(g, MAX_FLOORS)
    assert found and found[0].startswith(f"{MAX_FLOORS + 2} import floors")
