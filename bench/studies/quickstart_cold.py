"""The Quick start from empty caches: a fresh clone, an empty uv cache, an empty demo cache.

Clones the checkout's HEAD (commit first: the results record that commit) into a temporary folder
and times, with `UV_CACHE_DIR` and `CLOOB_CACHE` pointing at empty folders there: the README's
first command (installs the locked packages, builds the demo, trains, evaluates), the same command
again (warm caches), and `uv run true` three times (what every later `uv run` costs). Downloads
the locked wheels (torch among them: several GB) from the package index. Writes
bench/results/quickstart_cold.json.

    uv run python -m bench.studies.quickstart_cold [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._common import report
from bench.provenance import ROOT

# What a cold start depends on besides the script: the lock (what is installed) and the demo.
MEASURES = ("pyproject.toml", "uv.lock", "packages/trainer/src/cloob/trainer/demo.py")


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, exit code, last lines of output) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="quickstart-"))
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {
        **os.environ,
        "UV_CACHE_DIR": str(base / "uv-cache"),
        "CLOOB_CACHE": str(base / "demo-cache"),
    }
    first = ["uv", "run", "trainer", "run", "--method", "cloob", "--logs", str(base / "logs")]
    steps = [
        ("first command, empty caches", first),
        ("first command again, warm caches", first),
        *[(f"uv run true ({i})", ["uv", "run", "true"]) for i in (1, 2, 3)],
    ]
    rows, tails = [], {}
    try:
        for name, cmd in steps:
            load = round(os.getloadavg()[0], 1)
            seconds, rc, tail = timed(cmd, clone, env)
            rows.append([name, seconds, rc, load])
            tails[name] = tail
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(
        "quickstart_cold",
        "The Quick start from a fresh clone with empty uv and demo caches (seconds, wall)",
        ["step", "seconds", "exit code", "load average at start"],
        rows,
        extra={"output_tails": tails},
        measures=MEASURES,
    )


if __name__ == "__main__":
    main()
