"""Every precision the trainer accepts, end to end on CPU: train a few steps with zero-shot
during training, checkpoint, resume, then `benchmarks zeroshot --ckpt` on the result in the same
precision. (On CUDA `auto` is `amp`; this is the path that used to crash at the first
evaluation.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from cloob.benchmarks.cli import main as benchmarks_main
from cloob.common import checkpoint as ckpt_format
from cloob.common.precision import CHOICES, PRECISIONS, resolve
from cloob.trainer.cli import main as trainer_main
from support.cli import run_main
from support.images import make_images

from .conftest import MICRO


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task") / "shapes"
    for i, shape in enumerate(("circle", "square")):
        make_images(root / "images", 2, size=32, subdir=shape, seed=i)
    (root / "classnames.txt").write_text("circle\nsquare\n")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


def _train(tmp_path, task, precision: str, max_steps: int, *extra: str) -> int:
    return run_main(
        trainer_main,
        "trainer",
        "run",
        "--model",
        MICRO,
        "--dataset-type",
        "synthetic",
        "--train-num-samples",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--warmup",
        "1",
        "--max-steps",
        max_steps,
        "--save-every-n-steps",
        "1",
        "--zeroshot-task",
        task,
        "--batch-size-eval",
        "4",
        "--precision",
        precision,
        "--logs",
        tmp_path,
        "--name",
        "run",
        "--report-to",
        "none",
        "--no-progress",
        "--learnable-inv-tau",
        "--log-every-n-steps",
        "1",
        *extra,
    )


def test_the_cli_lists_are_the_shared_definition():
    assert set(CHOICES) == {
        "fp32",
        "amp",
        "amp_bf16",
        "pure_bf16",
        "fp16",
        "bf16",
        "pure_fp16",
        "amp_bfloat16",
        "auto",
    }  # open_clip_train's names, and auto
    assert resolve("auto", "cpu").name == "fp32" and resolve("auto", "cuda").name == "amp"


# the full train → resume → evaluate cycle for ours; open_clip's bf16 / pure_fp16 (the weights its
# factory builds, compared in test_openclip_compat) and the amp_bfloat16 alias add no code path here
@pytest.mark.parametrize("precision", ["fp32", "amp", "amp_bf16", "pure_bf16", "fp16", "auto"])
def test_train_resume_and_evaluate_in_every_precision(precision, tmp_path, task, capsys):
    resolved = resolve(precision, "cpu")
    assert _train(tmp_path, task, precision, 2) == 0, capsys.readouterr().err
    assert _train(tmp_path, task, precision, 3, "--resume", "latest") == 0, capsys.readouterr().err
    ckpt = ckpt_format.read(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 3 and ckpt["precision"] == resolved.name
    assert bool(ckpt["scaler"]) == resolved.grad_scaler  # amp keeps its loss scale across a resume
    dtypes = {v.dtype for v in ckpt["state_dict"].values() if v.is_floating_point()}
    expected = {"fp16": {torch.float16, torch.float32}, "pure_bf16": {torch.bfloat16}}
    assert dtypes == expected.get(resolved.name, {torch.float32})
    assert all(torch.isfinite(v.float()).all() for v in ckpt["state_dict"].values())

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert sum("zeroshot/shapes/acc1" in r for r in rows) == 2  # end of each run

    out = tmp_path / "bench"
    code = run_main(
        benchmarks_main,
        "benchmarks",
        "zeroshot",
        "--ckpt",
        tmp_path / "run" / "checkpoints" / "latest.pt",
        "--dataset-dir",
        task / "images",
        "--classnames",
        task / "classnames.txt",
        "--templates",
        task / "templates.txt",
        "--precision",
        precision,
        "--out",
        out,
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, capsys.readouterr().err
    (record,) = json.loads((out / "results.json").read_text())["records"]
    assert record["precision"] == resolved.name and record["n_images"] == 4


def test_every_precision_has_its_documented_weights_and_autocast():
    from support.benchmark_data import tiny_model

    for p in PRECISIONS.values():
        model = p.cast_model(tiny_model(0))
        dtype = getattr(torch, p.input_dtype)
        with p.autocast("cpu"):
            feats = model.encode_image(p.cast_input(torch.randn(2, 3, 32, 32)))
        assert feats.dtype == (getattr(torch, p.autocast_dtype) if p.autocast_dtype else dtype), p
