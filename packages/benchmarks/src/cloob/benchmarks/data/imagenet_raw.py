"""ImageNet val from the raw `ILSVRC2012_img_val.tar` + `ILSVRC2012_devkit_t12.tar.gz`.

The val tar is flat (`ILSVRC2012_val_00000001.JPEG` …); the devkit's ground-truth file gives each
image's ILSVRC2012_ID (line i = image i) and `meta.mat` maps IDs to wnids. Images are sorted into
`val/<wnid>/`, whose sorted order is the standard class index order.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path
from typing import IO

from cloob.common.cli import UsageError

_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def read_devkit(devkit: Path) -> tuple[list[str], list[str]]:
    """(all 1000 leaf wnids, the wnid of every val image in image-number order)."""
    from scipy.io import loadmat  # imported here: only this path reads MATLAB files

    meta = truth = None
    with tarfile.open(devkit) as tf:
        for member in tf.getmembers():
            if member.isfile() and member.name.endswith("data/meta.mat"):
                meta = _member_file(tf, member).read()
            elif member.isfile() and member.name.endswith(
                "data/ILSVRC2012_validation_ground_truth.txt"
            ):
                truth = _member_file(tf, member).read().decode()
    if meta is None or truth is None:
        raise UsageError(f"{devkit}: no data/meta.mat or validation ground truth inside")
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {
        int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0
    }
    return sorted(id_to_wnid.values()), [id_to_wnid[int(line)] for line in truth.split()]


def unpack_val(tar: Path, devkit: Path, out: Path) -> int:
    """Stream the val tar into `out/<wnid>/`; returns the image count."""
    leaves, wnids = read_devkit(devkit)
    for wnid in leaves:  # every class gets its folder, so the sorted-wnid label space is complete
        (out / wnid).mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(tar) as tf:
        for member in tf:
            match = _VAL_NAME.fullmatch(Path(member.name).name)
            if not (member.isfile() and match):
                continue  # only the known flat names are written; anything else is ignored
            index = int(match.group(1)) - 1
            if index >= len(wnids):
                raise UsageError(f"{tar}: {member.name} has no ground-truth label in the devkit")
            with (
                _member_file(tf, member) as src,
                open(out / wnids[index] / match.group(0), "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            n += 1
    return n


def _member_file(tf: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """The member's content; callers pass regular files only (extractfile is None for the rest)."""
    f = tf.extractfile(member)
    if f is None:
        raise UsageError(f"{member.name}: not a regular file in the tar")
    return f
