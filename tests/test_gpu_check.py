"""bench/gpu_check.py --dry-run: the GPU acceptance commands, checked without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def dry_run(**env: str) -> list[str]:
    out = subprocess.run([sys.executable, str(BENCH), "--dry-run"], check=True, text=True,
                         capture_output=True, env={**os.environ, **env}, timeout=120).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


def test_dry_run_lists_the_whole_check_and_every_trainer_command_parses():
    cmds = dry_run(NPROC="1")
    assert cmds[0] == "uv run trainer run --method cloob"  # the README's first command, unchanged
    ours = [c for c in cmds if "cloob.trainer.cli" in c]
    assert {(m, p) for m in ("clip", "cloob") for p in ("amp", "amp_bf16")} <= {
        (c.split("--method ")[1].split()[0], c.split("--precision ")[1].split()[0]) for c in ours}
    assert sum("--torchcompile" in c for c in ours) == 2
    assert not any("--local-loss" in c for c in ours)  # a no-op on one GPU
    assert sum("open_clip_train.main" in c and "RN50-quickgelu" in c for c in cmds) == 1


def test_several_gpus_add_local_loss_runs():
    cmds = dry_run(NPROC="4", BATCH="128")
    assert sum("--local-loss" in c for c in cmds) == 2
    assert all("--nproc-per-node 4" in c for c in cmds[1:])
