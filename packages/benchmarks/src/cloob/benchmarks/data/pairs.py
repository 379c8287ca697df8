"""Image–caption pairs for retrieval and embedding analysis: webdataset shards or a Karpathy split.

Inputs: webdataset shards as dataprep writes them (`{key}.jpg|png|webp` + `{key}.txt`, one caption
per image), read straight from the tar members; or a Karpathy-split JSON (`images[*].filename`,
optional `filepath`, `split`, `sentences[*].raw`) with the image folder it refers to.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from cloob.benchmarks.data.images import ImageRef
from cloob.common import shard_layout
from cloob.common.cli import UsageError
from cloob.common.shard_layout import IMAGE_EXTS


@dataclass
class Pairs:
    """Images, captions, and for each caption the index of its image."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    caption_image: np.ndarray
    source: dict = field(default_factory=dict)


def shard_files(paths: list[Path]) -> list[Path]:
    """Tar files from dataprep output folders (DIR/shards/*.tar or DIR/*.tar) and/or tar paths."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = shard_layout.shard_files(path)
            if not found:
                raise UsageError(
                    f"{path}: no .tar shards (expected {path}/shards/*.tar or {path}/*.tar)"
                )
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such shard file or folder")
    return out


def from_shards(paths: list[Path], name: str | None = None) -> Pairs:
    """One (image, caption) pair per sample that has both; samples missing either are skipped."""
    images, captions = [], []
    skipped = 0
    files = shard_files(paths)
    for tar in files:
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(tar) as tf:
                for member in tf:
                    if member.isfile():
                        base = PurePosixPath(member.name)
                        key, _, ext = base.name.partition(".")
                        samples.setdefault(f"{base.parent}/{key}", {})[ext.lower()] = member
                texts = {k: m["txt"] for k, m in samples.items() if "txt" in m}
                caption_bytes = {k: _member_bytes(tf, m) for k, m in texts.items()}
        except tarfile.TarError as err:
            raise UsageError(f"{tar}: not a readable tar ({err})") from None
        for key, members in samples.items():
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            if image is None or key not in caption_bytes:
                skipped += 1
                continue
            images.append(ImageRef(str(tar), image.offset_data, image.size))
            captions.append(caption_bytes[key].decode("utf-8").strip())
    if not images:
        raise UsageError(
            f"{', '.join(map(str, paths))}: no image–caption pairs found in {len(files)} shard(s)"
        )
    first = Path(paths[0])
    return Pairs(
        name or (first.name if first.is_dir() else first.parent.name),
        images,
        captions,
        np.arange(len(images)),
        {
            "kind": "webdataset shards",
            "shards": [str(f) for f in files],
            "skipped_samples": skipped,
        },
    )


def _member_bytes(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The member's content; callers pass regular files only (extractfile is None for the rest)."""
    f = tf.extractfile(member)
    if f is None:
        raise UsageError(f"{member.name}: not a regular file in the tar")
    return f.read()


def from_karpathy(
    json_path: Path, image_root: Path, split: str = "test", name: str | None = None
) -> Pairs:
    """Every image of `split` with all its captions (`sentences[*].raw`)."""
    json_path, image_root = Path(json_path), Path(image_root)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such Karpathy-split JSON")
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root}: no such image folder")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        entries = data["images"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{json_path}: not a Karpathy-split JSON (no 'images' list)") from None
    if not isinstance(entries, list):
        raise UsageError(
            f"{json_path}: not a Karpathy-split JSON ('images' is a {type(entries).__name__}, "
            f"not a list)"
        )
    for i, e in enumerate(entries):
        _check_entry(json_path, i, e)
    chosen = [e for e in entries if e.get("split") == split]
    if not chosen:
        present = sorted({str(e.get("split")) for e in entries})
        raise UsageError(
            f"{json_path}: no images in split {split!r} (splits present: "
            f"{', '.join(present) or 'none'})"
        )
    images: list[ImageRef] = []
    captions: list[str] = []
    owner: list[int] = []
    for e in chosen:
        path = image_root / e.get("filepath", "") / e["filename"]
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: image listed in {json_path.name} not found under {image_root}"
            )
        texts = [s["raw"].strip() for s in e.get("sentences", [])]
        if not texts:
            raise UsageError(f"{json_path}: image {e['filename']} has no sentences")
        owner.extend([len(images)] * len(texts))
        images.append(ImageRef(str(path)))
        captions.extend(texts)
    return Pairs(
        name or data.get("dataset") or json_path.stem,
        images,
        captions,
        np.array(owner),
        {
            "kind": "Karpathy split",
            "json": str(json_path),
            "images": str(image_root),
            "split": split,
        },
    )


def _check_entry(json_path: Path, i: int, e: object) -> None:
    """One `images` entry as the Karpathy format has it, or a UsageError naming what is wrong."""
    where = f"{json_path}: images[{i}]"
    if not isinstance(e, dict):
        raise UsageError(
            f"{where} is a {type(e).__name__}, not an object with 'filename' and 'sentences'"
        )
    if not isinstance(e.get("filename"), str) or not e["filename"]:
        raise UsageError(f"{where} has no 'filename'")
    if not isinstance(e.get("filepath", ""), str):
        raise UsageError(f"{where}: 'filepath' is not a string")
    sentences = e.get("sentences", [])
    if not isinstance(sentences, list):
        raise UsageError(f"{where} ({e['filename']}): 'sentences' is not a list")
    for j, sentence in enumerate(sentences):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
            raise UsageError(f"{where} ({e['filename']}): sentences[{j}] has no 'raw' text")


def resolve_pairs(
    data: list[Path] | None,
    karpathy: Path | None,
    images: Path | None,
    split: str,
    name: str | None = None,
) -> Pairs:
    if bool(data) == bool(karpathy):
        raise UsageError(
            "give --data (dataprep folder or shards) or --karpathy JSON --images DIR, not both"
        )
    if karpathy:
        if images is None:
            raise UsageError(
                "--karpathy needs --images DIR (the folder its filenames are relative to)"
            )
        return from_karpathy(karpathy, images, split, name)
    assert data  # the either-or check above: no --karpathy means --data was given
    return from_shards(list(data), name)
