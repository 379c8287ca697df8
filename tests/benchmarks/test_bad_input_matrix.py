"""`benchmarks` bad input as a matrix: input → exit code, the one `error:` line, files left behind.

A new bad input is one `BadInput(...)` line. Archives come from the loopback mirror; a damaged
one must leave no dataset folder and no staging folder behind."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PosixPath
from typing import Any

import pytest
import torch

from support.bad_input import (
    UNREACHABLE,
    BadInput,
    PathOption,
    check,
    placed_options,
    unanswered_store,
    url_cases,
)
from support.benchmark_data import (
    class_tree,
    png_bytes,
    tiny_cfg,
    write_hub_folder,
    write_tiny_checkpoint,
    write_tree,
)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def evil_weights(scratch: Path) -> Path:
    torch.save({"state_dict": Evil()}, scratch / "weights.pt")
    return scratch / "weights.pt"


def trainer_ckpt(scratch: Path) -> Path:
    path = scratch / "run.pt"
    return write_tiny_checkpoint(path, 0, "clip")


def task(scratch: Path) -> Path:
    return write_tree(scratch / "task", class_tree({"a": 1, "b": 1}))


def open_clip_weights(scratch: Path) -> Path:
    """A plain open_clip state dict, as OpenCLIP's trainer saves it, without the run's
    params.txt."""
    from support.benchmark_data import tiny_model

    sd = {"module." + k: v for k, v in tiny_model().state_dict().items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": sd}, scratch / "epoch_1.pt")
    return scratch / "epoch_1.pt"


def s3_object(key: str, body: bytes | None):
    """The s3:// URL of `key` in the test bucket (put there with `body` unless None)."""

    def url(scratch: Scratch) -> str:
        if body is not None:
            scratch.s3.client().put_object(Bucket=scratch.s3.bucket, Key=key, Body=body)
        return scratch.s3.url(key)

    return url


def zeroshot_ckpt(ckpt) -> Callable[[Path], list]:
    return lambda s: [
        "zeroshot",
        "--ckpt",
        ckpt(s),
        "--dataset-dir",
        task(s),
        "--out",
        s / "out",
        "--workers",
        "0",
        "--no-progress",
    ]


def unreadable_task(scratch: Path) -> Path:
    write_tree(scratch / "task", {"a/empty.png": b"", "b/junk.jpg": b"not an image"})
    return scratch / "task"


def probe_pair(counts: dict[str, int], unreadable: bool = False):
    """linear-probe on a train/test folder pair with these images per class (all undecodable)."""

    def make(scratch: Path) -> list:
        files = class_tree(counts)
        if unreadable:
            files = {rel: b"not an image" for rel in files}
        for split in ("train", "test"):
            write_tree(scratch / split, files)
        return [
            "linear-probe",
            "--ckpt",
            trainer_ckpt(scratch),
            "--train-dir",
            scratch / "train",
            "--test-dir",
            scratch / "test",
            "--out",
            scratch / "out",
            "--workers",
            "0",
            "--no-progress",
        ]

    return make


def unreadable_shards(scratch: Path) -> Path:
    """A dataprep-style shard whose three samples have captions and undecodable images."""
    (scratch / "data" / "shards").mkdir(parents=True)
    with tarfile.open(scratch / "data" / "shards" / "00000.tar", "w") as tf:
        for key, (ext, data) in enumerate(
            [("jpg", b"not a jpeg"), ("png", b""), ("webp", b"RIFF")]
        ):
            for name, body in ((f"{key:05d}.{ext}", data), (f"{key:05d}.txt", b"a red square")):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    return scratch / "data"


def on_unreadable_shards(command: str):
    return lambda s: [
        command,
        "--ckpt",
        trainer_ckpt(s),
        "--data",
        unreadable_shards(s),
        "--out",
        s / "out",
        "--workers",
        "0",
        "--no-progress",
    ]


def karpathy(images: object):
    """retrieval on a Karpathy JSON whose `images` is the given value (an image folder beside
    it)."""

    def make(scratch: Path) -> list:
        write_tree(scratch / "coco", class_tree({"val2014": 1}))
        (scratch / "k.json").write_text(json.dumps({"images": images}))
        return [
            "retrieval",
            "--ckpt",
            trainer_ckpt(scratch),
            "--karpathy",
            scratch / "k.json",
            "--images",
            scratch / "coco",
            "--out",
            scratch / "out",
            "--workers",
            "0",
            "--no-progress",
        ]

    return make


