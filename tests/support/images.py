"""Small real JPEG/PNG files with captions, generated from seeded procedural scenes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from cloob.dataprep.synthetic import describe, random_scene, render


@dataclass(frozen=True)
class GeneratedImage:
    path: Path  # absolute path of the written file
    relpath: str  # path relative to the output root, with forward slashes
    caption: str
    shape: str
    colour: str


def make_images(
    root: Path, n: int, *, seed: int = 0, size: int = 64, fmt: str = "jpeg", subdir: str = ""
) -> list[GeneratedImage]:
    """Write `n` images under `root/subdir` and return them with their captions."""
    rng = random.Random(seed)
    out = Path(root) / subdir
    out.mkdir(parents=True, exist_ok=True)
    ext = {"jpeg": "jpg", "png": "png"}[fmt]
    made = []
    for i in range(n):
        scene = random_scene(rng)
        file = out / f"img_{i:05d}.{ext}"
        render(scene, rng, size).save(file, format=fmt.upper())
        made.append(
            GeneratedImage(
                file,
                file.relative_to(root).as_posix(),
                describe(scene, rng),
                scene.shape,
                scene.colour,
            )
        )
    return made


def image_bytes(seed: int = 0, size: int = 64, fmt: str = "jpeg") -> bytes:
    """One encoded image, for tests that need bytes rather than files."""
    import io

    rng = random.Random(seed)
    buf = io.BytesIO()
    render(random_scene(rng), rng, size).save(buf, format=fmt.upper())
    return buf.getvalue()
