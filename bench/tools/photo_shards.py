"""Shards like img2dataset writes them for CC3M/YFCC, with photograph-like content, made locally.

img2dataset with `--image_size 256 --resize_mode keep_ratio` stores JPEGs at quality 95 (its
default `encode_quality`) with 256 px on the short side and the aspect ratio of the photo. Decode
cost
depends on what the JPEG holds (flat colours decode in a fraction of a photo's time), so the images
are windows of coloured 1/f noise (amplitude ∝ f^-1.35, the power-law spectrum of natural images)
with a random colour mix each: ~40 kB per 256 × 384 image, like CC3M at 256 px. Captions are
CC3M-like: 6-16 words. Cached: `photo_shards(cache)` builds once (~10-20 s on one core) and reuses.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

QUALITY = 95  # img2dataset's default encode_quality
SHORT_SIDE = 256
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3)  # width / height: landscape and portrait photos
WORDS = [
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "child",
    "car",
    "street",
    "house",
    "tree",
    "river",
    "beach",
    "city",
    "night",
    "sky",
    "people",
    "playing",
    "sitting",
    "standing",
    "in",
    "on",
    "at",
    "the",
    "with",
    "near",
    "old",
    "new",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "view",
    "of",
    "from",
    "during",
    "summer",
    "winter",
    "field",
    "mountain",
    "road",
    "building",
    "water",
    "boat",
    "table",
    "food",
]


def photo_shards(cache: Path, shards: int = 8, per_shard: int = 256, seed: int = 0) -> Path:
    """A dataprep-layout folder (sizes.json + shards/NNNNN.tar) of `shards × per_shard` samples."""
    out = cache / f"photo256-{shards}x{per_shard}-s{seed}"
    if (out / "sizes.json").is_file():
        return out
    rng = np.random.default_rng(seed)
    pool = [_texture(rng) for _ in range(4)]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    (tmp / "shards").mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s in range(shards):
        name = f"{s:05d}.tar"
        with tarfile.open(tmp / "shards" / name, "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                _add(tar, f"{key}.jpg", _jpeg(pool[rng.integers(len(pool))], rng))
                _add(tar, f"{key}.txt", " ".join(rng.choice(WORDS, rng.integers(6, 17))).encode())
        sizes[name] = per_shard
    for where in (tmp, tmp / "shards"):
        (where / "sizes.json").write_text(json.dumps(sizes))
    tmp.rename(out)  # whole or not at all: a killed build leaves no half cache behind
    return out


def _texture(rng: np.random.Generator, n: int = 1024) -> np.ndarray:
    """n × n × 3 uint8 coloured 1/f noise."""
    fx = np.fft.fftfreq(n)[:, None]
    fy = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    channels = [
        np.fft.irfft2(
            (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**1.35, s=(n, n)
        )
        for _ in range(3)
    ]
    a = np.stack(channels, -1) @ (rng.normal(size=(3, 3)) * 0.5 + np.eye(3))
    a = (a - a.mean()) / a.std()
    return np.clip(128 + 50 * a, 0, 255).astype(np.uint8)


def _jpeg(texture: np.ndarray, rng: np.random.Generator) -> bytes:
    aspect = float(rng.choice(ASPECTS))
    h, w = (
        (SHORT_SIDE, round(SHORT_SIDE * aspect))
        if aspect >= 1
        else (round(SHORT_SIDE / aspect), SHORT_SIDE)
    )
    y, x = rng.integers(0, texture.shape[0] - h), rng.integers(0, texture.shape[1] - w)
    window = texture[y : y + h, x : x + w]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(window)).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
