"""What every bench script shares: machine description, timing, peak memory, table + JSON output.

Bench scripts run as modules from the repository root (`uv run python -m bench.compare.loader`),
so they import this as `bench._common`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.provenance import RESULTS, head, record

console = Console()
# The script imports this first thing: what the machine and the checkout were when it started.
_LOAD_AT_START = round(os.getloadavg()[0], 1)
_COMMIT_AT_START = head()


def machine() -> dict[str, object]:
    """Enough to tell two result files apart: CPU model, cores, memory, software versions, and
    how busy the machine was when the script started (1-minute load average)."""
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
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": _LOAD_AT_START,
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


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | None = None,
) -> tuple[float, float, str]:
    """Run a command: (wall seconds, peak RSS of its largest process in MiB, its output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wall = time.perf_counter() - t0
    out, _, tail = proc.stdout.rpartition("@@maxrss ")
    if log:
        log.write_text(out)
    if proc.returncode != 0:
        sys.stderr.write(out[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, int(tail.split()[0]) / 1024, out


def report(
    name: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    extra: dict[str, object] | None = None,
    measures: Sequence[str] = (),
) -> Path:
    """Print a rich table and write `bench/results/<name>.json` with the machine description and
    the provenance (`bench/provenance.py`: commit, script, the code it `measures`)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col != columns[0] else "left")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "title": title,
        "machine": machine(),
        "provenance": record(measures=measures, commit=_COMMIT_AT_START),
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        **(extra or {}),
    }
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


class PeakBytes(TorchDispatchMode):
    """Peak bytes of the tensors created under it that are still alive (views not counted).
    Works on meta tensors too, so the memory of sizes this machine cannot hold can be traced."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and t._base is None:
                size = t.untyped_storage().nbytes()
                self.live += size
                weakref.finalize(t, self._free, size)
        self.peak = max(self.peak, self.live)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


@contextlib.contextmanager
def fused_attention_on_meta():
    """Meta tensors send `scaled_dot_product_attention` down its math path (an n×N matrix), which
    real CPU/GPU runs never take: route it to the CPU flash kernel's op (which has meta shapes)
    while tracing, so traced memory is what a real run allocates."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def flash(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        # the towers traced here call it without mask, dropout or causality
        flash_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        return flash_cpu(query, key, value, scale=scale)[0]

    F.scaled_dot_product_attention = flash
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
