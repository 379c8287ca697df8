"""The CLI framework's declared floors are true: with typer and rich resolved to the LOWEST
versions the pyprojects allow (`uv pip install --resolution lowest-direct`, a separate venv), every
CLI imports, prints its help and turns a bad option into the one `error:` line.

What this proves: the `typer`/`rich` lower bounds of every package (and the CLI modules' lazy
imports: no heavy dependency is needed to parse a command line). What it does not: the floors of
the heavy dependencies (torch, open_clip, img2dataset, ... come from uv.lock, where the suite runs
them); resolving those at their lowest would mean gigabytes of downloads per run.
Needs the package index (or uv's cache); slow, so outside the default suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["common", "trainer", "dataprep", "benchmarks"]
LIGHT = {"typer", "rich"}  # the CLI framework: what parsing a command line needs

DRIVE = r"""
import subprocess, sys
from pathlib import Path
from importlib.metadata import version
print("typer", version("typer"), "rich", version("rich"))
bin_dir = Path(sys.executable).parent
for cli in ("trainer", "dataprep", "benchmarks"):
    exe = str(bin_dir / cli)
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "Usage" in ok.stdout, (cli, ok.stdout, ok.stderr)
    bad = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (cli, bad)
    bare = subprocess.run([exe], capture_output=True, text=True)
    assert bare.returncode == 2 and "Usage" in bare.stdout + bare.stderr, (cli, bare)
print("ok")
"""


def light_requirements() -> list[str]:
    """Every package's declared requirement on the CLI framework, as written."""
    reqs = set()
    for pkg in PACKAGES:
        project = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())["project"]
        for req in project["dependencies"]:
            name = re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()
            if name in LIGHT:
                reqs.add(req.split("#")[0].strip())
    return sorted(reqs)


@pytest.mark.slow  # a fresh venv and an index resolution: ~20 s with a warm uv cache
def test_the_cli_framework_floors_are_true(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("needs uv")
    venv = tmp_path / "floors"
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "-q", "--python", str(python)]
    reqs = light_requirements()
    assert any(r.startswith("typer") for r in reqs)
    subprocess.run([*install, "--resolution", "lowest-direct", *reqs], check=True, env=env)
    # Our packages themselves, without their (heavy) dependencies.
    subprocess.run(
        [*install, "--no-deps", *(str(ROOT / "packages" / p) for p in PACKAGES)],
        check=True,
        env=env,
    )
    out = subprocess.run([str(python), "-c", DRIVE], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
    floor = max(
        (
            m.group(1)
            for r in reqs
            if r.startswith("typer") and (m := re.search(r">=\s*([\w.]+)", r))
        ),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    got = out.stdout.split()[1]
    assert got == floor or got.startswith(floor + "."), (got, floor)  # really at the floor
