"""`benchmarks` bad input as a matrix: input → exit code, the one `error:` line, files left behind.

A new bad input is one `BadInput(...)` line. Archives come from the loopback mirror; a damaged
one must leave no dataset folder and no staging folder behind."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from support.bad_input import BadInput, check
from support.benchmark_data import class_tree, png_bytes, write_tiny_checkpoint, write_tree


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


def unreadable_task(scratch: Path) -> Path:
    write_tree(scratch / "task", {"a/empty.png": b"", "b/junk.jpg": b"not an image"})
    return scratch / "task"


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
    def make(scratch: Path) -> list:
        mirror = scratch.mirror  # set by the test: the loopback mirror fixture
        make_zip(mirror.root / "flowers102.zip")
        (scratch / "bench").mkdir()
        return ["fetch", "flowers102", "--root", scratch / "bench", "--base-url", mirror.url,
                "--checksums", mirror.checksums, "--no-progress"]
    return make


FETCHED_BEFORE_EXTRACTING = frozenset({"bench/.metadata", "bench/.downloads"})
CASES = [
    BadInput("zeroshot-batch-size-0",
             lambda s: ["zeroshot", "--ckpt", trainer_ckpt(s), "--dataset-dir", task(s),
                        "--batch-size", "0"],
             "Invalid value for '--batch-size'"),
    BadInput("zeroshot-unknown-option", lambda s: ["zeroshot", "--colour", "red"], "No such option"),
    BadInput("zeroshot-pretrained-file-with-code",
             lambda s: ["zeroshot", "--model", "RN50", "--pretrained", evil_weights(s),
                        "--dataset-dir", task(s), "--out", s / "out"],
             "refusing to load objects other than tensors"),
    BadInput("zeroshot-no-readable-image",
             lambda s: ["zeroshot", "--ckpt", trainer_ckpt(s), "--dataset-dir", unreadable_task(s),
                        "--out", s / "out", "--workers", "0", "--no-progress"],
             "none of its 2 images could be read", leaves=frozenset({"out"})),  # classifier cache
    BadInput("fetch-zip-member-with-a-bad-crc", fetch_with(bad_crc_zip), "damaged archive",
             leaves=FETCHED_BEFORE_EXTRACTING),
    BadInput("fetch-zip-with-a-path-both-file-and-folder", fetch_with(file_and_folder_zip),
             "'flowers102/a.png' is both a file and a folder", leaves=FETCHED_BEFORE_EXTRACTING),
]


class Scratch(type(Path())):  # a tmp_path that also carries the mirror to the case's `make`
    mirror = None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, cli, mirror, tmp_path):
    scratch = Scratch(tmp_path / "scratch")
    scratch.mkdir()
    scratch.mirror = mirror

    def run(*args):
        code, _, err = cli(*args)
        return code, err

    check(case, scratch, run)
