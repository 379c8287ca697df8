"""`trainer run` bad input as a matrix: input → exit code, the one `error:` line, files left behind.

A new bad input is one `BadInput(...)` line; nothing may be written (no run folder under --logs)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import struct
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.common import folder_lock
from cloob.trainer import cli
from cloob.trainer.launch import VARIABLES
from cloob.trainer.openclip_compat import UNSUPPORTED
from support.bad_input import (
    UNREACHABLE,
    BadInput,
    PathOption,
    check,
    placed_options,
    unanswered_store,
    url_cases,
)
from support.s3 import S3Server
from support.shards import read_member, write_shards

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
    return {
        "model_name": "micro",
        "model_cfg": {},
        "method": "clip",
        "step": 1,
        "state_dict": {},
        "loss_state": {},
        "optimizer": {"state": {}, "param_groups": []},
        "data": {"ranks": [], "global_batch": 8, "n_workers": 1},
        "rng": {"torch": torch.get_rng_state(), "numpy": {}, "python": {}},
    }


def csv_args(scratch: Path) -> list:
    """A CSV whose images are not where it says (a wrong --path-data)."""
    path = scratch / "train.csv"
    path.write_text("filepath,title\na.jpg,a red circle\nb.jpg,a blue square\n")
    return [
        "--model",
        MICRO,
        "--train-data",
        path,
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--csv-separator",
        ",",
    ]


def data_args(**kw):
    return lambda s: ["--train-data", shard_dir(s, **kw)]


def resume_args(**fields):
    return lambda s: [*SYNTHETIC, "--resume", ckpt(s, **fields)]


CASES = [
    BadInput("sizes-json-not-json", data_args(sizes="{not json"), "sizes.json is not valid JSON"),
    BadInput(
        "sizes-json-not-counts",
        data_args(sizes='{"00000.tar": "many"}'),
        "must map shard names to sample counts",
    ),
    BadInput("no-readable-sample", data_args(garbage=True), "no readable sample in 2 shard(s)"),
    BadInput("csv-no-readable-image", csv_args, "none of the 2 images listed in"),
    BadInput("resume-marker-only", resume_args(), "no 'model_name'"),
    BadInput(
        "resume-state-dict-a-list",
        resume_args(**{**good_fields(), "state_dict": [1, 2, 3]}),
        "'state_dict' is not a mapping of names to tensors",
    ),
    BadInput(
        "resume-data-positions-missing",
        resume_args(
            **{**good_fields(), "data": {"ranks": [{}], "global_batch": 8, "n_workers": 1}}
        ),
        "'data.ranks' does not hold data positions",
    ),
    BadInput(
        "accum-freq-beyond-the-data",
        lambda s: [
            *SYNTHETIC,
            "--train-num-samples",
            "32",
            "--batch-size",
            "4",
            "--accum-freq",
            "1000000",
        ],
        "fewer than one global batch",
    ),
    BadInput(
        "decode-on-device-without-shards",
        lambda s: [*SYNTHETIC, "--decode-on-device"],
        "--decode-on-device needs webdataset shards: synthetic images reach the loader",
    ),
    BadInput(
        "device-unknown",
        lambda s: [*SYNTHETIC, "--device", "gpu"],
        "--device 'gpu': choose from auto, cpu, cuda",
    ),
    pytest.param(
        BadInput(
            "device-cuda-without-gpu",
            lambda s: [*SYNTHETIC, "--device", "cuda"],
            "--device cuda: no CUDA GPU is visible here",
        ),
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has one"),
    ),
    BadInput(
        "batch-size-not-a-number",
        lambda s: [*SYNTHETIC, "--batch-size", "x"],
        "Invalid value for '--batch-size'",
    ),
    BadInput("unknown-option", lambda s: [*SYNTHETIC, "--colour", "red"], "No such option"),
    # a --report-to typo used to turn logging off silently (exit 0, no tensorboard/)
    BadInput(
        "report-to-typo",
        lambda s: [*SYNTHETIC, "--report-to", "tensorbaord"],
        "--report-to 'tensorbaord': unknown 'tensorbaord'",
    ),
    BadInput(
        "report-to-list-with-typo",
        lambda s: [*SYNTHETIC, "--report-to", "tensorboard,wandbb"],
        "unknown 'wandbb'; use all, tensorboard, wandb",
    ),
    # an open_clip_train flag we do not implement: named, with what to use instead
    BadInput(
        "openclip-lock-text",
        lambda s: [*SYNTHETIC, "--lock-text"],
        "--lock-text (an open_clip_train flag) is not supported: both towers always train",
    ),
    BadInput(
        "openclip-delete-previous",
        lambda s: [*SYNTHETIC, "--delete-previous-checkpoint"],
        "use --keep-last 1",
    ),
    BadInput(
        "openclip-upsampling-equals",
        lambda s: [*SYNTHETIC, "--train-data-upsampling-factors=1::2"],
        "--train-data-upsampling-factors (an open_clip_train flag) is not supported",
    ),
]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small, valid JPEG whose frame header says `width` x `height`."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def a_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(buf, "JPEG")
    return buf.getvalue()


UNREADABLE = {
    "truncated-jpeg": lambda: a_jpeg()[: len(a_jpeg()) // 2],
    "zero-byte-jpeg": lambda: b"",
    "jpeg-header-claiming-60000x60000": lambda: jpeg_claiming(60000, 60000),
    "non-image-bytes": lambda: b"<html>not an image</html>",
}


def _file_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    file = tar.extractfile(member)
    assert file is not None  # the shards hold regular files only
    return file.read()


def shards_of(kind: str, *flags: str):
    """Two shards whose every image is `kind` (valid tars, captions present)."""

    def make(scratch: Path) -> list:
        root = shard_dir(scratch)
        for tar in sorted((root / "shards").glob("*.tar")):
            with tarfile.open(tar) as src:
                members = [(m, _file_bytes(src, m)) for m in src.getmembers()]
            with tarfile.open(tar, "w") as dst:
                for m, blob in members:
                    blob = UNREADABLE[kind]() if m.name.endswith(".jpg") else blob
                    m.size = len(blob)
                    dst.addfile(m, io.BytesIO(blob))
        return ["--model", MICRO, "--train-data", root, "--workers", "0", *flags]

    return make


# the worker path and --decode-on-device skip the same samples: all of them here
IMAGES = [
    BadInput(
        f"{kind}{'-decode-on-device' if flags else ''}",
        shards_of(kind, *flags),
        "no readable sample in 2 shard(s)",
    )
    for kind in UNREADABLE
    for flags in ((), ("--decode-on-device",))
]

# every value click takes for a float that is no number to start from
NOT_FINITE = [
    BadInput(
        f"{flag.strip('-')}-{value}",
        lambda s, flag=flag, value=value, extra=extra: [*SYNTHETIC, *extra, flag, value],
        f"{flag} must be a finite number, got {value}",
    )
    for flag, extra in (
        ("--init-logit-bias", ["--method", "siglip"]),
        ("--init-inv-tau", []),
        ("--init-scale-hopfield", []),
        ("--lr", []),
    )
    for value in ("nan", "inf")
]
INV_TAU = [
    BadInput(
        f"init-inv-tau-{value}",
        lambda s, value=value: [*SYNTHETIC, "--init-inv-tau", value],
        f"--init-inv-tau must be positive, got {float(value)}",
    )
    for value in ("0", "-1")
]
# every open_clip_train flag we refuse names itself and what to use instead
REFUSED = [
    BadInput(
        f"openclip{flag}",
        lambda s, flag=flag: [*SYNTHETIC, flag],
        f"{flag} (an open_clip_train flag) is not supported: {hint}",
    )
    for flag, hint in UNSUPPORTED.items()
]
CASES += NOT_FINITE + INV_TAU + REFUSED + IMAGES


def _id(case) -> str:
    return case.id if isinstance(case, BadInput) else ""


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input(case, monkeypatch, capsys, tmp_path):
    check(case, tmp_path, _runner(monkeypatch, capsys, tmp_path))


def _runner(monkeypatch, capsys, tmp_path: Path):
    def run(*args):
        monkeypatch.setattr(
            sys, "argv", ["trainer", "run", "--logs", str(tmp_path / "logs"), *map(str, args)]
        )
        with pytest.raises(SystemExit) as exc:
            cli.main()
        return exc.value.code, capsys.readouterr().err

    return run


# --- the launch: what the launcher's variables say (env(held port, free port)) and the run folder

_HOLDERS = contextlib.ExitStack()  # a lock another training holds, for the length of one case


def locked_run(scratch: Path) -> list:
    _HOLDERS.enter_context(folder_lock.held(scratch / "logs" / "busy", "a test"))
    return [*SYNTHETIC, "--name", "busy"]


def rank(n: int, **more: str) -> Callable[[int, int], dict[str, str]]:
    """Rank `n` of 2, as torchrun would start it, rendezvous on 127.0.0.1 (`more` fills in)."""
    return lambda held, free: {
        "WORLD_SIZE": "2",
        "RANK": str(n),
        "MASTER_ADDR": "127.0.0.1",
        **{k: v.format(held=held, free=free) for k, v in more.items()},
    }


LAUNCH_CASES = [
    (
        BadInput(
            "ranks-but-no-rendezvous",
            lambda s: SYNTHETIC,
            "2 ranks (Open MPI's variables) but no rendezvous: export MASTER_ADDR (rank 0's host)",
        ),
        lambda held, free: {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
    ),
    (
        BadInput(
            "rendezvous-port-in-use",
            lambda s: SYNTHETIC,
            "is already in use on this host (another job or a run still ending): export "
            "MASTER_PORT",
        ),
        rank(0, MASTER_PORT="{held}"),
    ),
    (
        BadInput(
            "rendezvous-rank-1-never-arrives",
            lambda s: [*SYNTHETIC, "--rendezvous-timeout", "1"],
            "(MASTER_ADDR/MASTER_PORT): only 1 of 2 ranks arrived within 1 s",
        ),
        rank(0, MASTER_PORT="{free}"),
    ),
    (
        BadInput(
            "rendezvous-rank-0-never-answers",
            lambda s: [*SYNTHETIC, "--rendezvous-timeout", "1"],
            "rank 0 did not answer within 1 s",
        ),
        rank(1, MASTER_PORT="{free}"),
    ),
    (
        BadInput(
            "run-folder-in-use",
            locked_run,
            "is in use by another training (host ",
        ),
        lambda held, free: {},
    ),
    (
        BadInput(
            "requeue-outside-slurm",
            lambda s: [*SYNTHETIC, "--requeue"],
            "--requeue needs a Slurm job: SLURM_JOB_ID is not set",
        ),
        lambda held, free: {},
    ),
    (
        BadInput(
            "rendezvous-timeout-zero",
            lambda s: [*SYNTHETIC, "--rendezvous-timeout", "0"],
            "--rendezvous-timeout must be positive",
        ),
        lambda held, free: {},
    ),
]


@pytest.mark.parametrize("case, env", LAUNCH_CASES, ids=[c.id for c, _ in LAUNCH_CASES])
def test_bad_launch(case, env, monkeypatch, capsys, tmp_path):
    for name in (*VARIABLES, "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as busy, _HOLDERS:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        for name, value in env(busy.getsockname()[1], free).items():
            monkeypatch.setenv(name, value)
        check(case, tmp_path, _runner(monkeypatch, capsys, tmp_path))


# --- the same matrix for inputs in a bucket (moto on 127.0.0.1): make(scratch, s3) -> arguments


def put(s3: S3Server, key: str, body: bytes | str) -> None:
    s3.client().put_object(
        Bucket=s3.bucket, Key=key, Body=body.encode() if isinstance(body, str) else body
    )


def resume_latest(marker: str | None, checkpoint: bytes | None = None):
    """--resume latest of run r1, whose bucket holds `marker` as latest.json (and epoch_1.pt)."""

    def make(scratch: Path, s3: S3Server) -> list:
        if marker is not None:
            put(s3, "runs/r1/checkpoints/latest.json", marker)
        if checkpoint is not None:
            put(s3, "runs/r1/checkpoints/epoch_1.pt", checkpoint)
        return [*SYNTHETIC, "--remote-sync", s3.url("runs"), "--name", "r1", "--resume", "latest"]

    return make


def corrupt_bucket_shards(scratch: Path, s3: S3Server) -> list:
    root = shard_dir(scratch, garbage=False)
    for tar in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(tar) as src:  # valid tars, every image undecodable
            members = [(m, read_member(src, m)) for m in src.getmembers()]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as dst:
            for m, blob in members:
                blob = blob if m.name.endswith(".txt") else b"not an image"
                m.size = len(blob)
                dst.addfile(m, io.BytesIO(blob))
        put(s3, f"ds/shards/{tar.name}", buf.getvalue())
    put(s3, "ds/sizes.json", (root / "sizes.json").read_text())
    return ["--model", MICRO, "--train-data", s3.url("ds"), "--workers", "0", "--batch-size", "4"]


S3_CASES = [
    BadInput("s3-every-sample-corrupt", corrupt_bucket_shards, "no readable sample in 2 shard(s)"),
    BadInput(
        "resume-latest-marker-not-json", resume_latest("{not json"), "latest.json is not valid JSON"
    ),
    BadInput(
        "resume-latest-marker-without-checkpoint",
        resume_latest('{"step": 3}'),
        "latest.json names no checkpoint",
    ),
    BadInput(
        "resume-latest-marker-names-a-missing-object",
        resume_latest('{"checkpoint": "epoch_9.pt", "step": 9}'),
        "names epoch_9.pt, which is not in s3://",
    ),
    BadInput(
        "resume-latest-object-corrupt",
        resume_latest('{"checkpoint": "epoch_1.pt", "step": 1}', b"\0" * 300),
        "/runs/r1/checkpoints/epoch_1.pt: not a readable checkpoint",
    ),
    BadInput(
        "resume-s3-object-missing",
        lambda s, s3: [*SYNTHETIC, "--resume", s3.url("runs/nothing.pt")],
        "runs/nothing.pt: no such checkpoint",
    ),
]


@pytest.mark.parametrize("case", S3_CASES, ids=_id)
def test_bad_input_in_a_bucket(case, s3, monkeypatch, capsys, tmp_path):
    keys: list[str] = []

    def make(scratch: Path) -> list:
        args = case.make(scratch, s3)
        keys.extend(s3.list_keys())
        return args

    check(dataclasses.replace(case, make=make), tmp_path, _runner(monkeypatch, capsys, tmp_path))
    assert s3.list_keys() == keys  # the bucket is left as found too


# --- a URL where a path belongs: every path option × s3://, http://, file:// (support.bad_input)


def run_with(*flags: object) -> Callable[[Path, str], list]:
    """`trainer run` on synthetic data with FLAGS, the last of which takes the URL."""
    return lambda s, url: [*SYNTHETIC, *flags, url]


def csv_file(scratch: Path) -> Path:
    (scratch / "train.csv").write_text("filepath,title\na.jpg,a red circle\n")
    return scratch / "train.csv"


REACHED = {"s3": UNREACHABLE}
PATH_OPTIONS = [
    PathOption("run", "--logs", run_with("--logs")),
    PathOption("run", "--train-data", lambda s, url: ["--train-data", url], REACHED),
    PathOption("run", "--val-data", run_with("--val-data"), REACHED),
    PathOption(
        "run",
        "--path-data",
        lambda s, url: ["--model", MICRO, "--train-data", csv_file(s), "--path-data", url],
    ),
    PathOption("run", "--imagenet-val", run_with("--imagenet-val")),
    PathOption("run", "--imagenet-v2", run_with("--imagenet-v2")),
    PathOption("run", "--zeroshot-task", run_with("--zeroshot-task")),
    PathOption("run", "--resume", run_with("--resume"), REACHED),
    PathOption("run", "--remote-sync", run_with("--remote-sync"), REACHED),
    PathOption("export", "ckpt", lambda s, url: ["export", url, "--out", s / "hub"], REACHED),
    PathOption(
        "export",
        "--out",
        lambda s, url: ["export", ckpt(s, **good_fields()), "--out", url],
        REACHED,
    ),
]


def test_url_rows_cover_every_path_option():
    assert {(o.command, o.flag) for o in PATH_OPTIONS} == placed_options(cli.app)


@pytest.mark.parametrize("case", url_cases(PATH_OPTIONS), ids=_id)
def test_url_where_a_path_belongs(case, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # a URL taken for a relative path would land here
    unanswered_store(monkeypatch)  # the object store: a port nobody listens on

    def run(*args):
        if args[0] == "run":
            args = ("run", "--logs", tmp_path / "logs", *args[1:])
        elif args[0] != "export":
            args = ("run", "--logs", tmp_path / "logs", *args)
        monkeypatch.setattr(sys, "argv", ["trainer", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        return exc.value.code, capsys.readouterr().err

    check(case, tmp_path, run)
