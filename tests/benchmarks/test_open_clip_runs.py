"""Checkpoints written by OpenCLIP's own trainer load as OpenCLIP builds them: the architecture
(GELU vs QuickGELU, which tensor shapes cannot tell) comes from the run's params.txt or --model,
and a checkpoint with neither is refused in one line rather than guessed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from cloob.benchmarks.models.checkpoints import load_checkpoint
from cloob.common.cli import UsageError
from support.benchmark_data import class_tree, write_tree
from support.open_clip_runs import MODELS

VARIANTS = list(MODELS)


def open_clips_own(name: str, ckpt):
    """What OpenCLIP (and clip_benchmark) evaluate: its factory with its own checkpoint loader."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(ckpt))
    return model.eval(), preprocess


def assert_same_model(loaded, name: str, ckpt) -> None:
    model, preprocess = open_clips_own(name, ckpt)
    torch.manual_seed(0)
    images, tokens = torch.randn(3, 3, 32, 32), torch.randint(1, 400, (4, 77))
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.model.encode_text(tokens), model.encode_text(tokens))
    picture = Image.new("RGB", (57, 41), (200, 30, 90))
    assert torch.equal(loaded.preprocess(picture), preprocess(picture))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_run_is_rebuilt_from_its_params_txt(open_clip_runs, variant):
    ckpt = open_clip_runs.checkpoint(variant)
    loaded = load_checkpoint(ckpt)
    assert loaded.name == MODELS[variant] and loaded.format == "open_clip"
    assert loaded.info["architecture_from"] == "params.txt" and loaded.info["epoch"] == 1
    assert_same_model(loaded, MODELS[variant], ckpt)


@pytest.mark.parametrize("variant", VARIANTS)
def test_without_params_txt_model_names_the_architecture(open_clip_runs, tmp_path, variant):
    ckpt = shutil.copy(open_clip_runs.checkpoint(variant), tmp_path / "epoch_1.pt")
    with pytest.raises(UsageError, match="add --model NAME"):
        load_checkpoint(ckpt)
    loaded = load_checkpoint(ckpt, model=MODELS[variant])
    assert loaded.info["architecture_from"] == "--model"
    assert_same_model(loaded, MODELS[variant], ckpt)


def test_params_txt_and_model_that_disagree_are_refused(open_clip_runs):
    with pytest.raises(
        UsageError, match="params.txt says model 'tiny-oc-quickgelu', --model says 'tiny-oc'"
    ):
        load_checkpoint(open_clip_runs.checkpoint("quickgelu"), model="tiny-oc")


def test_zeroshot_on_a_run_equals_open_clips_own_loading(open_clip_runs, cli, tmp_path):
    """`--ckpt logs/run/checkpoints/epoch_1.pt` gives the numbers of `--model NAME --pretrained
    FILE` (open_clip's own loading), and `--ckpt FILE --model NAME` is that file, not a second
    model."""
    ckpt = open_clip_runs.checkpoint("quickgelu")
    task = write_tree(tmp_path / "task", class_tree({"a": 3, "b": 3, "c": 3}))
    common = ["--dataset-dir", task, "--workers", "0", "--no-progress", "--device", "cpu"]
    runs = {
        "params": ["--ckpt", ckpt],
        "own": ["--model", MODELS["quickgelu"], "--pretrained", ckpt],
        "flag": ["--ckpt", shutil.copy(ckpt, tmp_path / "bare.pt"), "--model", MODELS["quickgelu"]],
    }
    scores = {}
    for how, args in runs.items():
        code, _, err = cli("zeroshot", *args, *common, "--out", tmp_path / how)
        assert code == 0, err
        records = json.loads((tmp_path / how / "results.json").read_text())["records"]
        assert len(records) == 1
        scores[how] = records[0]["metrics"]
    assert scores["params"] == scores["own"] == scores["flag"]
