"""The training image path that keeps a GPU fed: uint8 from the workers, float on the device.

OpenCLIP's train transform (RandomResizedCrop, bicubic → RGB → ToTensor → Normalize) runs whole in
each data worker: PIL decode, PIL resample, then a float32 tensor (4 bytes per channel value)
pickled through shared memory. `Uint8TrainTransform` keeps the recipe and moves the cheap, wide part
to the device:

- JPEG bytes are decoded by `torchvision.io.decode_jpeg` (libjpeg-turbo straight into a tensor; the
  same pixels as PIL's decoder, ~1.7× faster here); anything else goes through PIL;
- the crop box is drawn by torchvision's own `RandomResizedCrop.get_params` (the same RNG draws as
  the float path, so one seed gives the same crop) and resampled by torchvision's uint8 bicubic
  antialias kernel (≤ 1 grey level from PIL's, ~2.5× faster);
- the worker returns a uint8 (C, H, W) tensor: a quarter of the bytes;
- `to_device` pins nothing itself (the DataLoader's pin thread does, off the critical path), copies
  non-blocking and does ToTensor's and Normalize's arithmetic there, in their order, so a crop
  gives bit-identical floats to the CPU path's for the same uint8 pixels.

Measured choices (bench/compare/loader.py, bench/NOTES.md): PIL's JPEG `draft()` never applies at
img2dataset's 256 px (a 224 crop of ≥ 90% of the area needs the full-scale DCT), so it is not used.

Optionally (`trainer run --decode-on-device`, off by default: unmeasured on GPUs) the workers do
not decode at all: a JPEG sample leaves the worker as its encoded bytes plus the crop box (drawn
from the same seeded generator, the image size read from the JPEG header), batches travel as an
`EncodedBatch`, and `to_device` decodes them with `torchvision.io.decode_jpeg(..., device=...)`
(nvJPEG on CUDA), crops and resizes there. On device="cpu" that is the same decoder and the same
resize as the worker path, so the batch is bit-identical (tests/trainer/test_transforms.py).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from cloob.common.shard_layout import IMAGE_EXTS

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Normalisation:
    """Normalize's mean and std (per channel), applied on the device to uint8 batches."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class Uint8TrainTransform:
    """OpenCLIP's train recipe up to the uint8 crop: image (PIL or encoded bytes) → uint8 (C, H, W).

    `takes_bytes` tells the shard reader to hand over a sample's encoded image (`(bytes, ext)`)
    instead of a decoded PIL image, so JPEGs are decoded by libjpeg-turbo into a tensor."""

    takes_bytes = True
    takes_seed = (
        True  # `data.seeded_transform` passes the seed instead of seeding torch's generator
    )

    def __init__(
        self,
        size: Sequence[int],
        scale: Sequence[float],
        ratio: Sequence[float],
        norm: Normalisation,
        *,
        decode_on_device: bool = False,
    ) -> None:
        self.size, self.scale, self.ratio, self.norm = list(size), list(scale), list(ratio), norm
        self.decode_on_device = decode_on_device
        self._gen: torch.Generator | None = None

    def __call__(
        self, image: Image.Image | tuple[bytes, str], seed: int | None = None
    ) -> torch.Tensor | EncodedCrop:
        """With `seed`, the crop is drawn from a generator seeded with it: the same box as
        torch.manual_seed(seed) then T.RandomResizedCrop, without touching (and so without saving
        and restoring, a tenth of a sample's cost) torch's global generator.

        With `decode_on_device`, a clean JPEG is not decoded here: its bytes and box come back as
        an `EncodedCrop` (the box the decoded path would draw: same size, same generator state)."""
        if self.decode_on_device and seed is not None and isinstance(image, tuple):
            hw = jpeg_size(image[0])
            if hw is not None:
                box = crop_box(*hw, self.scale, self.ratio, self._seeded(seed))
                return EncodedCrop(
                    torch.frombuffer(bytearray(image[0]), dtype=torch.uint8),
                    box,
                    (self.size[0], self.size[1]),
                )
        pixels = decode(image) if isinstance(image, tuple) else _pil_rgb(image)
        if seed is None:
            i, j, h, w = T.RandomResizedCrop.get_params(pixels, self.scale, self.ratio)
        else:
            i, j, h, w = crop_box(
                pixels.shape[-2], pixels.shape[-1], self.scale, self.ratio, self._seeded(seed)
            )
        return _resized_crop(pixels, (i, j, h, w), self.size)

    def _seeded(self, seed: int) -> torch.Generator:
        if self._gen is None:
            self._gen = torch.Generator()
        return self._gen.manual_seed(seed)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gen": None}  # a generator is per process (DataLoader workers)

    def __repr__(self) -> str:
        where = ", JPEG decode on the device" if self.decode_on_device else ""
        return (
            f"Uint8TrainTransform(size={self.size}, scale={self.scale}, bicubic, "
            f"mean={self.norm.mean}, std={self.norm.std} on the device{where})"
        )


