"""A look-alike of the air-gapped GPU node's software, built here: a Python 3.12 venv holding only
the image's packages that the GPU check imports (bench/gpu/gpu_image.py: IMAGE_PACKAGES, at
uv.lock's versions with their own dependencies) and pip. Built once per package list and lock,
then reused: `$CLOOB_GPU_IMAGE_CACHE` (default ~/.cache/cloob/gpu-image/<hash>). Building downloads
torch for cp312 from PyPI the first time (minutes); `uv run python tests/support/gpu_image.py`
prebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))
from gpu_image import IMAGE_PACKAGES  # noqa: E402

# uv does not find pyenv's interpreters by itself.
PY312_CANDIDATES = ("/root/.pyenv/versions/3.12.1/bin/python3", "python3.12")


def python312() -> str | None:
    for candidate in (os.environ.get("CLOOB_PY312", ""), *PY312_CANDIDATES):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


def _constraints() -> str:
    """uv.lock's pins for every package (3.12 markers are applied by the installer)."""
    return subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-hashes",
            "--all-packages",
            "--no-emit-workspace",
            "--quiet",
        ],
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
    ).stdout


def image_venv() -> Path:
    """The venv's folder (built if missing); its interpreter is `<folder>/bin/python3`."""
    py = python312()
    if py is None:
        raise RuntimeError("no Python 3.12 interpreter (set CLOOB_PY312)")
    constraints = _constraints()
    key = hashlib.sha256("\n".join([py, *IMAGE_PACKAGES, constraints]).encode()).hexdigest()[:12]
    base = Path(os.environ.get("CLOOB_GPU_IMAGE_CACHE") or Path.home() / ".cache/cloob/gpu-image")
    target = base / key
    if (target / ".complete").exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
    try:
        venv = work / "venv"
        subprocess.run(["uv", "venv", "--quiet", "--seed", "--python", py, str(venv)], check=True)
        (work / "constraints.txt").write_text(constraints)
        subprocess.run(
            [
                "uv",
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                str(venv / "bin" / "python3"),
                "-c",
                str(work / "constraints.txt"),
                *IMAGE_PACKAGES,
            ],
            check=True,
        )
        (venv / ".complete").write_text("\n".join(IMAGE_PACKAGES) + "\n")
        if target.exists():  # a half-built leftover of an interrupted build
            shutil.rmtree(target)
        venv.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(image_venv())
