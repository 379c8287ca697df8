"""webdataset shards in dataprep's layout, for tests: DIR/shards/NNNNN.tar + sizes.json."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import webdataset as wds

from cloob.dataprep.synthetic import describe, random_scene, render


def write_shards(
    root: Path, n_shards: int, per_shard: int, *, seed: int = 0, size: int = 64, fmt: str = "jpeg"
) -> Path:
    """Write a dataprep-style output folder of procedural scenes and return it.

    Members per sample: `{key}.jpg|png`, `{key}.txt` (caption), `{key}.json`; `sizes.json` is
    written
    both at `root/` and at `root/shards/`."""
    rng = random.Random(seed)
    shard_dir = Path(root) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    ext = {"jpeg": "jpg", "png": "png"}[fmt]
    sizes = {}
    for s in range(n_shards):
        name = f"{s:05d}.tar"
        with wds.TarWriter(str(shard_dir / name)) as sink:
            for i in range(per_shard):
                scene = random_scene(rng)
                buf = io.BytesIO()
                render(scene, rng, size).save(buf, format=fmt.upper())
                key = f"{s:05d}{i:04d}"
                sink.write(
                    {
                        "__key__": key,
                        ext: buf.getvalue(),
                        "txt": describe(scene, rng).encode(),
                        "json": json.dumps({"key": key, "shape": scene.shape}).encode(),
                    }
                )
        sizes[name] = per_shard
    for where in (Path(root), shard_dir):
        (where / "sizes.json").write_text(json.dumps(sizes))
    return Path(root)


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut a tar short, as a killed writer leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo | str) -> bytes:
    """The bytes of a file in an open tar (a directory or link has none: that fails here)."""
    file = tar.extractfile(member)
    assert file is not None, f"{member} is not a regular file"
    return file.read()