def decoding_on_device(transform: Uint8TrainTransform) -> Uint8TrainTransform:
    """A copy of `transform` that leaves JPEG decoding (and the crop) to `to_device`."""
    return Uint8TrainTransform(
        transform.size, transform.scale, transform.ratio, transform.norm, decode_on_device=True
    )


class EncodedCrop(NamedTuple):
    """One sample for decoding on the device: its JPEG (uint8 1-D) and crop box (top, left, h,
    w)."""

    data: torch.Tensor
    box: tuple[int, int, int, int]
    size: tuple[int, int]


@dataclass(frozen=True)
class EncodedBatch:
    """A batch whose JPEGs `to_device` decodes, packed in four tensors so a batch crosses the
    worker pipe as four shared-memory blocks, not one per sample."""

    data: torch.Tensor  # uint8 1-D: the JPEGs back to back
    lengths: torch.Tensor  # int64 (N,): bytes of sample k's JPEG; 0: the worker made its crop
    boxes: torch.Tensor  # int64 (N, 4): crop box (top, left, height, width); zeros for ready ones
    ready: (
        torch.Tensor
    )  # uint8 (M, 3, H, W): the crops the workers made (not clean JPEGs), in order
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.lengths)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.data, self.lengths, self.boxes, self.ready

    def pin_memory(self) -> EncodedBatch:
        """The DataLoader's pin thread calls this (torch pins objects that have the method)."""
        return replace(self, data=self.data.pin_memory(), ready=self.ready.pin_memory())

    def decode(self, device: torch.device) -> torch.Tensor:
        """uint8 (N, 3, H, W) on `device`: decode_jpeg on the whole list (batched nvJPEG on
        CUDA), then each image's own crop and bicubic antialias resize, there."""
        lengths, boxes = self.lengths.tolist(), self.boxes.tolist()
        chunks = list(torch.split(self.data, [n for n in lengths if n]))
        decoded = decode_jpeg(chunks, mode=ImageReadMode.RGB, device=device) if chunks else []
        ready = self.ready.to(device, non_blocking=True)
        out = torch.empty(len(lengths), 3, *self.size, dtype=torch.uint8, device=device)
        d = r = 0
        for k, n in enumerate(lengths):
            if n:
                out[k] = _resized_crop(decoded[d], boxes[k], self.size)
                d += 1
            else:
                out[k] = ready[r]
                r += 1
        return out


