"""`trainer run` bad input as a matrix: input → exit code, the one `error:` line, files left behind.

A new bad input is one `BadInput(...)` line; nothing may be written (no run folder under --logs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer import cli
from support.bad_input import BadInput, check
from support.shards import write_shards

from .conftest import MICRO

SYNTHETIC = ["--model", MICRO, "--dataset-type", "synthetic"]


def shard_dir(scratch: Path, sizes: str | None = None, garbage: bool = False) -> Path:
    root = write_shards(scratch / "data", 2, 4, size=16)
    if garbage:
        for tar in (root / "shards").glob("*.tar"):
            tar.write_bytes(os.urandom(2048))
    if sizes is not None:
        (root / "sizes.json").write_text(sizes)
    return root


def ckpt(scratch: Path, **fields) -> Path:
    path = scratch / "resume.pt"
    return ckpt_format.write(path, fields)


def good_fields() -> dict:
    """What a trainer checkpoint holds, minus the weights (enough to get past the field check)."""
    return {"model_name": "micro", "model_cfg": {}, "method": "clip", "step": 1,
            "state_dict": {}, "loss_state": {}, "optimizer": {"state": {}, "param_groups": []},
            "data": {"ranks": [], "global_batch": 8, "n_workers": 1},
            "rng": {"torch": torch.get_rng_state(), "numpy": {}, "python": {}}}


def data_args(**kw):
    return lambda s: ["--train-data", shard_dir(s, **kw)]


def resume_args(**fields):
    return lambda s: [*SYNTHETIC, "--resume", ckpt(s, **fields)]


CASES = [
    BadInput("sizes-json-not-json", data_args(sizes="{not json"), "sizes.json is not valid JSON"),
    BadInput("sizes-json-not-counts", data_args(sizes='{"00000.tar": "many"}'),
             "must map shard names to sample counts"),
    BadInput("no-readable-sample", data_args(garbage=True), "no readable sample in 2 shard(s)"),
    BadInput("resume-marker-only", resume_args(), "no 'model_name'"),
    BadInput("resume-state-dict-a-list",
             resume_args(**{**good_fields(), "state_dict": [1, 2, 3]}),
             "'state_dict' is not a mapping of names to tensors"),
    BadInput("resume-data-positions-missing",
             resume_args(**{**good_fields(), "data": {"ranks": [{}], "global_batch": 8,
                                                      "n_workers": 1}}),
             "'data.ranks' does not hold data positions"),
    BadInput("batch-size-not-a-number", lambda s: [*SYNTHETIC, "--batch-size", "x"],
             "Invalid value for '--batch-size'"),
    BadInput("unknown-option", lambda s: [*SYNTHETIC, "--colour", "red"], "No such option"),
    # issue 23.2: a --report-to typo used to turn logging off silently (exit 0, no tensorboard/)
    BadInput("report-to-typo", lambda s: [*SYNTHETIC, "--report-to", "tensorbaord"],
             "--report-to 'tensorbaord': unknown 'tensorbaord'"),
    BadInput("report-to-list-with-typo", lambda s: [*SYNTHETIC, "--report-to", "tensorboard,wandbb"],
             "unknown 'wandbb'; use all, tensorboard, wandb"),
    # an open_clip_train flag we do not implement: named, with what to use instead
    BadInput("openclip-lock-text", lambda s: [*SYNTHETIC, "--lock-text"],
             "--lock-text (an open_clip_train flag) is not supported: both towers always train"),
    BadInput("openclip-delete-previous", lambda s: [*SYNTHETIC, "--delete-previous-checkpoint"],
             "use --keep-last 1"),
    BadInput("openclip-upsampling-equals",
             lambda s: [*SYNTHETIC, "--train-data-upsampling-factors=1::2"],
             "--train-data-upsampling-factors (an open_clip_train flag) is not supported"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, monkeypatch, capsys, tmp_path):
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["trainer", "run", "--logs", str(tmp_path / "logs"),
                                          *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        return exc.value.code, capsys.readouterr().err

    check(case, tmp_path, run)