def existing_out_with_unreadable_task(scratch: Path) -> list:
    """A results folder from an earlier run (a foreign file, an old classifier) must stay as it
    was."""
    write_tree(scratch / "out", {"notes.txt": b"mine", ".classifiers/old.pt": b"an earlier run's"})
    return [
        "zeroshot",
        "--ckpt",
        trainer_ckpt(scratch),
        "--dataset-dir",
        unreadable_task(scratch),
        "--out",
        scratch / "out",
        "--workers",
        "0",
        "--no-progress",
    ]


def bad_crc_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("flowers102/pink primrose/img_000.png", png_bytes(1))
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the stored image bytes: the CRC no longer matches
    path.write_bytes(bytes(data))


def file_and_folder_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flowers102/a.png", png_bytes(1))
        zf.writestr("flowers102/a.png/x.png", png_bytes(2))


def fetch_with(make_zip):
    def make(scratch: Scratch) -> list:
        mirror = scratch.mirror  # set by the test: the loopback mirror fixture
        make_zip(mirror.root / "flowers102.zip")
        (scratch / "bench").mkdir()
        return [
            "fetch",
            "flowers102",
            "--root",
            scratch / "bench",
            "--base-url",
            mirror.url,
            "--checksums",
            mirror.checksums,
            "--no-progress",
        ]

    return make


FETCHED_BEFORE_EXTRACTING = frozenset({"bench/.metadata", "bench/.downloads"})


def hub(edit=None, model_cfg: object = None):
    """`zeroshot --ckpt DIR` on an exported folder (`trainer export`'s layout), after
    `edit(folder)` damaged it."""

    def make(scratch: Path) -> list:
        folder = write_hub_folder(scratch / "hub", model_cfg)
        if edit is not None:
            edit(folder)
        return zeroshot_ckpt(lambda s: folder)(scratch)

    return make


def with_tower(tower: str, **fields) -> dict:
    cfg = tiny_cfg()
    cfg[tower] = {**cfg[tower], **fields}
    return cfg


def link_config_outside(folder: Path) -> None:
    outside = folder.parent / "elsewhere.json"
    outside.write_text((folder / "open_clip_config.json").read_text())
    (folder / "open_clip_config.json").unlink()
    (folder / "open_clip_config.json").symlink_to(outside)


def pickle_as_safetensors(folder: Path) -> None:
    weights = folder / "open_clip_model.safetensors"
    torch.save(tiny_model_state(), weights)


def tiny_model_state() -> dict:
    from support.benchmark_data import tiny_model

    return tiny_model().state_dict()


def bootstrap(value: str):
    return lambda s: [*zeroshot_ckpt(trainer_ckpt)(s), "--bootstrap", value]


HUB_CASES = [
    BadInput(
        "hub-model-cfg-names-an-architecture",
        hub(model_cfg="RN50"),
        'model_cfg must be the architecture\'s config (a JSON object), not "RN50"',
    ),
    BadInput(
        "hub-vision-tower-unknown-timm-model",
        hub(model_cfg=with_tower("vision_cfg", timm_model_name="no_such_timm_model")),
        "is not an open_clip CLIP config: Unknown model (no_such_timm_model)",
    ),
    BadInput(
        "hub-text-tower-hugging-face-model-not-cached",
        hub(model_cfg=with_tower("text_cfg", hf_model_name="nobody/no-such-model")),
        "its text tower wants the Hugging Face model 'nobody/no-such-model', which is not in "
        "the local cache; loading a model downloads nothing unless you allow it: set "
        "CLOOB_ALLOW_DOWNLOADS=1",
    ),
    BadInput(
        "hub-image-size-a-billion",
        hub(model_cfg=with_tower("vision_cfg", image_size=10**9)),
        "model config vision_cfg.image_size = 1000000000 is not a whole number from 1 to 4096",
    ),
    BadInput(
        "hub-width-negative",
        hub(model_cfg=with_tower("text_cfg", width=-64)),
        "model config text_cfg.width = -64 is not a whole number",
    ),
    BadInput(
        "hub-safetensors-missing",
        hub(lambda f: (f / "open_clip_model.safetensors").unlink()),
        "a checkpoint folder needs open_clip_config.json and open_clip_model.safetensors",
    ),
    BadInput(
        "hub-config-corrupt-json",
        hub(lambda f: (f / "open_clip_config.json").write_text('{"model_cfg": {')),
        "open_clip_config.json: not an open_clip config",
    ),
    BadInput(
        "hub-weights-of-another-shape",
        hub(model_cfg=with_tower("text_cfg", width=32)),
        "weights do not fit the tiny-vit architecture",
    ),
    BadInput(
        "hub-a-pickle-where-safetensors-belongs",
        hub(pickle_as_safetensors),
        "open_clip_model.safetensors: not a readable safetensors file",
    ),
    BadInput(
        "hub-config-a-link-out-of-the-folder",
        hub(link_config_outside),
        "open_clip_config.json: a link out of the model folder",
    ),
    BadInput("bootstrap-negative", bootstrap("-1"), "Invalid value for '--bootstrap'"),
    BadInput("bootstrap-a-billion", bootstrap(str(10**9)), "Invalid value for '--bootstrap'"),
    BadInput("bootstrap-not-an-integer", bootstrap("2.5"), "Invalid value for '--bootstrap'"),
]


