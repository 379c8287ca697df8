"""Batches from webdataset tar shards for one rank, with exact resume.

Exact resume is designed in rather than bolted on:
- every random choice is seeded from (seed, epoch, rank, worker, ...), including each sample's
  augmentation (its own torch seed), so a sample's tensor does not depend on what came before;
- streams are infinite per worker (cycling over the worker's shards, reshuffled each pass, or
  resampled), so every rank and worker always has a next batch: no DDP hang, no starved worker,
  and DataLoader interleaves workers in strict round robin;
- samples pass through our seeded shuffle buffer (`shuffle.py`);
- each batch carries (logical worker, raw position after it), so a checkpoint records how far each
  worker got; a resumed loader skips those raw samples *without decoding them* and rotates worker
  ids so the round robin continues where it stopped.
An epoch is `num_samples // (batch_size * world_size)` steps.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from cloob.trainer import transforms
from cloob.trainer.data.position import Position
from cloob.trainer.data.remote import use_remote_opener
from cloob.trainer.data.samples import decode_sample, derive_seed, seeded_transform
from cloob.trainer.data.shuffle import shuffled

log = logging.getLogger("cloob.trainer")


class ShardStream(IterableDataset):
    """Batches from tar shards for one rank; see the module docstring for the resume design."""

    def __init__(
        self,
        shards: list[str],
        *,
        transform: Callable,
        tokenizer: Callable,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        n_workers: int = 1,
        resampled: bool = False,
        shuffle_buffer: int = 1000,
        start: Position | None = None,
        training: bool = True,
        max_samples: int | None = None,
        sizes: dict[str, int] | None = None,
    ) -> None:
        self.shards, self.transform, self.tokenizer = shards, transform, tokenizer
        self.sizes = sizes or {}  # shard -> expected samples: a shard that ends early is counted
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self.rank, self.world_size, self.n_workers = rank, world_size, n_workers
        self.resampled, self.shuffle_buffer, self.training = resampled, shuffle_buffer, training
        self.max_samples = max_samples
        start = start or Position(epoch=epoch)
        self.rotation = start.next_worker
        self.start_pos = start.worker_pos if len(start.worker_pos) == n_workers else [0] * n_workers

    def _worker_shards(self, w: int) -> list[str]:
        if not self.training:
            return self.shards[w :: self.n_workers]
        order = list(self.shards)
        random.Random(derive_seed(self.seed, self.epoch, "shards")).shuffle(order)
        return order[self.rank :: self.world_size][w :: self.n_workers]

    def _samples(self, w: int, skips: _Skips) -> Iterator[dict[str, Any]]:
        """Raw samples of worker `w`'s shards, pass after pass; ends after a pass without any.

        Passes are counted here, where the tars are read: downstream, the shuffle buffer reads
        ahead (100 samples before its first sample), so a worker whose shards hold fewer samples
        than that used to look as if a whole pass had given nothing, and stopped."""
        if self.training and self.resampled:
            rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, w, "resample"))
            while True:
                yield from self._shard_samples(rng.choice(self.shards), skips)
        mine = self._worker_shards(w)
        for p in range(1_000_000 if self.training else 1):
            if (
                p
            ):  # later passes over the same shards (the epoch is counted in steps) reshuffle them
                random.Random(derive_seed(self.seed, self.epoch, self.rank, w, "pass", p)).shuffle(
                    mine
                )
            read = 0
            for url in mine:
                for sample in self._shard_samples(url, skips):
                    read += 1
                    yield sample
            if not read:
                return  # a whole pass gave no sample: __iter__ reports it

    def _shard_samples(self, url: str, skips: _Skips) -> Iterator[dict[str, Any]]:
        """One shard's samples; fewer than sizes.json promises (a tar cut on a 512-byte block
        boundary reads as a clean end) are warned about and counted as skipped."""
        use_remote_opener(url)
        errors_before, n = skips.count, 0
        for sample in wds.tarfile_to_samples(handler=skips.handler)([{"url": url}]):
            n += 1
            yield sample
        missing = self.sizes.get(url, 0) - n - (skips.count - errors_before)
        if missing > 0:
            skips.count += missing
            if url not in skips.short_shards:
                skips.short_shards.add(url)
                log.warning(
                    "shard %s ended after %d of %d samples (truncated?): %d skipped",
                    url,
                    n,
                    self.sizes[url],
                    self.sizes[url] - n,
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        w = (physical + self.rotation) % self.n_workers
        skips = _Skips()
        handler = skips.handler
        stream: Iterator[dict[str, Any]] = self._samples(w, skips)
        if self.training:
            rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, w, "samples"))
            stream = shuffled(stream, self.shuffle_buffer, min(self.shuffle_buffer, 100), rng)
        pos, reported = 0, 0
        images: list[torch.Tensor] = []
        texts: list[str] = []
        last_yield_pos = self.start_pos[w]  # a resumed worker counts from where it resumed
        for sample in stream:
            pos += 1
            if pos <= self.start_pos[w]:
                continue  # already trained on before the resume: skip without decoding
            if self.max_samples is not None and pos > self.max_samples:
                break
            try:
                # a transform that decodes itself (transforms.Uint8TrainTransform) takes the
                # encoded image; the PIL decode stays for the float path
                image, caption = (
                    transforms.encoded_sample(sample)
                    if getattr(self.transform, "takes_bytes", False)
                    else decode_sample(sample)
                )
                images.append(
                    seeded_transform(
                        self.transform, image, derive_seed(self.seed, self.epoch, self.rank, w, pos)
                    )
                )
                texts.append(caption)
            except Exception as exn:  # corrupt image bytes, missing caption, ...
                handler(exn)
            if len(images) == self.batch_size:
                yield self._batch(images, texts, w, pos, skips.count - reported)
                reported, images, texts, last_yield_pos = skips.count, [], [], pos
            elif (
                self.training and pos - last_yield_pos > 100 * self.batch_size + self.shuffle_buffer
            ):
                # the shards went bad after the start-up check: stop rather than loop over them
                raise RuntimeError(
                    f"worker {w} read {pos - last_yield_pos} samples without a "
                    "batch's worth of usable ones: are the shards corrupt?"
                )
        if images and not self.training:
            yield self._batch(images, texts, w, pos, skips.count - reported)
        elif self.training:
            raise RuntimeError(
                f"no readable samples in the shards of worker {w} (rank {self.rank})"
            )

    def _batch(
        self, images: list[torch.Tensor], texts: list[str], w: int, pos: int, errors: int
    ) -> dict[str, Any]:
        return {
            "image": transforms.stack(images),
            "text": self.tokenizer(texts),
            "worker": w,
            "pos": pos,
            "errors": errors,
        }


@dataclass
class _Skips:
    """Samples a worker could not use so far, and the short shards it has warned about."""

    count: int = 0
    short_shards: set[str] = field(default_factory=set)

    def handler(self, exn: Exception) -> bool:
        self.count += 1
        log.warning("skipping unreadable shard data: %s", " ".join(str(exn).split())[:300])
        return True
