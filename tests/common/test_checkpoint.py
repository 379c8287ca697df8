"""The checkpoint format's one home (cloob.common.checkpoint): marker, writer, validating reader.

The trainer's full payload is checked against the description in tests/trainer/test_data.py
(a real run); here the format itself, on small hand-made payloads written through the writer."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError


def resume_payload(**override) -> dict:
    """The fields a resume needs (values small; the reader checks kinds, not sizes)."""
    position = {"epoch": 0, "batch": 3, "worker_pos": [1, 2], "next_worker": 0, "skipped": 0}
    return {
        "model_name": "micro",
        "model_cfg": {"embed_dim": 8},
        "method": "cloob",
        "step": 3,
        "state_dict": {"w": torch.ones(2)},
        "loss_state": {"logit_beta": torch.tensor(2.0)},
        "optimizer": {"state": {}, "param_groups": []},
        "data": {"ranks": [position], "global_batch": 8, "n_workers": 1},
        "rng": {"torch": torch.get_rng_state(), "numpy": {}, "python": {}},
        **override,
    }


def test_marker_is_frozen():
    # files already on disk carry this string; changing it orphans every checkpoint written so far
    assert ckpt_format.FORMAT == "cloob-toolkit/1"


def test_round_trip_stamps_the_marker(tmp_path):
    path = ckpt_format.write(tmp_path / "a" / "latest.pt", resume_payload())
    raw = torch.load(path, weights_only=True)  # plain types only, open to any torch user
    assert raw["format"] == ckpt_format.FORMAT and list(raw)[0] == "format"
    ckpt = ckpt_format.read(path)
    assert ckpt["step"] == 3 and torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_checkpoints_without_later_fields_still_load(tmp_path):
    # the optional fields (scheduler, scaler, precision, config, accum_freq, cuda RNG, ...) are
    # absent from older files; a resume and an evaluation must still read those files
    required = ckpt_format.TrainerCheckpoint.__required_keys__
    optional = set(typing.get_type_hints(ckpt_format.TrainerCheckpoint)) - required
    assert {"scheduler", "scaler", "precision", "config", "inv_tau", "hopfield_beta"} <= optional
    ckpt_format.read(ckpt_format.write(tmp_path / "old.pt", resume_payload()))
    model_only = {
        k: v
        for k, v in resume_payload().items()
        if k in ckpt_format.ModelCheckpoint.__required_keys__
    }
    ckpt_format.check(
        torch.load(ckpt_format.write(tmp_path / "m.pt", model_only), weights_only=True), "m.pt"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"step": "3"}, "'step' is a str, not an int"),
        ({"optimizer": {"state": {}}}, "no 'optimizer.param_groups'"),
        ({"loss_state": {"logit_beta": 2.0}}, "'loss_state' is not a mapping of names to tensors"),
        ({"rng": {"torch": [1], "numpy": {}, "python": {}}}, "'rng.torch' is not a tensor"),
        (
            {"data": {"ranks": [{"epoch": 0}], "global_batch": 8, "n_workers": 1}},
            "'data.ranks' does not hold data positions",
        ),
        ({"inv_tau": "hot"}, "'inv_tau' is a str, not a number"),
    ],
)
def test_reader_names_the_first_problem(tmp_path, override, message):
    path = ckpt_format.write(tmp_path / "bad.pt", resume_payload(**override))
    with pytest.raises(UsageError) as err:
        ckpt_format.read(path)
    assert str(err.value) == f"{path} is not a complete {ckpt_format.FORMAT} checkpoint: {message}"


def test_foreign_files_are_not_toolkit_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(UsageError, match="is not a cloob-toolkit/1 checkpoint"):
        ckpt_format.read(tmp_path / "plain.pt")


def test_importing_the_format_needs_no_torch():
    # dataprep uses cloob.common and must not need torch
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import cloob.common.checkpoint as c; assert c.FORMAT"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
