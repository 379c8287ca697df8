"""--remote-sync checkpoints in a bucket (moto on 127.0.0.1): --keep-last prunes the bucket too,
after the commit marker moves and never the checkpoint it names; a resume downloads under a
temporary name and checks before it takes the place of latest.pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError
from cloob.trainer import checkpoint
from support.s3 import S3Server

PREFIX = "runs/r/checkpoints"


def marker(s3: S3Server) -> dict:
    return json.loads(s3.read(f"{PREFIX}/latest.json"))


def commit(s3: S3Server, tmp_path: Path, name: str, step: int, keep_last: int) -> None:
    local = tmp_path / name
    local.write_bytes(name.encode())
    checkpoint.upload(local, s3.url(PREFIX), step, keep_last)


def test_keep_last_prunes_the_bucket_after_the_marker_moves(s3: S3Server, tmp_path: Path):
    s3.client().put_object(Bucket=s3.bucket, Key=f"{PREFIX}/epoch_0.pt", Body=b"not ours")
    names = ["step_2.pt", "epoch_1.pt", "step_6.pt", "epoch_2.pt", "step_10.pt"]
    for step, name in enumerate(names, 1):
        commit(s3, tmp_path, name, step, keep_last=2)
        assert marker(s3)["checkpoint"] == name  # the named one is always there
        assert f"{PREFIX}/{name}" in s3.list_keys()
    assert s3.list_keys(PREFIX) == sorted(
        f"{PREFIX}/{n}" for n in ("epoch_0.pt", "epoch_2.pt", "step_10.pt", "latest.json")
    )
    assert marker(s3)["history"] == ["epoch_2.pt", "step_10.pt"]


def test_keep_last_one_keeps_only_the_committed_one(s3: S3Server, tmp_path: Path):
    for step, name in enumerate(["step_1.pt", "step_2.pt", "step_3.pt"], 1):
        commit(s3, tmp_path, name, step, keep_last=1)
    assert s3.list_keys(PREFIX) == [f"{PREFIX}/latest.json", f"{PREFIX}/step_3.pt"]


def test_keep_last_zero_keeps_everything_and_an_old_marker_is_continued(
    s3: S3Server, tmp_path: Path
):
    s3.client().put_object(
        Bucket=s3.bucket,
        Key=f"{PREFIX}/latest.json",  # from before `history`
        Body=json.dumps({"checkpoint": "epoch_1.pt", "step": 1}).encode(),
    )
    s3.client().put_object(Bucket=s3.bucket, Key=f"{PREFIX}/epoch_1.pt", Body=b"old")
    commit(s3, tmp_path, "epoch_2.pt", 2, keep_last=0)
    assert marker(s3)["history"] == ["epoch_1.pt", "epoch_2.pt"]
    commit(s3, tmp_path, "epoch_3.pt", 3, keep_last=1)
    assert s3.list_keys(PREFIX) == [f"{PREFIX}/epoch_3.pt", f"{PREFIX}/latest.json"]


def _trainer_checkpoint(path: Path) -> Path:
    """A complete trainer checkpoint (a two-parameter model stands in for a real one)."""
    fields = {
        "model_name": "micro",
        "model_cfg": {},
        "method": "clip",
        "step": 3,
        "state_dict": {"w": torch.ones(2)},
        "loss_state": {},
        "optimizer": {"state": {}, "param_groups": []},
        "data": {"ranks": [], "global_batch": 8, "n_workers": 1},
        "rng": {"torch": torch.get_rng_state(), "numpy": {}, "python": {}},
    }
    return ckpt_format.write(path, fields)


def test_a_broken_bucket_checkpoint_does_not_shadow_the_repaired_one(s3: S3Server, tmp_path: Path):
    """The bucket's committed checkpoint is broken: the resume fails with one line naming the
    object and leaves no local latest.pt; once the object is repaired, the resume reads it."""
    good = _trainer_checkpoint(tmp_path / "good.pt").read_bytes()
    put = s3.client().put_object
    put(
        Bucket=s3.bucket,
        Key=f"{PREFIX}/latest.json",
        Body=json.dumps({"checkpoint": "epoch_1.pt", "step": 3}).encode(),
    )
    put(Bucket=s3.bucket, Key=f"{PREFIX}/epoch_1.pt", Body=good[: len(good) // 2])  # cut short
    local = tmp_path / "logs" / "r" / "checkpoints"
    with pytest.raises(UsageError, match=f"{s3.url(PREFIX)}/epoch_1.pt: not a readable"):
        checkpoint.load_resume("latest", local, s3.url(PREFIX))
    assert not (tmp_path / "logs").exists()  # no latest.pt, no folders made for it
    put(Bucket=s3.bucket, Key=f"{PREFIX}/epoch_1.pt", Body=good)  # the bucket is repaired
    ckpt = checkpoint.load_resume("latest", local, s3.url(PREFIX))
    assert (
        ckpt is not None
        and ckpt["step"] == 3
        and torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    )
    assert (local / "latest.pt").read_bytes() == good
    assert sorted(p.name for p in local.iterdir()) == ["latest.pt"]  # no temporary left
