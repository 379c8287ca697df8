"""Training from shards in an S3 bucket (moto on 127.0.0.1): streamed through fsspec, no local
copy; the same batches, so the same weights, as from the local folder, and exact resume intact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer import cli
from cloob.trainer.data import resolve_source
from cloob.trainer.loop import train
from support.s3 import BROKEN_STORES, S3Server, break_store

from .conftest import MICRO
from .test_resume import K, config


def upload(s3: S3Server, folder: Path, prefix: str) -> str:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.client().put_object(
                Bucket=s3.bucket, Key=f"{prefix}/{path.relative_to(folder)}", Body=path.read_bytes()
            )
    return s3.url(prefix)


def test_bucket_sources_resolve_like_local_ones(s3: S3Server, shard_dir: Path) -> None:
    url = upload(s3, shard_dir, "ds")
    folder = resolve_source(url, "auto")
    assert folder.shards == [f"{url}/shards/0000{i}.tar" for i in range(4)]
    assert folder.sizes == {s: 16 for s in folder.shards}  # sizes.json read from the bucket
    braces = resolve_source(f"{url}/shards/{{00000..00001}}.tar", "auto")
    assert braces.shards == folder.shards[:2] and braces.sizes == {s: 16 for s in braces.shards}
    # a plain folder of tars (no sizes.json): found by the shared layout's listing of the bucket
    for tar in sorted((shard_dir / "shards").glob("*.tar")):
        s3.client().put_object(Bucket=s3.bucket, Key=f"plain/{tar.name}", Body=tar.read_bytes())
    plain = resolve_source(s3.url("plain"), "auto")
    assert plain.shards == [f"{s3.url('plain')}/0000{i}.tar" for i in range(4)]
    assert plain.sizes == {} and plain.known_samples is None


def test_train_from_bucket_matches_local_and_resumes_exactly(
    s3: S3Server, shard_dir: Path, tmp_path: Path
) -> None:
    url = upload(s3, shard_dir, "ds")
    local = train(config(shard_dir, tmp_path, "local", 2, 2 * K))
    # K steps from the bucket, then a resume from the checkpoint to 2K: same weights as locally.
    train(config(url, tmp_path, "remote", 2, K))  # type: ignore[arg-type]
    resumed = train(config(url, tmp_path, "remote", 2, 2 * K, resume="latest"))  # type: ignore[arg-type]
    assert local.checkpoint is not None and resumed.checkpoint is not None  # one process: rank 0
    a, b = ckpt_format.read(local.checkpoint), ckpt_format.read(resumed.checkpoint)
    assert b["step"] == 2 * K
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.parametrize(("case", "message"), BROKEN_STORES, ids=[c for c, _ in BROKEN_STORES])
@pytest.mark.parametrize("flag", ["--train-data", "--remote-sync"])
def test_unusable_bucket_is_one_error_line(
    s3: S3Server,
    monkeypatch,
    capsys,
    tmp_path: Path,
    shard_dir: Path,
    flag: str,
    case: str,
    message: str,
) -> None:
    url = break_store(s3, monkeypatch, case, "ds" if flag == "--train-data" else "runs")
    before = s3.list_keys() if case != "unreachable-endpoint" else None
    args = (
        ["--train-data", url]
        if flag == "--train-data"
        else ["--train-data", shard_dir, "--remote-sync", url]
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "trainer",
            "run",
            "--model",
            MICRO,
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--workers",
            "0",
            "--logs",
            str(tmp_path / "logs"),
            *map(str, args),
        ],
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and message in err[0], err
    assert s3.secret not in err[0]
    assert not (tmp_path / "logs").exists()  # nothing started, nothing written
    if before is not None:
        assert s3.list_keys() == before
