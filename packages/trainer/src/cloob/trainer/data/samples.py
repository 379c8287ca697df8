"""One sample: decoding a webdataset sample, and seeds that do not depend on what came before.

Every random choice in the data path is seeded from a tuple (seed, epoch, rank, worker, ...),
including each sample's augmentation, so a sample's tensor is the same whether the run was resumed
or not."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from cloob.common.shard_layout import IMAGE_EXTS


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple: stable across processes (unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_transform(
    transform: Callable, image: Image.Image | tuple[bytes, str], seed: int
) -> torch.Tensor:
    """Apply a torchvision transform with its own torch seed, leaving the caller's RNG untouched.
    `image` is PIL, or (bytes, extension) for a transform that decodes itself (`takes_bytes`).

    Only the CPU generator (the one torchvision's random transforms draw from) is seeded and
    restored: `torch.manual_seed` would also queue a lazy seed for every accelerator backend,
    formatting a stack trace each time (a third of the loader's per-sample cost), and leave those
    device generators reseeded."""
    if getattr(transform, "takes_seed", False):  # transforms.Uint8TrainTransform: own generator
        return transform(image, seed=seed)
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        return transform(image)
    finally:
        gen.set_state(state)


def decode_sample(sample: dict[str, Any]) -> tuple[Image.Image, str]:
    """webdataset sample (raw bytes per extension) → (RGB image, caption)."""
    image_key = next((k for k in IMAGE_EXTS if k in sample), None)
    if image_key is None or "txt" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} lacks an image or a caption")
    image = Image.open(io.BytesIO(sample[image_key]))
    image.load()
    return image.convert("RGB"), sample["txt"].decode("utf-8")