def stack(images: Sequence[torch.Tensor | EncodedCrop]) -> torch.Tensor | EncodedBatch:
    """A worker's batch: stacked uint8/float crops, or an `EncodedBatch` when some samples are
    left for the device to decode."""
    encoded = [x for x in images if isinstance(x, EncodedCrop)]
    if not encoded:
        return torch.stack(list(images))  # type: ignore[arg-type]
    size = encoded[0].size
    ready = [x for x in images if not isinstance(x, EncodedCrop)]
    return EncodedBatch(
        data=torch.cat([x.data for x in encoded]),
        lengths=torch.tensor([len(x.data) if isinstance(x, EncodedCrop) else 0 for x in images]),
        boxes=torch.tensor(
            [list(x.box) if isinstance(x, EncodedCrop) else [0] * 4 for x in images]
        ),
        ready=torch.stack(ready) if ready else torch.empty(0, 3, *size, dtype=torch.uint8),
        size=size,
    )


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's header, without decoding; None for anything the device path
    should not take: not a JPEG, not RGB or greyscale (CMYK), no end marker (truncated), a
    header PIL cannot parse, or one claiming more pixels than PIL's limit. Those samples take the
    worker path, which decodes (or skips) them."""
    if data[:2] != _JPEG_SOI or data[-2:] != _JPEG_EOI:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # parses the markers up to the frame header only
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            _check_pixels(im.height, im.width)
            return im.height, im.width
    except Exception:  # any unreadable header: the worker path decides (and reports) it
        return None


def _resized_crop(pixels: torch.Tensor, box: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    top, left, h, w = box
    return v2.functional.resized_crop(
        pixels,
        top,
        left,
        h,
        w,
        list(size),
        interpolation=v2.InterpolationMode.BICUBIC,
        antialias=True,
    )


def crop_box(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], gen: torch.Generator
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, height, width) drawn from `gen`: the same torch draws
    in the same order as torchvision's `RandomResizedCrop.get_params` makes from the global
    generator (up to 10 tries of area fraction and log aspect ratio, then the offsets; else the
    centred fallback), so equal generator states give equal boxes
    (tests/trainer/test_transforms.py)."""
    area = height * width
    lo, hi = torch.log(torch.tensor(list(ratio))).tolist()  # float32 bounds, like torchvision's
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = torch.exp(torch.empty(1).uniform_(lo, hi, generator=gen)).item()
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def decode(image: tuple[bytes, str]) -> torch.Tensor:
    """Encoded image → uint8 RGB (3, H, W): libjpeg-turbo for JPEG, PIL for the rest. No EXIF
    rotation, like the PIL path. A corrupt or truncated file raises (the reader skips it), and so
    does one whose header claims more pixels than PIL's decompression-bomb limit: libjpeg-turbo
    would allocate the whole frame first (11 GB for a 60000 x 60000 header on a few hundred
    bytes)."""
    data, _ext = image
    if data[:2] == _JPEG_SOI:
        with Image.open(io.BytesIO(data)) as im:  # the header only; PIL's own limit applies
            _check_pixels(im.height, im.width)
        return decode_jpeg(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
        )
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _pil_rgb(im)


def _check_pixels(height: int, width: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        raise ValueError(f"{width} x {height} pixels: over the {limit}-pixel limit")


def _pil_rgb(image: Image.Image) -> torch.Tensor:
    return pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))


def uint8_train_transform(preprocess: Any) -> Uint8TrainTransform | None:
    """The uint8 equivalent of an OpenCLIP train transform, or None when it holds anything beyond
    RandomResizedCrop(bicubic) → RGB → ToTensor → Normalize (colour jitter, timm, ...): those keep
    the float path, unchanged."""
    steps = list(getattr(preprocess, "transforms", []))
    names = [type(s).__name__ for s in steps]
    if names != ["RandomResizedCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"]:
        return None
    crop, norm = steps[0], steps[3]
    if crop.interpolation != T.InterpolationMode.BICUBIC or not _rgb(steps[1]):
        return None
    return Uint8TrainTransform(
        crop.size, crop.scale, crop.ratio, Normalisation(_floats(norm.mean), _floats(norm.std))
    )


def _rgb(step: Any) -> bool:
    return getattr(step, "mode", "RGB") == "RGB"


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(
        float(v) for v in (values if isinstance(values, Sequence | torch.Tensor) else [values] * 3)
    )


def normalisation(transform: Any) -> Normalisation | None:
    """The device-side normalisation a loader's images need: None for float images."""
    return transform.norm if isinstance(transform, Uint8TrainTransform) else None


def to_device(
    images: torch.Tensor | EncodedBatch,
    device: torch.device,
    norm: Normalisation | None,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """A loader's image batch on `device`, as the model takes it (float, normalised).

    uint8 batches are copied as uint8 (non-blocking: pinned by the DataLoader on CUDA) and become
    float there with ToTensor's `x.float().div(255)` then Normalize's `sub(mean).div(std)`, the same
    float32 operations in the same order, so they equal the CPU path's floats. Float batches (the
    legacy path, validation) are only moved. An `EncodedBatch` (--decode-on-device) is decoded,
    cropped and resized on `device` first."""
    if isinstance(images, EncodedBatch):
        images = images.decode(device)
    else:
        images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        if norm is None:
            raise ValueError("a uint8 image batch needs its mean/std (transforms.normalisation)")
        mean = torch.tensor(norm.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32, device=device).view(-1, 1, 1)
        images = images.float().div_(255).sub_(mean).div_(std)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def encoded_sample(sample: dict[str, Any]) -> tuple[tuple[bytes, str], str]:
    """webdataset sample (raw bytes per extension) → ((encoded image, ext), caption), undecoded:
    `Uint8TrainTransform` decodes it. Raises ValueError like `data.decode_sample`."""
    ext = next((k for k in IMAGE_EXTS if k in sample), None)
    if ext is None or "txt" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} lacks an image or a caption")
    return (sample[ext], ext), sample["txt"].decode("utf-8")
