"""The embedded default: `trainer run` with no `--train-data` trains on the generated demo dataset.

The demo (coloured shapes with varied captions, built by `cloob.dataprep`) is made once and cached
under `$CLOOB_CACHE/demo-<samples>` (default `~/.cache/cloob`); its held-out zero-shot tasks, whose
(shape, colour) pairs never occur in training, are evaluated after every epoch. The settings below
were chosen so that both methods clear 3× chance on the held-out colours within about five minutes
on two CPU cores, on every seed we tried (README, Quick start); every flag the user passes still
wins over them.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from types import ModuleType

from cloob.common.cli import UsageError
from cloob.trainer.config import TrainConfig
from cloob.trainer.methods import default_inv_tau

DEMO_SAMPLES = 20000
# (section, field) → demo value; used only where the user gave no flag of their own.
#
# Why these, measured on the demo (bench/NOTES.md, "CLOOB on the demo" and "Third study"): CLOOB's
# danger on a tiny budget is collapse — at the start all captions, then all images, embed to nearly
# one vector, where every gradient passes through the (then ~0) batch covariance of the Hopfield
# retrievals and the run sits at chance. With a CLS-token ViT image tower (micro-vit) the collapse
# stuck on 4 of 11 runs; with micro-rn (the same text tower, a small ModifiedResNet for images) the
# captions start to collapse too but came back (by step ~100 on all 8 sweep seeds), and CLOOB
# cleared
# 3× chance on all 12 runs, at the same step time. The reference implementation's τ⁻¹ = β = 14.3
# with batches of 64 start CLOOB far more often than the CC3M recipe (τ⁻¹ = 30, β = 8, batch 128).
# CLIP learns with either.
DEMO_SETTINGS: dict[tuple[str, str], object] = {
    ("model", "model"): "micro-rn",
    ("model", "init_inv_tau"): 14.3,
    ("model", "init_scale_hopfield"): 14.3,
    ("data", "batch_size"): 64,
    ("data", "workers"): 2,
    ("optim", "lr"): 1e-3,
    ("optim", "warmup"): 30,
    ("optim", "epochs"): 1,
    ("eval", "zeroshot_frequency"): 1,
    ("run", "log_every_n_steps"): 10,
}


def dataprep_module(name: str, wanted_for: str) -> ModuleType:
    """`cloob.dataprep.<name>`, imported only when used: dataprep is the optional extra
    `cloob-trainer[demo]`, so a lean training node reports the missing extra in one line."""
    try:
        return importlib.import_module(f"cloob.dataprep.{name}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("cloob.dataprep"):
            raise
        raise UsageError(
            f"{wanted_for} needs cloob-dataprep, which this install lacks: install "
            f"'cloob-trainer[demo]' (the workspace's `uv sync` has it), or pass "
            f"--train-data"
        ) from None


def cache_dir() -> Path:
    return Path(os.environ.get("CLOOB_CACHE") or Path.home() / ".cache" / "cloob")


def wants_demo(cfg: TrainConfig) -> bool:
    """No training data and no synthetic/csv request: the newcomer's first command."""
    return cfg.data.train_data is None and cfg.data.dataset_type in ("auto", "webdataset")


def demo_config(cfg: TrainConfig, explicit: set[str], samples: int = DEMO_SAMPLES) -> TrainConfig:
    """`cfg` pointed at the (built or cached) demo data, with demo settings where `explicit`
    (the option names the user typed, e.g. "batch_size") says nothing."""
    build_demo = dataprep_module(
        "sources.demo", "the demo (trainer run without --train-data)"
    ).build_demo
    demo = build_demo(cache_dir() / f"demo-{samples}", samples=samples)
    sections = {
        name: dataclasses.replace(getattr(cfg, name))
        for name in ("data", "model", "optim", "eval", "run")
    }
    for (section, field), value in DEMO_SETTINGS.items():
        if field == "init_inv_tau" and default_inv_tau(cfg.model.method) is not None:
            continue  # a method with its own start keeps it (siglip: 10 with its bias −10)
        if field not in explicit:
            setattr(sections[section], field, value)
    sections["data"].train_data = str(demo.root)
    sections["eval"].zeroshot_tasks = [
        str(t.images_dir.parent) for t in demo.tasks.values()
    ] + list(cfg.eval.zeroshot_tasks)
    return TrainConfig(**sections)
