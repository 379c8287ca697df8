"""Checkpoints written by OpenCLIP's own trainer (`open_clip_train.main`, a dev dependency): one
step on its synthetic data, for a tiny model config in a GELU and a QuickGELU variant.

Both runs go through one subprocess (the imports are most of the time). The trainer knows the tiny
configs because they are registered with open_clip before its `main` runs, as a user's own
configs would be; the test process registers the same folder (`register`) to load them back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.benchmark_data import tiny_cfg

MODELS = {"gelu": "tiny-oc", "quickgelu": "tiny-oc-quickgelu"}

_TRAIN = """
import sys
import open_clip
from open_clip_train.main import main

open_clip.add_model_config(sys.argv[1])
for name in sys.argv[3:]:
    main(["--model", name, "--name", name, "--logs", sys.argv[2], "--dataset-type", "synthetic",
          "--train-num-samples", "4", "--batch-size", "2", "--epochs", "1", "--workers", "0",
          "--save-frequency", "1", "--report-to", "", "--precision", "fp32", "--seed", "0",
          "--warmup", "1", "--lr", "1e-3"])
"""


@dataclass(frozen=True)
class OpenClipRuns:
    configs: Path  # the tiny model configs (open_clip's format)
    logs: Path  # logs/<model name>/{params.txt, checkpoints/epoch_1.pt}

    def checkpoint(self, variant: str) -> Path:
        return self.logs / MODELS[variant] / "checkpoints" / "epoch_1.pt"

    def register(self) -> None:
        import open_clip

        open_clip.add_model_config(self.configs)


def write_configs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for variant, name in MODELS.items():
        cfg = tiny_cfg()
        cfg["quick_gelu"] = variant == "quickgelu"
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    return folder


def train(root: Path) -> OpenClipRuns:
    runs = OpenClipRuns(write_configs(root / "configs"), root / "logs")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(runs.configs), str(runs.logs), *MODELS.values()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for variant in MODELS:
        assert runs.checkpoint(variant).is_file(), proc.stderr[-3000:]
    return runs
