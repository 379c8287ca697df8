"""Building the training loader (a fresh one per epoch, from a Position) and the validation
loader."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch.utils.data import DataLoader

from cloob.common.cli import UsageError
from cloob.trainer import transforms
from cloob.trainer.config import DataConfig
from cloob.trainer.data.mapstyle import CsvCaptions, IndexedBatches, SyntheticScenes, epoch_batches
from cloob.trainer.data.position import Position
from cloob.trainer.data.sources import Source, resolve_source
from cloob.trainer.data.stream import ShardStream
from cloob.trainer.preemption import worker_ignores_stop_signals

log = logging.getLogger("cloob.trainer")


@dataclass
class TrainData:
    """What the loop needs: a fresh loader per epoch and the length of an epoch.

    The loader yields micro-batches of `batch_size` per rank; an optimizer step takes `accum_freq`
    of them, and `Position.batch` counts micro-batches."""

    source: Source
    steps_per_epoch: int  # optimizer steps
    n_workers: int  # logical workers (>= 1) of a webdataset stream
    make_loader: Callable[[Position], DataLoader]
    accum_freq: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accum_freq


@dataclass(frozen=True)
class _Loading:
    """What both kinds of training data need to size an epoch and build its loaders."""

    cfg: DataConfig
    transform: Callable
    tokenizer: Callable
    seed: int
    rank: int
    world_size: int
    accum_freq: int
    pin_memory: bool

    def steps_per_epoch(self, n: int) -> int:
        """Optimizer steps in an epoch of `n` samples; fewer than one is a UsageError."""
        global_batch = self.cfg.batch_size * self.world_size * self.accum_freq
        steps = n // global_batch
        if steps < 1:
            raise UsageError(
                f"{n} samples are fewer than one global batch ({global_batch}); "
                "lower --batch-size" + (" or --accum-freq" if self.accum_freq > 1 else "")
            )
        return steps


def build_train_data(
    cfg: DataConfig,
    *,
    transform: Callable,
    tokenizer: Callable,
    image_size: int,
    seed: int,
    rank: int,
    world_size: int,
    accum_freq: int = 1,
    pin_memory: bool = False,
) -> TrainData:
    source = resolve_source(cfg.train_data, cfg.dataset_type)
    if cfg.decode_on_device:
        transform = _decoding_on_device(transform, source.kind)
    how = _Loading(cfg, transform, tokenizer, seed, rank, world_size, accum_freq, pin_memory)
    if source.kind == "webdataset":
        return _webdataset_data(_without_empty_shards(source), how)
    return _indexed_data(source, how, image_size)


def _without_empty_shards(source: Source) -> Source:
    """A shard that sizes.json says is empty (every download failed) would starve its worker."""
    return replace(
        source,
        shards=[s for s in source.shards if source.sizes.get(s) != 0],
        sizes={s: n for s, n in source.sizes.items() if n},
    )


def _webdataset_data(source: Source, how: _Loading) -> TrainData:
    cfg, world_size = how.cfg, how.world_size
    n = cfg.train_num_samples or source.known_samples
    if n is None:
        raise UsageError(
            "cannot tell how many samples the shards hold: pass --train-num-samples "
            "or put a sizes.json (shard name -> count) next to the shards"
        )
    workers = cfg.workers
    if not cfg.dataset_resampled:
        if len(source.shards) < world_size:
            raise UsageError(
                f"{len(source.shards)} shard(s) cannot be split over {world_size} "
                "ranks: make more shards or use --dataset-resampled"
            )
        per_rank = len(source.shards) // world_size
        if workers > per_rank:
            # Documented fallback: a worker without a shard would starve; use fewer workers.
            log.warning(
                "only %d shard(s) per rank: using %d data workers instead of %d",
                per_rank,
                per_rank,
                workers,
            )
            workers = per_rank
    steps = how.steps_per_epoch(n)
    n_logical = max(1, workers)

    def make_loader(pos: Position) -> DataLoader:
        stream = ShardStream(
            source.shards,
            transform=how.transform,
            tokenizer=how.tokenizer,
            batch_size=cfg.batch_size,
            seed=how.seed,
            epoch=pos.epoch,
            rank=how.rank,
            world_size=world_size,
            n_workers=n_logical,
            resampled=cfg.dataset_resampled,
            shuffle_buffer=cfg.shuffle_buffer,
            start=pos,
            sizes=source.sizes,
        )
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=how.pin_memory,
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
            worker_init_fn=worker_ignores_stop_signals,
        )

    return TrainData(source, steps, n_logical, make_loader, how.accum_freq)


def _indexed_data(source: Source, how: _Loading, image_size: int) -> TrainData:
    """A CSV or the synthetic scenes: a map-style dataset read through `epoch_batches`."""
    cfg = how.cfg
    if source.kind == "csv":
        base: CsvCaptions | SyntheticScenes = CsvCaptions(
            source.csv_file,
            cfg.path_data,
            cfg.csv_separator,
            cfg.csv_img_key,
            cfg.csv_caption_key,
        )
    else:
        base = SyntheticScenes(cfg.train_num_samples or 10_000, image_size, how.seed)
    steps = how.steps_per_epoch(cfg.train_num_samples or len(base))
    dataset = IndexedBatches(base, how.transform, how.tokenizer)

    def make_loader(pos: Position) -> DataLoader:
        batches = epoch_batches(
            len(dataset),
            batch_size=cfg.batch_size,
            world_size=how.world_size,
            rank=how.rank,
            seed=how.seed,
            epoch=pos.epoch,
            steps=steps * how.accum_freq,
            start=pos.batch,
            training=True,
            accum_freq=how.accum_freq,
        )
        return DataLoader(
            dataset,
            sampler=batches,
            batch_size=None,
            num_workers=cfg.workers,
            pin_memory=how.pin_memory,
            worker_init_fn=worker_ignores_stop_signals,
        )

    return TrainData(source, steps, max(1, cfg.workers), make_loader, how.accum_freq)


def _decoding_on_device(transform: Callable, kind: str) -> transforms.Uint8TrainTransform:
    """--decode-on-device needs encoded JPEGs (webdataset) and the plain uint8 recipe."""
    if kind != "webdataset":
        raise UsageError(
            f"--decode-on-device needs webdataset shards: {kind} images reach the "
            "loader already decoded"
        )
    if not isinstance(transform, transforms.Uint8TrainTransform):
        raise UsageError(
            "--decode-on-device needs the plain RandomResizedCrop(bicubic) + Normalize "
            "train recipe; this model's train transform has more, so it keeps the "
            "worker path: drop --decode-on-device"
        )
    return transforms.decoding_on_device(transform)


def build_val_loader(
    cfg: DataConfig,
    *,
    batch_size: int,
    transform: Callable,
    tokenizer: Callable,
    image_size: int,
    seed: int,
) -> DataLoader:
    """One ordered pass over the validation data (rank 0 only)."""
    if cfg.val_data == "synthetic":
        base: CsvCaptions | SyntheticScenes = SyntheticScenes(
            cfg.val_num_samples or 512, image_size, seed + 1
        )
        return _ordered_loader(base, batch_size, transform, tokenizer, cfg.workers)
    source = resolve_source(cfg.val_data, cfg.dataset_type if cfg.dataset_type == "csv" else "auto")
    if source.kind == "webdataset":
        stream = ShardStream(
            source.shards,
            transform=transform,
            tokenizer=tokenizer,
            batch_size=batch_size,
            seed=seed,
            epoch=0,
            training=False,
            n_workers=1,
            max_samples=cfg.val_num_samples,
            sizes=source.sizes,
        )
        return DataLoader(stream, batch_size=None, num_workers=0)
    base = CsvCaptions(
        source.csv_file, cfg.path_data, cfg.csv_separator, cfg.csv_img_key, cfg.csv_caption_key
    )
    if cfg.val_num_samples:
        base.items = base.items[: cfg.val_num_samples]
    return _ordered_loader(base, batch_size, transform, tokenizer, cfg.workers)


def _ordered_loader(
    base: CsvCaptions | SyntheticScenes,
    batch_size: int,
    transform: Callable,
    tokenizer: Callable,
    workers: int,
) -> DataLoader:
    n = len(base)
    batches = [[(i, 0) for i in range(s, min(s + batch_size, n))] for s in range(0, n, batch_size)]
    return DataLoader(
        IndexedBatches(base, transform, tokenizer),
        sampler=batches,
        batch_size=None,
        num_workers=min(workers, 2),
        worker_init_fn=worker_ignores_stop_signals,
    )
