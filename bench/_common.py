"""What every bench script shares: machine description, timing, peak memory, table + JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def machine() -> dict[str, object]:
    """Enough to tell two result files apart: CPU model, cores, memory, software versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info: dict[str, object] = {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(), "platform": platform.platform(),
    }
    for mod in ("torch", "open_clip", "webdataset", "duckdb"):
        with contextlib.suppress(Exception):  # a module that is not installed is not reported
            info[mod] = __import__(mod).__version__
    return info


def time_call(fn: Callable[[], object], *, warmup: int = 2, repeat: int = 5) -> float:
    """Median seconds of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print(f'@@maxrss {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', flush=True)\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, log: Path | None = None) -> tuple[float, float, str]:
    """Run a command: (wall seconds, peak RSS of its largest process in MiB, its output)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    out, _, tail = proc.stdout.rpartition("@@maxrss ")
    if log:
        log.write_text(out)
    if proc.returncode != 0:
        sys.stderr.write(out[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, int(tail.split()[0]) / 1024, out


def report(name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
           extra: dict[str, object] | None = None) -> Path:
    """Print a rich table and write `bench/results/<name>.json` with the machine description."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col != columns[0] else "left")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "title": title, "machine": machine(),
               "columns": list(columns), "rows": [list(r) for r in rows], **(extra or {})}
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return out


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
