"""Every module the GPU check's path imports resolves on the air-gapped GPU node: from its image
(bench/gpu/gpu_image.py: IMAGE), the carried wheels, or our packages.

Static, so it is fast: from the check's entry points (the bench scripts and the trainer CLI, the
training loop, the demo and zero-shot modules it runs) every `import` of our code is followed,
module-level and inside functions alike (a lazy import on the path runs too); every other import
must be the standard library's or an allowed package's. An import that is provably off the path
is listed in OFF_PATH with its reason. The slow tests/test_gpu_air_gapped.py proves the same by
running the path in a look-alike of the image.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "gpu"))
from gpu_image import CARRIED, IMAGE, IMAGE_PACKAGES, OURS  # noqa: E402

BENCH_ROOTS = ("gpu_check", "gpu_probe", "gpu_measure")
MODULE_ROOTS = (
    "cloob.trainer.cli",
    "cloob.trainer.loop",
    "cloob.dataprep.sources.demo",
    "cloob.benchmarks.tasks.zeroshot.evaluate",
)
# (importing module, imported top-level name) → why the check's path never executes it.
OFF_PATH = {
    ("cloob.trainer.loop", "wandb"): "only with --report-to wandb; the check passes none",
    ("cloob.trainer.reporting", "wandb"): "only with --report-to wandb; the check passes none",
    (
        "cloob.common.storage",
        "s3fs",
    ): "only in limit_s3fs_rounds, for img2dataset's workers writing "
    "to a bucket; the check writes locally",
}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "cloob" or len(parts) < 2:
        return None
    base = ROOT / "packages" / parts[1] / "src" / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> list[str]:
    """Every name `path` imports, anywhere in it (relative imports made absolute)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = (
                node.module or ""  # level 0: `from x import y` always names x
                if not node.level
                else ".".join(filter(None, [package, node.module]))
            )
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    return names


def path_imports(
    bench: Path = ROOT / "bench" / "gpu",
    bench_roots: tuple[str, ...] = BENCH_ROOTS,
    module_roots: tuple[str, ...] = MODULE_ROOTS,
) -> dict[str, set[str]]:
    """Third-party top-level name → the modules of ours that import it, over the path."""
    found: dict[str, set[str]] = {}
    todo: list[tuple[str, Path | None]] = [(f"bench.{b}", bench / f"{b}.py") for b in bench_roots]
    todo += [(m, _module_file(m)) for m in module_roots]
    seen: set[str] = set()
    while todo:
        module, path = todo.pop()
        if module in seen or path is None:
            continue
        seen.add(module)
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top in OURS:
                todo.append((name, _module_file(name)))
            elif (bench / f"{top}.py").is_file():
                todo.append((f"bench.{top}", bench / f"{top}.py"))
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found


def allowed() -> set[str]:
    image = {n for dist in IMAGE_PACKAGES for n in IMAGE[dist]}
    return image | {n for names in CARRIED.values() for n in names} | set(OURS)


def test_every_import_on_the_gpu_path_resolves_on_the_air_gapped_node():
    found = path_imports()
    assert {"torch", "open_clip", "webdataset", "typer"} <= set(found)  # the walk sees the path
    stray = {
        name: sorted(m for m in mods if (m, name) not in OFF_PATH)
        for name, mods in found.items()
        if name not in allowed()
    }
    stray = {name: mods for name, mods in stray.items() if mods}
    assert not stray, f"imported on the GPU path but neither in the image nor carried: {stray}"


def test_the_walk_catches_a_new_import(tmp_path):
    """The check can fail: a lazy import, inside a function, of a package the image lacks, in a
    module reached through our code."""
    (tmp_path / "gpu_probe.py").write_text("import gpu_helper\nimport cloob.trainer.cli\n")
    (tmp_path / "gpu_helper.py").write_text("def f():\n    import img2dataset\n")
    found = path_imports(tmp_path, ("gpu_probe",), ())
    assert found["img2dataset"] == {"bench.gpu_helper"}
    assert "webdataset" in found  # followed into our packages
    assert "img2dataset" not in allowed()


def test_the_image_lists_agree():
    assert set(IMAGE_PACKAGES) <= set(IMAGE)  # the simulated image holds only the image's packages
    assert not set(CARRIED) & set(IMAGE)  # nothing travels that the image already has


def test_carried_wheels_are_pinned_to_the_lock():
    from gpu_wheels import PLATFORM, locked_versions

    versions = locked_versions()
    assert set(versions) == set(CARRIED) and all(versions.values())
    assert "--no-deps" in PLATFORM and "3.12" in PLATFORM  # each dependency is named in CARRIED
