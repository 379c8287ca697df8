"""Run a module as `python -m MODULE ARGS...` would, and write what it cost: peak GPU memory and
how long the training loop waited on its data loader. Used by gpu_check.py for every step:

    python3 -m torch.distributed.run ... -m gpu_probe cloob.trainer.cli run ...

It only observes: it times each `next()` on a DataLoader iterator (ours and OpenCLIP's both use
torch's) and, at exit, writes torch's memory counters and the top-level modules the run imported to
`$GPU_PROBE_DIR/probe-<rank>.json`.
Targeting `open_clip_train.main`, it first registers the toolkit's model configs (micro-rn, ...)
with open_clip, so OpenCLIP's trainer can run the same micro model in the CPU mode.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
import time
from pathlib import Path
from typing import Any

_loaders: dict[int, list[tuple[float, float]]] = {}  # iterator id → (start, end) of each next()


def _time_loader_waits() -> None:
    from torch.utils.data import dataloader

    original = dataloader._BaseDataLoaderIter.__next__

    def timed(self: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(self)
        finally:
            _loaders.setdefault(id(self), []).append((t0, time.perf_counter()))

    # wrapping the iterator's method is the measurement: mypy forbids assigning methods
    dataloader._BaseDataLoaderIter.__next__ = timed  # type: ignore[method-assign]


def loader_share(calls: list[tuple[float, float]], skip: int) -> dict[str, float] | None:
    """Share of the time from the `skip`-th batch on that was spent waiting in `next()`."""
    steady = calls[skip:]
    if len(steady) < 2:
        return None
    span = steady[-1][0] - steady[0][0]  # the steps between the first and the last fetch
    waits = sum(end - start for start, end in steady[:-1])
    return {
        "batches": len(steady) - 1,
        "wait_s": waits,
        "span_s": span,
        "share": waits / span if span > 0 else 0.0,
    }


def _write(folder: Path) -> None:
    import torch

    # the training loop is the loader that delivered the most batches (evaluation loaders are short)
    calls = max(_loaders.values(), key=len, default=[])
    out: dict[str, object] = {
        "rank": int(os.environ.get("RANK", "0")),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loader": loader_share(calls, skip=min(10, len(calls) // 3)),
        # what the run imported (top-level, not the standard library's): the proof that a step
        # on synthetic data pulled no duckdb/s3fs/img2dataset
        "modules": sorted(
            {
                m.split(".")[0]
                for m in list(sys.modules)
                if not m.startswith("_") and m.split(".")[0] not in sys.stdlib_module_names
            }
        ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"probe-{out['rank']}.json").write_text(json.dumps(out) + "\n")


def main() -> None:
    module, args = sys.argv[1], sys.argv[2:]
    folder = os.environ.get("GPU_PROBE_DIR")
    _time_loader_waits()
    if folder:
        atexit.register(_write, Path(folder))
    if module.startswith("open_clip_train"):
        from cloob.trainer.models import register_configs

        register_configs()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
