"""Generated stand-ins for linear probing and retrieval: class-structured images, official archive layouts."""

from __future__ import annotations

import io
import random

from PIL import Image


def class_image(label: int, seed: int, size: int = 32, noise: int = 6) -> bytes:
    """A PNG whose background hue depends on `label`, overlaid with `noise` random patches: a linear
    probe on random-weight features can learn the class, but not perfectly."""
    rng = random.Random(seed)
    hue = ((label * 67) % 256, (label * 151) % 256, (label * 23 + 90) % 256)
    img = Image.new("RGB", (size, size), hue)
    for _ in range(noise):
        x, y, w = rng.randrange(size), rng.randrange(size), rng.randrange(4, size // 2)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size, x + w), min(size, y + w)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_split(folders: list[str], per_class: int, seed: int, noise: int = 6, ext: str = "png") -> dict[str, bytes]:
    """{'<folder>/<n>.<ext>': bytes} with `per_class` images for each folder (label = its position)."""
    files = {}
    for label, folder in enumerate(folders):
        for i in range(per_class):
            files[f"{folder}/{seed:03d}_{i:04d}.{ext}"] = class_image(label, seed * 1_000_003 + label * 1000 + i,
                                                                     noise=noise)
    return files
