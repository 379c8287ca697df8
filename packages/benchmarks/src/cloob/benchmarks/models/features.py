"""Frozen image and text features of a model, with an on-disk cache per (checkpoint, dataset,
split), and the normalised embeddings of image–caption pairs (retrieval, analyze).

Image features come in two kinds:
- `pre-projection`: what CLIP's linear probes used (paper, appendix A.3: "for CLIP-ViT models, we
  used the features before the linear projection to the embedding space"). For a ViT that is the
  pooled token before `visual.proj`; a ModifiedResNet has no separate projection (its attention
  pool ends the tower), so there it is the attention-pool output, the same as the embedding.
- `embedding`: `encode_image`'s output in the joint image–text space (not normalised).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cloob.benchmarks.data.images import ImageRefs, ReadableBatches, collate_readable
from cloob.benchmarks.options import EvalOptions
from cloob.common.cli import UsageError
from cloob.common.files import atomic_path
from cloob.common.precision import resolve
from cloob.common.progress import progress_bar
from cloob.common.text import encode_text

if TYPE_CHECKING:  # only named in annotations: features stays on the floor above data's leaves
    from cloob.benchmarks.data.pairs import Pairs

FEATURE_KINDS = ("pre-projection", "embedding")


@dataclass
class Features:
    x: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64 (for captions: the index of the image they describe)
    seconds: float = 0.0  # wall time of the forward passes (0 when read from the cache)
    cached: bool = False
    index: np.ndarray | None = None  # (N,) positions in the dataset (unreadable images left out)
    skipped: int = 0  # images that did not decode

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = np.arange(len(self.labels))


def check_feature_kind(kind: str) -> None:
    if kind not in FEATURE_KINDS:
        raise UsageError(f"unknown feature kind {kind!r}; choose from {', '.join(FEATURE_KINDS)}")


@contextlib.contextmanager
def image_feature_mode(model, kind: str) -> Iterator[str]:
    """Make `model.encode_image` return features of `kind`; yields the kind in words.

    A ViT's projection is swapped out for the duration (and always put back): open_clip computes the
    pooled token and its projection in one forward, with no hook point in between."""
    check_feature_kind(kind)
    visual = model.visual
    tower = type(visual).__name__
    if kind == "embedding":
        yield f"embedding: encode_image output ({tower}), not normalised"
        return
    if tower == "ModifiedResNet":
        yield (
            "pre-projection: attention-pool output "
            "(a ModifiedResNet has no separate projection; = embedding)"
        )
        return
    proj = getattr(visual, "proj", None)
    if not isinstance(proj, torch.Tensor):
        raise UsageError(
            f"pre-projection features are defined for open_clip ViT and ModifiedResNet image "
            f"towers, not {tower}; use --features embedding"
        )
    visual.proj = None
    try:
        yield (
            f"pre-projection: {tower} pooled token before visual.proj "
            f"({proj.shape[0]}-d, not normalised)"
        )
    finally:
        visual.proj = proj


@torch.no_grad()
def encode_images(
    model,
    dataset: Dataset,
    opts: EvalOptions,
    *,
    label: str = "images",
    normalize: bool = False,
) -> Features:
    """Run `encode_image` over a dataset yielding (image, label, index), or None for an image that
    does not decode (skipped and counted, as zero-shot does); float32 numpy out."""
    device = opts.device
    loader = DataLoader(
        dataset,
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.workers,
        pin_memory=torch.device(device).type == "cuda",
        collate_fn=collate_readable,
    )
    # the one precision definition zero-shot and training use
    prec = resolve(opts.precision, device)
    chunks, labels, kept = [], [], []
    started = time.perf_counter()
    batches = ReadableBatches(loader, opts.progress, label)
    for images, targets, positions in batches:
        with prec.autocast(device):
            out = model.encode_image(prec.cast_input(images.to(device)))
        out = out.float()
        chunks.append((F.normalize(out, dim=-1) if normalize else out).cpu().numpy())
        labels.append(np.asarray(targets, dtype=np.int64))
        kept.append(np.asarray(positions, dtype=np.int64))
    skipped = batches.skipped
    if not chunks:
        raise UsageError(
            f"{label}: none of its {skipped} images could be read"
            if skipped
            else f"{label}: no images"
        )
    return Features(
        np.concatenate(chunks),
        np.concatenate(labels),
        time.perf_counter() - started,
        index=np.concatenate(kept),
        skipped=skipped,
    )


@torch.no_grad()
def encode_texts(
    model,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    label: str = "captions",
) -> np.ndarray:
    """L2-normalised `encode_text` embeddings, float32 (N, D)."""
    prec = resolve(precision, device)
    chunks = []
    with progress_bar(progress, label, len(texts)) as advance:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            with prec.autocast(device):
                # up to the batch's longest caption where that is exact, as zero-shot does
                out = encode_text(model, tokenizer(batch).to(device))
            chunks.append(F.normalize(out.float(), dim=-1).cpu().numpy())
            advance(len(batch))
    return np.concatenate(chunks)


# ---------------------------------------------------------------- image–caption pairs


@dataclass
class Embedded:
    images: np.ndarray  # the readable images' embeddings, in `pairs` order
    texts: np.ndarray  # the captions of those images
    seconds: float
    caption_image: np.ndarray  # for each row of `texts`, its row in `images`
    skipped: int = 0  # images that did not decode (left out with their captions)


def embed(
    model,
    preprocess,
    tokenizer,
    pairs: Pairs,
    opts: EvalOptions,
) -> Embedded:
    """Normalised image and caption embeddings of `pairs`; an image that does not decode is
    skipped with its captions and counted."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        images = encode_images(
            model,
            ImageRefs(pairs.images, preprocess),
            opts,
            label=f"{pairs.name} images",
            normalize=True,
        )
        assert images.index is not None  # Features.__post_init__ fills it
        keep, owner = readable_captions(pairs.caption_image, images.index, len(pairs.images))
        texts = encode_texts(
            model,
            tokenizer,
            [pairs.captions[t] for t in keep],
            device=opts.device,
            precision=opts.precision,
            progress=opts.progress,
            label=f"{pairs.name} captions",
        )
    finally:
        model.train(was_training)
    return Embedded(images.x, texts, time.perf_counter() - started, owner, images.skipped)


