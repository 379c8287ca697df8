"""Download, here, the wheels the lent GPU machine lacks (bench/gpu_image.py: CARRIED) into `.whl/`.

cp312, manylinux x86-64, no dependencies (each missing one is named in CARRIED), at uv.lock's
versions; one version of each. Checks that they fit the budget (30 MiB, so the working tree and the
wheels stay well under the 64 MiB that travels), then prints the one command to run there and the
ignored paths that must travel with the tree (`carry`). Needs a pip and PyPI; nothing else.

    python3 bench/gpu_wheels.py          # see docs/gpu.md
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

ROOT = Path(__file__).resolve().parent.parent
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
DEVICE_COMMAND = "bash bench/gpu_check.sh --device-image"
TIMEOUT_S = 420  # the run tool's timeout_s: the check's 345 s budget, the wheels' install, margin


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
    print(f'\nthere:   {DEVICE_COMMAND}\ncarry:   ["{WHEEL_DIR}"]\ntimeout_s: {TIMEOUT_S}')


if __name__ == "__main__":
    main()
