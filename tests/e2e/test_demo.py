"""The README's first command on a reduced budget: with no data given, `trainer run` builds the demo
dataset itself, trains the tiny model and reports zero-shot accuracy on held-out scenes.

CLIP is the method asserted here: CLOOB needs a few hundred steps to leave its initial collapse
(bench/NOTES.md, "CLOOB on the demo"), more than a test can spend, while CLIP is far above chance
after 50; both methods go through the same default path, whose settings are checked below."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_default_command_learns_well_above_chance(tmp_path: Path):
    env = {**os.environ, "CLOOB_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.run(
        [str(BIN / "trainer"), "run", "--method", "clip", "--demo-samples", "2000",
         "--max-steps", "50", "--batch-size", "64", "--logs", str(tmp_path / "runs"),
         "--name", "demo", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "demo"
    assert (tmp_path / "cache" / "demo-2000" / "sizes.json").is_file()
    assert (run / "checkpoints" / "latest.pt").is_file() and (run / "curves.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == "micro-vit" and config["data"]["batch_size"] == 64
    assert config["model"]["init_inv_tau"] == 14.3 and config["model"]["init_scale_hopfield"] == 14.3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    colours = [r["zeroshot/colours/acc1"] for r in rows if "zeroshot/colours/acc1" in r][-1]
    assert colours >= 3 / 8, f"colour zero-shot {colours:.3f} is not well above chance (0.125)"
    assert "zero-shot" in proc.stdout and "colours" in proc.stdout and str(run) in proc.stdout
