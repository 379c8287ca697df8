"""N gloo ranks × batch b must give the same loss and gradients as one process with batch N·b."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from cloob.trainer import distributed, losses, models
from support.preemption import free_port

from .conftest import MICRO

WORLD, B = 2, 4


def make(method):
    torch.manual_seed(0)
    bundle = models.create(
        MICRO, init_inv_tau=20.0, learnable_inv_tau=True, device=torch.device("cpu")
    )
    loss_fn = losses.create_loss(method, 5.0, learnable_beta=True)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(WORLD * B, 3, 32, 32, generator=g)
    texts = torch.randint(1, 49000, (WORLD * B, 16), generator=g)
    return bundle.model, loss_fn, images, texts


def step(model, loss_fn, images, texts):
    img, txt, inv_tau = model(images, texts)
    img, txt = distributed.gather_features(img, txt)
    loss = loss_fn(img, txt, inv_tau)
    loss.backward()
    return loss


def _rank(rank, method, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model, loss_fn, images, texts = make(method)
    ddp = DistributedDataParallel(model)
    sl = slice(rank * B, (rank + 1) * B)
    loss = step(ddp, loss_fn, images[sl], texts[sl])
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        grads["beta"] = loss_fn.logit_beta.grad
        torch.save({"loss": loss.detach(), "grads": grads}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("method", ["clip", "cloob"])
def test_two_gloo_ranks_equal_one_process(method, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _rank, args=(method, str(tmp_path / "init"), str(out)), nprocs=WORLD, start_method="fork"
    )
    got = torch.load(out, weights_only=True)

    model, loss_fn, images, texts = make(method)
    loss = step(model, loss_fn, images, texts)
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    expected["beta"] = loss_fn.logit_beta.grad
    assert set(got["grads"]) == set(expected)
    assert "logit_scale" in expected
    for name, g in expected.items():
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def _final_weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    return ckpt["state_dict"], ckpt


@pytest.mark.slow  # three interpreter start-ups: ~100 s on 2 shared cores
def test_torchrun_training_matches_single_process(tmp_path):
    """The whole loop under torchrun (2 gloo ranks × 4) ends where one process with batch 8 ends."""
    common = [
        "--model",
        MICRO,
        "--dataset-type",
        "synthetic",
        "--train-num-samples",
        "64",
        "--max-steps",
        "3",
        "--warmup",
        "1",
        "--workers",
        "0",
        "--logs",
        str(tmp_path),
        "--no-progress",
        "--method",
        "cloob",
        "--learnable-inv-tau",
        "--learnable-scale-hopfield",
        "--report-to",
        "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),  # not a fixed one: another suite on the machine may hold it
            "-m",
            "--",
            "cloob.trainer.cli",
            "run",
            *common,
            "--batch-size",
            "4",
            "--name",
            "ddp",
        ],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cloob.trainer.cli",
            "run",
            *common,
            "--batch-size",
            "8",
            "--name",
            "single",
        ],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    ddp, ddp_ckpt = _final_weights(tmp_path / "ddp")
    one, one_ckpt = _final_weights(tmp_path / "single")
    assert ddp_ckpt["step"] == one_ckpt["step"] == 3
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-4, atol=2e-5, msg=k)
    assert abs(ddp_ckpt["hopfield_beta"] - one_ckpt["hopfield_beta"]) < 1e-4
    metrics = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3