def readable_captions(
    caption_image: np.ndarray, kept_images: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the captions whose image was read, their image's row among the kept images)."""
    row = np.full(n_images, -1, dtype=np.int64)
    row[kept_images] = np.arange(len(kept_images))
    owner = row[np.asarray(caption_image, dtype=np.int64)]
    keep = np.flatnonzero(owner >= 0)
    return keep, owner[keep]


def embed_loaded(loaded, pairs: Pairs, opts: EvalOptions) -> Embedded:
    """`embed` a loaded checkpoint on opts.device (and back to the CPU after); `opts` is any
    command's config (retrieval's, analyze's)."""
    loaded.model.to(opts.device)
    try:
        return embed(loaded.model, loaded.preprocess, loaded.tokenizer, pairs, opts)
    finally:
        loaded.model.to("cpu")


def samples_fingerprint(samples: list[tuple[str, int]]) -> str:
    """Changes when the files or labels of a split change, so a stale cache entry is never used."""
    digest = hashlib.sha256()
    for path, label in samples:
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


@dataclass
class FeatureCache:
    """`.npz` files named by (checkpoint sha256, dataset, split, feature kind, precision,
    samples)."""

    folder: Path | None  # None: caching off

    def path(
        self,
        sha256: str | None,
        dataset: str,
        split: str,
        kind: str,
        precision: str,
        samples: list[tuple[str, int]],
    ) -> Path | None:
        if self.folder is None or not sha256:
            return None  # weights without a file hash (open_clip tags) are not cached
        return self.folder / (
            f"{sha256[:16]}-{_slug(dataset)}-{split}-{kind}-{precision}-"
            f"{samples_fingerprint(samples)[:12]}.npz"
        )

    def load(self, path: Path | None) -> Features | None:
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as data:
                index = data.get("index")  # None in entries from before skipping
                skipped = int(data["skipped"]) if "skipped" in data else 0
                return Features(
                    data["x"], data["labels"], 0.0, cached=True, index=index, skipped=skipped
                )
        except Exception:  # a damaged entry is recomputed, never trusted
            path.unlink(missing_ok=True)
            return None

    def save(self, path: Path | None, features: Features) -> bool:
        """Write the entry; True when a file was written."""
        if path is None:
            return False
        assert features.index is not None  # Features.__post_init__ fills it
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                x=features.x,
                labels=features.labels,
                index=features.index,
                skipped=np.int64(features.skipped),
            )
        return True


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
