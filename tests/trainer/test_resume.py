"""Exact resume: a run SIGKILLed after a mid-epoch checkpoint and resumed ends with the same
weights as an uninterrupted run (CPU, fp32), with and without data-loader workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from cloob.trainer.loop import train

from .conftest import MICRO

K = 5  # checkpoint step (mid-epoch: an epoch is 64 / 8 = 8 steps); the run goes to 2K


def config(
    shards: Path,
    logs: Path,
    name: str,
    workers: int,
    max_steps: int,
    resume: str | None = None,
    accum_freq: int = 1,
    method: str = "cloob",
    decode_on_device: bool = False,
) -> TrainConfig:
    # A constant schedule after warmup keeps the lr independent of --max-steps, so the killed run
    # may be given a far horizon (it must still be running when we kill it).
    return TrainConfig(
        data=DataConfig(
            train_data=str(shards),
            batch_size=8,
            workers=workers,
            shuffle_buffer=16,
            decode_on_device=decode_on_device,
        ),
        model=ModelConfig(
            model=MICRO, method=method, learnable_inv_tau=True, learnable_scale_hopfield=True
        ),
        optim=OptimConfig(
            lr=1e-3,
            warmup=3,
            lr_scheduler="const",
            epochs=100,
            max_steps=max_steps,
            accum_freq=accum_freq,
        ),
        run=RunConfig(
            logs=str(logs),
            name=name,
            resume=resume,
            save_every_n_steps=K,
            save_frequency=0,
            report_to="none",
            progress=False,
            log_every_n_steps=1,
        ),
    )


def cli_args(cfg: TrainConfig) -> list[str]:
    d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.run
    assert d.train_data is not None and r.name is not None  # `config` sets both
    return [
        "--train-data",
        d.train_data,
        "--batch-size",
        str(d.batch_size),
        "--workers",
        str(d.workers),
        "--shuffle-buffer",
        str(d.shuffle_buffer),
        "--model",
        m.model,
        "--method",
        m.method,
        "--learnable-inv-tau",
        "--learnable-scale-hopfield",
        "--lr",
        str(o.lr),
        "--warmup",
        str(o.warmup),
        "--lr-scheduler",
        o.lr_scheduler,
        "--epochs",
        str(o.epochs),
        "--max-steps",
        str(o.max_steps),
        "--logs",
        r.logs,
        "--name",
        r.name,
        "--save-every-n-steps",
        str(K),
        "--save-frequency",
        "0",
        "--report-to",
        "none",
        "--no-progress",
        "--log-every-n-steps",
        "1",
        "--accum-freq",
        str(o.accum_freq),
        *(["--decode-on-device"] if d.decode_on_device else []),
    ]


@pytest.mark.parametrize(
    "workers, accum_freq, method, decode_on_device",
    [
        (0, 1, "cloob", False),
        (2, 1, "cloob", False),
        (0, 2, "cloob", False),
        (0, 1, "siglip", False),
        # the decode-on-device path (a GPU run's) in the slow set: ~9 s
        pytest.param(2, 1, "cloob", True, marks=pytest.mark.slow),
    ],
)
def test_sigkill_then_resume_gives_identical_weights(
    shard_dir, tmp_path, workers, accum_freq, method, decode_on_device
):
    # decode_on_device: JPEG bytes + crop boxes through the worker pipe, decoded in to_device
    reference = train(
        config(
            shard_dir,
            tmp_path,
            "straight",
            workers,
            2 * K,
            accum_freq=accum_freq,
            method=method,
            decode_on_device=decode_on_device,
        )
    )
    assert ckpt_format.read(reference.checkpoint)["step"] == 2 * K

    killed = config(
        shard_dir,
        tmp_path,
        "killed",
        workers,
        1000,
        accum_freq=accum_freq,
        method=method,
        decode_on_device=decode_on_device,
    )
    latest = tmp_path / "killed" / "checkpoints" / "latest.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloob.trainer.cli", "run", *cli_args(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not latest.exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = ckpt_format.read(latest)
    assert K <= saved["step"] < 2 * K, saved["step"]
    per_epoch = 64 // (8 * accum_freq)  # optimizer steps; the position counts micro-batches
    assert saved["data"]["ranks"][0]["batch"] == saved["step"] % per_epoch * accum_freq
    assert saved["data"]["accum_freq"] == accum_freq

    resumed = train(
        config(
            shard_dir,
            tmp_path,
            "killed",
            workers,
            2 * K,
            resume="latest",
            accum_freq=accum_freq,
            method=method,
            decode_on_device=decode_on_device,
        )
    )
    a = ckpt_format.read(reference.checkpoint)
    b = ckpt_format.read(resumed.checkpoint)
    assert b["step"] == 2 * K
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["hopfield_beta"] == b["hopfield_beta"] and a["inv_tau"] == b["inv_tau"]
    for name, value in a["loss_state"].items():  # ln β; siglip's bias b
        assert torch.equal(value, b["loss_state"][name]), name
    if method == "siglip":
        assert a["logit_bias"] == b["logit_bias"] != -10.0  # learned, and resumed exactly
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