CASES = [
    BadInput(
        "zeroshot-batch-size-0",
        lambda s: [
            "zeroshot",
            "--ckpt",
            trainer_ckpt(s),
            "--dataset-dir",
            task(s),
            "--batch-size",
            "0",
        ],
        "Invalid value for '--batch-size'",
    ),
    BadInput(
        "zeroshot-unknown-option", lambda s: ["zeroshot", "--colour", "red"], "No such option"
    ),
    BadInput(
        "zeroshot-pretrained-file-with-code",
        lambda s: [
            "zeroshot",
            "--model",
            "RN50",
            "--pretrained",
            evil_weights(s),
            "--dataset-dir",
            task(s),
            "--out",
            s / "out",
        ],
        "refusing to load objects other than tensors",
    ),
    BadInput(
        "zeroshot-no-readable-image",
        lambda s: [
            "zeroshot",
            "--ckpt",
            trainer_ckpt(s),
            "--dataset-dir",
            unreadable_task(s),
            "--out",
            s / "out",
            "--workers",
            "0",
            "--no-progress",
        ],
        "none of its 2 images could be read",
    ),  # and no classifier cache left behind in out/
    BadInput(
        "zeroshot-no-readable-image-in-an-existing-out",
        existing_out_with_unreadable_task,
        "none of its 2 images could be read",
    ),
    BadInput(
        "linear-probe-no-readable-train-image",
        probe_pair({"a": 3, "b": 3}, unreadable=True),
        "scratch train: none of its 6 images could be read",
    ),
    BadInput(
        "linear-probe-one-class",
        probe_pair({"a": 3}),
        "a linear probe needs train images of at least 2 classes, found 1",
    ),
    BadInput(
        "linear-probe-one-train-image-per-class",
        probe_pair({"a": 1, "b": 1}),
        "the validation split carved from train (--val-fraction 0.2 of each class, one image "
        "always kept",
    ),
    BadInput(
        "retrieval-no-readable-image-in-shards",
        on_unreadable_shards("retrieval"),
        "data images: none of its 3 images could be read",
    ),
    BadInput(
        "analyze-no-readable-image-in-shards",
        on_unreadable_shards("analyze"),
        "data images: none of its 3 images could be read",
    ),
    BadInput(
        "retrieval-karpathy-images-is-a-dict",
        karpathy({"img_000.png": {}}),
        "k.json: not a Karpathy-split JSON ('images' is a dict, not a list)",
    ),
    BadInput(
        "retrieval-karpathy-images-are-numbers",
        karpathy([1, 2]),
        "k.json: images[0] is a int, not an object with 'filename' and 'sentences'",
    ),
    BadInput(
        "retrieval-karpathy-entry-without-filename",
        karpathy([{"split": "test", "sentences": [{"raw": "x"}]}]),
        "k.json: images[0] has no 'filename'",
    ),
    BadInput(
        "retrieval-karpathy-sentence-without-raw",
        karpathy(
            [
                {
                    "split": "test",
                    "filepath": "val2014",
                    "filename": "img_000.png",
                    "sentences": [{"tokens": ["x"]}],
                }
            ]
        ),
        "(img_000.png): sentences[0] has no 'raw' text",
    ),
    BadInput(
        "retrieval-karpathy-sentence-null",
        karpathy(
            [
                {
                    "split": "test",
                    "filepath": "val2014",
                    "filename": "img_000.png",
                    "sentences": [None],
                }
            ]
        ),
        "(img_000.png): sentences[0] has no 'raw' text",
    ),
    BadInput(
        "zeroshot-open-clip-checkpoint-without-params-txt",
        zeroshot_ckpt(open_clip_weights),
        "cannot tell GELU from QuickGELU: add --model NAME",
    ),
    BadInput(
        "zeroshot-ckpt-s3-without-bucket",
        zeroshot_ckpt(lambda s: "s3://"),
        "s3://: no bucket named",
    ),
    BadInput(
        "zeroshot-ckpt-s3-missing-object",
        zeroshot_ckpt(s3_object("runs/r/epoch_9.pt", None)),
        "/runs/r/epoch_9.pt: no such checkpoint",
    ),
    BadInput(
        "zeroshot-ckpt-s3-not-a-checkpoint",
        zeroshot_ckpt(s3_object("runs/r/bad.pt", b"garbage")),
        "/runs/r/bad.pt: not a readable checkpoint",
    ),
    BadInput(
        "fetch-zip-member-with-a-bad-crc",
        fetch_with(bad_crc_zip),
        "damaged archive",
        leaves=FETCHED_BEFORE_EXTRACTING,
    ),
    BadInput(
        "fetch-zip-with-a-path-both-file-and-folder",
        fetch_with(file_and_folder_zip),
        "'flowers102/a.png' is both a file and a folder",
        leaves=FETCHED_BEFORE_EXTRACTING,
    ),
]


