"""Checkpoint formats: trainer, CLOOB reference release, plain open_clip — same embeddings as the
source."""

from __future__ import annotations

import json

import pytest
import torch

from cloob.benchmarks.models.checkpoints import load_checkpoint
from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError
from support.benchmark_data import class_tree, tiny_cfg, tiny_model, write_tree
from support.s3 import BROKEN_STORES, break_store

TEXT_KEYS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)


def to_reference_layout(sd: dict) -> dict:
    """Rename open_clip keys the way the CLOOB release stores them (paper.md)."""
    out = {}
    for key, value in sd.items():
        if key == "logit_scale":
            key = "logit_inv_tau"
        elif key.startswith(TEXT_KEYS):
            key = "transformer." + key
        out["module." + key] = value
    out["module.logit_scale_hopfield"] = torch.tensor(2.0)
    return out


def trainer_checkpoint(model, method: str = "cloob") -> dict:
    return {
        "state_dict": model.state_dict(),
        "model_name": "tiny-vit",
        "model_cfg": tiny_cfg(),
        "method": method,
        "inv_tau": 30.0,
        "hopfield_beta": 8.0,
        "epoch": 3,
        "step": 120,
        "optimizer": {},
        "config": {"lr": 1e-3},
        "name": "run",
    }


def same_embeddings(a, b) -> None:
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    tokens = torch.randint(1, 400, (4, 77))
    with torch.no_grad():
        assert torch.equal(a.encode_image(images), b.encode_image(images))
        assert torch.equal(a.encode_text(tokens), b.encode_text(tokens))
        assert torch.equal(a.logit_scale, b.logit_scale)


@pytest.fixture(scope="module")
def original():
    return tiny_model(seed=5)


def test_trainer_checkpoint(tmp_path, original):
    ckpt = trainer_checkpoint(original)
    ckpt["state_dict"] = {
        **ckpt["state_dict"],
        "log_hopfield_beta": torch.tensor(2.0),
    }  # eval ignores it
    ckpt_format.write(tmp_path / "epoch_3.pt", ckpt)
    loaded = load_checkpoint(tmp_path / "epoch_3.pt")
    assert loaded.info["ignored_keys"] == ["log_hopfield_beta"]
    assert (
        loaded.format == ckpt_format.FORMAT
        and loaded.method == "cloob"
        and loaded.name == "tiny-vit"
    )
    assert loaded.info["epoch"] == 3 and len(loaded.sha256) == 64
    same_embeddings(loaded.model, original)
    assert loaded.preprocess.transforms[0].size == 32  # resize to the model's input size


@pytest.mark.parametrize("config", ["json-path", "missing-file"])
def test_reference_release_format(tmp_path, original, config):
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(tiny_cfg()))
    ckpt = {
        "epoch": 28,
        "name": "cloob_tiny",
        "state_dict": to_reference_layout(original.state_dict()),
        "optimizer": {},
        "scheduler": {},
        "model_config_file": str(cfg_file)
        if config == "json-path"
        else "/gone/src/training/model_configs/Tiny-Arch.json",
    }
    torch.save(ckpt, tmp_path / "cloob_tiny_epoch_28.pt")
    loaded = load_checkpoint(tmp_path / "cloob_tiny_epoch_28.pt")
    assert loaded.format == "cloob-reference" and loaded.method == "cloob"
    assert loaded.name == ("tiny" if config == "json-path" else "inferred-from-shapes")
    same_embeddings(loaded.model, original)


def test_plain_open_clip_checkpoint_without_its_architecture_is_refused(tmp_path):
    """GELU and QuickGELU weights have the same shapes: no params.txt and no --model → refuse
    (OpenCLIP's trainer's own checkpoints: test_open_clip_runs.py)."""
    import open_clip

    original = open_clip.CLIP(**tiny_cfg()).eval()
    sd = {"module." + k: v for k, v in original.state_dict().items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": sd}, tmp_path / "epoch_1.pt")
    with pytest.raises(UsageError, match="cannot tell GELU from QuickGELU: add --model NAME"):
        load_checkpoint(tmp_path / "epoch_1.pt")


def test_wrong_shapes_and_garbage_are_one_line_errors(tmp_path, original):
    bad = trainer_checkpoint(original)
    bad["model_cfg"]["embed_dim"] = 48
    ckpt_format.write(tmp_path / "bad.pt", bad)
    with pytest.raises(UsageError, match="do not fit"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UsageError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    # arbitrary objects need full unpickling, which weights_only=True refuses
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1.0)}, tmp_path / "evil.pt")
    with pytest.raises(UsageError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_any_open_clip_model_with_pretrained_file(tmp_path, original):
    import open_clip

    from cloob.benchmarks.models.checkpoints import load_open_clip

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny-bench-test.json").write_text(json.dumps(tiny_cfg()))
    open_clip.add_model_config(configs)  # what `--model NAME` looks up
    torch.save({"epoch": 1, "state_dict": original.state_dict()}, tmp_path / "w.pt")
    loaded = load_open_clip("tiny-bench-test", str(tmp_path / "w.pt"))
    assert loaded.format == "open_clip-pretrained" and loaded.sha256
    same_embeddings(loaded.model, original)
    with pytest.raises(UsageError, match="open_clip model"):
        load_open_clip("tiny-bench-test", "no-such-tag")


@pytest.mark.parametrize(
    ("case", "message"),
    [*BROKEN_STORES, ("missing-key", "other.pt: no such checkpoint")],
    ids=[c for c, _ in [*BROKEN_STORES, ("missing-key", "")]],
)
def test_unusable_bucket_checkpoint_is_one_error_line(
    s3, monkeypatch, cli, tmp_path, case, message
):
    key = "runs/r/ckpt.pt"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"never read")
    url = (
        s3.url("runs/r/other.pt")
        if case == "missing-key"
        else break_store(s3, monkeypatch, case, key)
    )
    task = write_tree(tmp_path / "task", class_tree({"a": 1, "b": 1}))
    code, out, err = cli(
        "zeroshot",
        "--ckpt",
        url,
        "--dataset-dir",
        str(task),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "0",
        "--device",
        "cpu",
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert s3.secret not in out + err and not (tmp_path / "out").exists()
