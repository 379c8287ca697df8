"""The images every evaluation reads: labelled image files (`ImageSet`, `ImageList`), image–caption
images that may sit inside a tar (`ImageRef`, `ImageRefs`), and the one rule for an image that
does not decode (`read_image`: None, logged; `collate_readable`: dropped from the batch, counted).

Imports nothing else of the package, so the feature and protocol modules above it stay low.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from cloob.common.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """A labelled image set: one split of an evaluation dataset, with its class names and prompt
    templates, ready to evaluate (the glossary in docs/architecture.md: an *image set*, not an
    evaluation)."""

    name: str
    root: Path  # the folder holding one sub-folder per class
    classnames: list[str]
    templates: list[str]  # each with one `{}`
    samples: list[tuple[str, int]]
    label_rule: str  # how folder names became labels, in words
    headline: str = "acc1"
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classnames)


class ImageList(Dataset):
    """(image tensor, label, index) for a list of (path, label); None for an image that does not
    decode (corrupt, truncated, empty), which `collate_readable` drops and counts."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = read_image(lambda: Image.open(path), path)
        return None if image is None else (self.transform(image), label, i)


@dataclass(frozen=True)
class ImageRef:
    """An image file, or a member of a tar (offset and size of its data, read without unpacking)."""

    path: str
    offset: int = -1
    size: int = -1

    def open(self) -> Image.Image | None:
        """The image as RGB; None (logged) when it does not decode."""
        if self.offset < 0:
            return read_image(lambda: Image.open(self.path), self.path)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)

        return read_image(lambda: Image.open(io.BytesIO(data)), f"{self.path} @{self.offset}")


class ImageRefs(Dataset):
    """(image tensor, index, index), or None for an image that does not decode: the shape
    `features.encode_images` expects."""

    def __init__(self, refs: list[ImageRef], transform) -> None:
        self.refs, self.transform = refs, transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        image = self.refs[i].open()
        return None if image is None else (self.transform(image), i, i)


def read_image(opener, name: object):
    """`opener()`'s image as RGB, or None (logged) when its bytes do not decode: the one place
    every evaluation decides what an unreadable image is."""
    try:
        with opener() as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises many types for bad bytes
        log.warning("skipping unreadable image %s: %s", name, " ".join(str(err).split())[:200])
        return None


def collate_readable(items: list) -> tuple:
    """A batch of the readable items: (images, labels, indices, number skipped). The collate of
    every evaluation's image loader (zero-shot, features for linear probes, retrieval, analyze)."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0), empty, empty, skipped
    images, labels, indices = default_collate(kept)
    return images, labels, indices, skipped


class ReadableBatches:
    """The batches of a `collate_readable` loader that hold readable images, as (images, labels,
    positions), with the progress bar advanced over every image and the unreadable ones counted
    in `skipped`: the one loop zero-shot and the feature extraction share."""

    def __init__(self, loader: DataLoader, progress: bool, label: str) -> None:
        self.loader, self.progress, self.label = loader, progress, label
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        with progress_bar(
            self.progress, self.label, len(cast(Sized, self.loader.dataset))
        ) as advance:
            for images, targets, positions, n_bad in self.loader:
                self.skipped += n_bad
                advance(len(targets) + n_bad)
                if len(targets):
                    yield images, targets, positions