class Scratch(PosixPath):  # a tmp_path that also carries the mirror and S3 to the case's `make`
    mirror: Any = None
    s3: Any = None


@pytest.mark.parametrize("case", CASES + HUB_CASES, ids=lambda c: c.id)
def test_bad_input(case, cli, mirror, s3, tmp_path):
    scratch = Scratch(tmp_path / "scratch")
    scratch.mkdir()
    scratch.mirror, scratch.s3 = mirror, s3

    def run(*args):
        code, _, err = cli(*args)
        return code, err

    check(case, scratch, run)


# --- a URL where a path belongs: every path option × s3://, http://, file:// (support.bad_input)


def evaluation(command: str, scratch: Path) -> dict[str, object]:
    """A valid `command` line's path options (flag → value) on tiny local inputs."""
    if command == "zeroshot":
        inputs: dict[str, object] = {"--dataset-dir": task(scratch)}
    elif command == "linear-probe":
        for split in ("train", "test"):
            write_tree(scratch / split, class_tree({"a": 3, "b": 3}))
        inputs = {"--train-dir": scratch / "train", "--test-dir": scratch / "test"}
    else:
        inputs = {"--data": unreadable_shards(scratch)}
    return {"--ckpt": trainer_ckpt(scratch), **inputs, "--out": scratch / "out"}


def evaluate(command: str, flag: str):
    """`command` with `flag URL` in place of its own value (or added). Only a URL that is taken
    (s3:// for --ckpt) gets past the command line; for the others the inputs are named, not made:
    the URL is refused while the options are parsed."""

    def make(scratch: Path, url: str) -> list:
        taken = flag == "--ckpt" and url.startswith("s3://")
        named = {"--ckpt": scratch / "model.pt", "--out": scratch / "out"}
        paths = {**(evaluation(command, scratch) if taken else named), flag: url}
        return [command, *(x for item in paths.items() for x in item), "--workers", "0"]

    return make


def fetching(name: str, flag: str):
    return lambda s, url: ["fetch", name, "--root", s / "root", flag, url]


REACHED = {"s3": UNREACHABLE}
EVALUATIONS = {
    "zeroshot": ["--ckpt", "--root", "--dataset-dir", "--classnames", "--templates", "--out"],
    "linear-probe": ["--ckpt", "--root", "--train-dir", "--test-dir", "--out", "--feature-cache"],
    "retrieval": ["--ckpt", "--data", "--karpathy", "--images", "--out"],
    "analyze": ["--ckpt", "--data", "--karpathy", "--images", "--out"],
}
PATH_OPTIONS = [
    PathOption("list", "--root", lambda s, url: ["list", "--root", url]),
    PathOption("fetch", "--root", lambda s, url: ["fetch", "flowers102", "--root", url]),
    PathOption("fetch", "--imagenet", fetching("imagenet", "--imagenet")),
    PathOption("fetch", "--checksums", fetching("flowers102", "--checksums")),
    PathOption("fetch", "--train-dir", fetching("imagenet", "--train-dir")),
    *(
        PathOption(command, flag, evaluate(command, flag), REACHED if flag == "--ckpt" else {})
        for command, flags in EVALUATIONS.items()
        for flag in flags
    ),
]


def test_url_rows_cover_every_path_option():
    from cloob.benchmarks.cli import app

    assert {(o.command, o.flag) for o in PATH_OPTIONS} == placed_options(app)


@pytest.mark.parametrize("case", url_cases(PATH_OPTIONS), ids=lambda c: c.id)
def test_url_where_a_path_belongs(case, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a URL taken for a relative path would land here
    unanswered_store(monkeypatch)  # the object store: a port nobody listens on

    def run(*args):
        code, _, err = cli(*args)
        return code, err

    check(case, tmp_path, run)
