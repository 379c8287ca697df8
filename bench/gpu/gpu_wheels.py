"""Download, on a machine that reaches PyPI, the wheels the air-gapped GPU node lacks into `.whl/`.

The packages are `CARRIED` in bench/gpu/gpu_image.py: cp312, manylinux x86-64, no dependencies
(each missing one is named in CARRIED), at uv.lock's versions; one version of each. Checks that
they fit `WHEEL_BUDGET_MIB` (a guard against a dependency slipping onto the path), then prints
what to copy to the node and the command to run there. Needs a pip and PyPI; nothing else.

    python3 bench/gpu/gpu_wheels.py          # see bench/gpu/README.md
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_image import CARRIED, WHEEL_BUDGET_MIB, WHEEL_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = [
    "--only-binary=:all:",
    "--no-deps",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
]
NODE_COMMAND = "bash bench/gpu/gpu_check.sh --air-gapped"


def locked_versions(lock: Path = ROOT / "uv.lock") -> dict[str, str]:
    """CARRIED's distributions → their one version in uv.lock."""
    packages = tomllib.loads(lock.read_text())["package"]
    out: dict[str, str] = {}
    for name in CARRIED:
        versions = {p["version"] for p in packages if p["name"] == name}
        if len(versions) != 1:
            raise SystemExit(f"error: uv.lock has {sorted(versions) or 'no'} versions of {name}")
        out[name] = versions.pop()
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _have(dest: Path, name: str, version: str) -> bool:
    return any(
        _norm(w.name.split("-")[0]) == _norm(name) and w.name.split("-")[1] == version
        for w in dest.glob("*.whl")
    )


def download(versions: dict[str, str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".whl-", dir=ROOT) as tmp:
        for name, version in versions.items():
            if _have(dest, name, version):  # already here: a rerun needs no network
                continue
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--disable-pip-version-check",
                    *PLATFORM,
                    "-d",
                    tmp,
                    f"{name}=={version}",
                ],
                check=True,
            )
        dest.mkdir(exist_ok=True)
        wanted = {_norm(n): v for n, v in versions.items()}
        for old in dest.glob("*.whl"):  # another version of one of ours: one version of each
            name, version = _norm(old.name.split("-")[0]), old.name.split("-")[1]
            if name in wanted and version != wanted[name]:
                old.unlink()
        for wheel in Path(tmp).glob("*.whl"):
            shutil.move(str(wheel), dest / wheel.name)


def main() -> None:
    versions = locked_versions()
    dest = ROOT / WHEEL_DIR
    download(versions, dest)
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {WHEEL_DIR}/{w.name}")
    print(f"{total / 2**20:7.2f} MiB  in all (budget {WHEEL_BUDGET_MIB} MiB)")
    if total > WHEEL_BUDGET_MIB * 2**20:
        raise SystemExit(
            f"error: {WHEEL_DIR}/ holds {total / 2**20:.1f} MiB, over the "
            f"{WHEEL_BUDGET_MIB} MiB budget"
        )
    print(
        f"\ncopy this checkout with {WHEEL_DIR}/ to the GPU node (git ignores {WHEEL_DIR}/: copy "
        f"the folder, not a clone), then run there:\n    {NODE_COMMAND}"
    )


if __name__ == "__main__":
    main()
