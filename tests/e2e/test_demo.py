"""The README's first command on a reduced budget: with no data given, `trainer run` builds the demo
dataset itself, trains the tiny model and reports zero-shot accuracy on held-out scenes.

Both methods go through the same default path. CLIP is asserted well above chance on the held-out
colours. For CLOOB the test asserts what a reduced budget does show: its loss falls clearly below
the value of any collapsed solution (all features equal: 2·ln(N−1)/τ⁻¹), i.e.
the encoders separate the batch. Its zero-shot accuracy is not asserted: CLOOB leaves its early
plateau after a seed-dependent number of steps (bench/NOTES.md, "CLOOB on the demo"), so a
threshold there would test the seed, not the code."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
BATCH = 64


def _run_demo(tmp_path: Path, method: str, epochs: int) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "CLOOB_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.run(
        [str(BIN / "trainer"), "run", "--method", method, "--demo-samples", "2000",
         "--epochs", str(epochs), "--batch-size", str(BATCH), "--logs", str(tmp_path / "runs"),
         "--name", "demo", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, tmp_path / "runs" / "demo"


def _check_default_path(tmp_path: Path, proc: subprocess.CompletedProcess, run: Path) -> list[dict]:
    assert (tmp_path / "cache" / "demo-2000" / "sizes.json").is_file()
    assert (run / "checkpoints" / "latest.pt").is_file() and (run / "curves.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == "micro-vit" and config["data"]["batch_size"] == BATCH
    assert config["model"]["init_inv_tau"] == 14.3 and config["model"]["init_scale_hopfield"] == 14.3
    assert "zero-shot" in proc.stdout and "colours" in proc.stdout and str(run) in proc.stdout
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["clip", "cloob"])
def test_default_command_learns(tmp_path: Path, method: str):
    # 2,000 samples = 31 steps an epoch: one epoch for CLIP, six for CLOOB (186 steps).
    proc, run = _run_demo(tmp_path, method, epochs=1 if method == "clip" else 6)
    rows = _check_default_path(tmp_path, proc, run)
    if method == "clip":
        colours = [r["zeroshot/colours/acc1"] for r in rows if "zeroshot/colours/acc1" in r][-1]
        assert colours >= 3 / 8, f"colour zero-shot {colours:.3f} is not well above chance (0.125)"
    else:
        losses = [r["loss"] for r in rows if "loss" in r]
        collapsed = 2 * math.log(BATCH - 1) / 14.3
        assert losses[0] > 0.99 * collapsed  # starts at or above the collapsed value …
        end = sum(losses[-3:]) / 3  # each a mean over the last 10 steps: the last ~30 steps
        assert end < 0.95 * collapsed, (  # … and ends clearly below it
            f"CLOOB loss {end:.3f} did not fall below the collapsed value {collapsed:.3f}")
