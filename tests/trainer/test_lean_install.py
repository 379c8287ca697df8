"""A training node installs no download stack: the trainer's resolved dependency set (read from
uv.lock, no network, no venv) holds none of img2dataset, wandb, opencv or albumentations; the demo,
which needs dataprep, is the extra `cloob-trainer[demo]` and says so in one line when absent."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from cloob.trainer import cli

ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD_STACK = ("img2dataset", "wandb", "albumentations", "opencv")


def resolved(package: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every package `uv pip install package[extras]` brings, per uv.lock (all platforms)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    by_name = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo = [(package, extras)]
    while todo:
        name, wanted = todo.pop()
        entry = by_name[name]
        deps = list(entry.get("dependencies", []))
        for extra in wanted:
            deps += entry.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            key = (dep["name"], tuple(dep.get("extra", ())))
            if (f"{key[0]}[{','.join(key[1])}]") not in seen:
                seen.add(f"{key[0]}[{','.join(key[1])}]")
                todo.append(key)
    return {s.split("[")[0] for s in seen}


def heavy(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(DOWNLOAD_STACK)}


def test_trainer_resolves_without_the_download_stack():
    deps = resolved("cloob-trainer")
    assert {"torch", "open-clip-torch", "webdataset", "cloob-benchmarks"} <= deps  # walked for real
    assert "cloob-dataprep" not in deps and not heavy(deps), sorted(heavy(deps))


def test_the_demo_extra_and_the_workspace_bring_dataprep():
    # the control: the same walk does find the stack where it belongs
    assert "cloob-dataprep" in resolved("cloob-trainer", ("demo",))
    assert heavy(resolved("cloob-toolkit")) >= {"img2dataset", "wandb", "albumentations"}


def test_lock_matches_the_trainer_pyproject():
    project = tomllib.loads((ROOT / "packages/trainer/pyproject.toml").read_text(encoding="utf-8"))
    listed = {
        d.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        for d in project["project"]["dependencies"]
    }
    assert "cloob-dataprep" not in listed
    assert project["project"]["optional-dependencies"]["demo"] == ["cloob-dataprep"]


@pytest.mark.parametrize(
    "args, wanted_for",
    [
        ([], "the demo"),
        (["--dataset-type", "synthetic"], "--dataset-type synthetic"),
    ],
)
def test_without_dataprep_the_demo_is_one_line(monkeypatch, capsys, tmp_path, args, wanted_for):
    for name in [m for m in sys.modules if m.startswith("cloob.dataprep")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cloob.dataprep", None)  # as on a lean install
    monkeypatch.setenv("CLOOB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["trainer", "run", "--logs", str(tmp_path / "logs"), *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {wanted_for}") and "cloob-trainer[demo]" in err, err


TEST_STACK = ("pyspark", "ray", "moto", "clip-benchmark", "hypothesis", "pytest", "transformers")


def test_the_first_command_installs_no_test_stack():
    """`uv run trainer run` syncs the workspace without dependency groups (default-groups = []):
    none of the test stack (~50 packages, pyspark built from source); `uv run --dev pytest` adds
    it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["uv"]["default-groups"] == []
    assert "compile-bytecode" not in project["tool"]["uv"]  # uv would recompile on every `uv run`
    first = resolved("cloob-toolkit")
    assert {
        "torch",
        "cloob-dataprep",
        "cloob-benchmarks",
        "tensorboard",
    } <= first  # walked for real
    assert not {n for n in first if n.startswith(TEST_STACK)}, sorted(first)
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    root = next(p for p in lock["package"] if p["name"] == "cloob-toolkit")
    dev = {d["name"] for d in root["dev-dependencies"]["dev"]}
    assert {"pytest", "moto", "clip-benchmark", "hypothesis", "cloob-dataprep"} <= dev
