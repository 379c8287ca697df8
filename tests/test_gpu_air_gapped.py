"""The GPU check's air-gapped entry point, run here as an air-gapped GPU node runs it: a Python
3.12 look-alike of the node's image (tests/support/gpu_image.py), the carried wheels installed with
--no-index, no uv on PATH, no package index (PIP_NO_INDEX=1, no pip config) and, where this
machine allows a network namespace, no network at all (loopback only) — in the CPU mode: micro
models, 3 steps, the same steps and the same result files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.gpu_image import ROOT, image_venv, python312

sys.path.insert(0, str(ROOT / "bench" / "gpu"))
from gpu_check import Settings, plan  # noqa: E402
from gpu_image import WHEEL_DIR  # noqa: E402


def _carried_tree(dest: Path, venv_python: Path) -> Path:
    """What is copied to the node: the tree git sees (tracked and untracked, not ignored) plus
    the one ignored folder that goes with it, `.whl/` (downloaded by bench/gpu/gpu_wheels.py)."""
    subprocess.run(
        [str(venv_python), str(ROOT / "bench" / "gpu" / "gpu_wheels.py")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    shutil.copytree(ROOT / WHEEL_DIR, dest / WHEEL_DIR)
    return dest


def _no_network(cmd: list[str]) -> tuple[list[str], bool]:
    """`cmd` in a fresh network namespace with only loopback up (torchrun's rendezvous), when
    this machine lets us make one."""
    usable = (
        shutil.which("unshare")
        and shutil.which("ip")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    )
    if usable:
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd], True
    return cmd, False


@pytest.mark.air_gapped
@pytest.mark.slow  # builds (once) a 3.12 venv with torch, then ~10 CPU training runs: 10-20 min
@pytest.mark.timeout(3600)
@pytest.mark.skipif(python312() is None, reason="needs a Python 3.12 interpreter (CLOOB_PY312)")
def test_air_gapped_entry_point_runs_in_the_image_without_uv_or_network(tmp_path):
    venv = image_venv()
    tree = _carried_tree(tmp_path / "tree", venv / "bin" / "python3")
    bin_dir = tmp_path / "bin"  # the image's python3 first on PATH, then the system's tools
    bin_dir.mkdir()
    # a script, not a link: python finds its venv from the path it was started by
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {venv}/bin/python3 "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    path = os.pathsep.join(
        [str(bin_dir), "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    )
    assert shutil.which("uv", path=path) is None
    out = tmp_path / "out"
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/root"),
        "OUT": str(out),
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "OMP_NUM_THREADS": "1",
        "CLOOB_CACHE": str(tmp_path / "cache"),
        "LANG": "C.UTF-8",
    }
    cmd, isolated = _no_network(["bash", "bench/gpu/gpu_check.sh", "--air-gapped", "--cpu"])
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=3300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads((out / "gpu_check.json").read_text())
    assert result["host"]["python"].startswith("3.12.")
    assert result["mode"] == "cpu"
    expected = [s.label for s in plan(Settings.from_env(cpu=True), tmp_path)]
    steps = {r["label"]: r for r in result["steps"]}
    assert list(steps) == expected  # the same steps as on the GPU, all measured
    assert all(r["status"] == "ok" for r in steps.values()), {
        k: r["status"] for k, r in steps.items()
    }
    assert result["card"]["matmul_bf16_tflops"] > 0 and result["card"]["train_flops_per_sample"] > 0
    assert steps["readme"]["zeroshot_table"] and "colours" in steps["readme"]["table_text"]
    for r in steps.values():
        if r["kind"] in ("ours", "openclip"):
            assert r["samples_per_s"] > 0 and r["mfu_measured"] > 0
            assert 0 <= r["loader_share"] < 1
            # synthetic data: none of the data-preparation stack (the image lacks it)
            assert not {"duckdb", "s3fs", "img2dataset"} & set(r["modules"]), r["label"]
    # the demo writes its DuckDB manifest (duckdb travels); nothing else of dataprep's stack
    assert "duckdb" in steps["readme"]["modules"]
    assert not {"s3fs", "img2dataset", "clip_benchmark"} & set(steps["readme"]["modules"])
    assert "| clip-amp_bf16 | ok |" in (out / "gpu_check.md").read_text()
    assert "=== readme: ok" in (out / "gpu_check.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json",
        "gpu_check.log",
        "gpu_check.md",
    ]
    print(f"network namespace: {isolated}")
