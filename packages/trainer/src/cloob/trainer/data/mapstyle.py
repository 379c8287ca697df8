"""Map-style data: the reference's CSV format and procedural synthetic scenes, batched by index
(each index carries its sample and its augmentation seed, so a resumed epoch starts at a batch)."""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from cloob.common.cli import UsageError
from cloob.trainer.data.samples import derive_seed, seeded_transform

log = logging.getLogger("cloob.trainer")


class CsvCaptions:
    """The reference's CSV: a header row, an image-path column and a caption column."""

    def __init__(
        self, path: str, root: str | None, sep: str, img_key: str, caption_key: str
    ) -> None:
        sep = sep.encode().decode("unicode_escape") if "\\" in sep else sep  # accept a literal '\t'
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=sep)
            fields = reader.fieldnames or []
            for key, flag in ((img_key, "--csv-img-key"), (caption_key, "--csv-caption-key")):
                if key not in fields:
                    raise UsageError(f"{path}: no column {key!r} ({flag}); columns are {fields}")
            rows = [(r[img_key], r[caption_key]) for r in reader]
        if not rows:
            raise UsageError(f"{path} has no rows")
        base = Path(root) if root else Path(path).parent
        self.items = [(str(base / p), c) for p, c in rows]
        self._require_a_readable_row(path)

    def _require_a_readable_row(self, path: str) -> None:
        """One line before any work when no listed image opens (a wrong --csv-img-key root, a
        moved folder): the loader would otherwise fail in a worker. A clean CSV costs one image."""
        for i in range(len(self.items)):
            try:
                self.load(i)
                return
            except Exception:  # a missing or corrupt image: try the next row
                continue
        raise UsageError(
            f"none of the {len(self.items)} images listed in {path} can be read "
            f"(e.g. {self.items[0][0]}): check --path-data"
        )

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[Image.Image, str]:
        path, caption = self.items[i]
        with Image.open(path) as im:
            return im.convert("RGB"), caption


class SyntheticScenes:
    """Procedural shape scenes with captions (cloob.dataprep.synthetic): real, learnable,
    offline."""

    def __init__(self, n: int, image_size: int, seed: int) -> None:
        self.n, self.image_size, self.seed = n, image_size, seed
        _scenes()  # here, in the main process: a missing extra is one line before any work

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> tuple[Image.Image, str]:
        scenes = _scenes()
        rng = random.Random(derive_seed(self.seed, "synthetic", i))
        scene = scenes.random_scene(rng)
        return scenes.render(scene, rng, self.image_size), scenes.describe(scene, rng)


def _scenes() -> Any:
    """cloob.dataprep.synthetic (the optional extra `cloob-trainer[demo]`)."""
    from cloob.trainer.demo import dataprep_module

    return dataprep_module("synthetic", "--dataset-type synthetic")


class UnreadableData(UsageError):
    """No sample of a map-style source can be read (a bad --csv-img-key root, a wiped folder)."""


class IndexedBatches(Dataset):
    """Map-style dataset whose indices carry the sample and its augmentation seed."""

    def __init__(
        self, source: CsvCaptions | SyntheticScenes, transform: Callable, tokenizer: Callable
    ) -> None:
        self.source, self.transform, self.tokenizer = source, transform, tokenizer

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch: list[tuple[int, int]]) -> dict[str, Any]:
        images, texts, errors = [], [], 0
        n = len(self.source)
        last: Exception | None = None
        for idx, seed in batch:
            for attempt in range(n):  # a broken file is replaced by the next one
                try:
                    image, caption = self.source.load((idx + attempt) % n)
                    break
                except Exception as exn:
                    errors, last = errors + 1, exn
                    log.warning("skipping unreadable sample %d: %s", (idx + attempt) % n, exn)
            else:  # every sample failed: no batch can ever be made
                raise UnreadableData(f"none of the {n} samples could be read (the last: {last})")
            images.append(seeded_transform(self.transform, image, seed))
            texts.append(caption)
        return {"image": torch.stack(images), "text": self.tokenizer(texts), "errors": errors}


def epoch_batches(
    n: int,
    *,
    batch_size: int,
    world_size: int,
    rank: int,
    seed: int,
    epoch: int,
    steps: int,
    start: int,
    training: bool,
    accum_freq: int = 1,
) -> list[list[tuple[int, int]]]:
    """Global micro-batch s is perm[s·B : (s+1)·B] (B = batch·world) and rank r takes its r-th
    slice, so N ranks see exactly the batches one process with batch N·b would see; likewise
    `accum_freq` K consecutive micro-batches hold the samples of one batch of K·B, and a sample's
    augmentation is seeded by its optimizer step s // K, so both runs see the same images."""
    if training:
        g = torch.Generator().manual_seed(derive_seed(seed, epoch, "perm") % (2**63))
        order = torch.randperm(n, generator=g).tolist()
        while len(order) < steps * batch_size * world_size:  # fewer samples than one epoch needs
            order += order
    else:
        order = list(range(n))
    out = []
    global_batch = batch_size * world_size
    for s in range(start, steps):
        chunk = order[
            s * global_batch + rank * batch_size : s * global_batch + (rank + 1) * batch_size
        ]
        if chunk:
            out.append([(i, derive_seed(seed, epoch, "aug", i, s // accum_freq)) for i in chunk])
    return out
