"""Training data: webdataset shards, the reference's CSV format, and procedural synthetic scenes.

Exact resume is designed in rather than bolted on:
- every random choice is seeded from (seed, epoch, rank, worker, ...), including each sample's
  augmentation (its own torch seed), so a sample's tensor does not depend on what came before;
- webdataset streams are infinite per worker (cycling over the worker's shards, reshuffled each
  pass, or resampled), so every rank and worker always has a next batch: no DDP hang, no starved
  worker, and DataLoader interleaves workers in strict round robin;
- each batch carries (logical worker, raw position after it), so a checkpoint records how far each
  worker got; a resumed loader skips those raw samples *without decoding them* and rotates worker
  ids so the round robin continues where it stopped.
An epoch is `num_samples // (batch_size * world_size)` steps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from webdataset.gopen import gopen_schemes

from cloob.common import storage
from cloob.common.checkpoint import DataPosition
from cloob.common.cli import UsageError
from cloob.common.shard_layout import IMAGE_EXTS, SIZES, shard_files, shard_folder
from cloob.trainer import transforms
from cloob.trainer.config import DataConfig

log = logging.getLogger("cloob.trainer")

# webdataset opens s3:// shards through our fsspec client: streamed, never copied to disk, with
# the credentials everything else uses (its `pipe:aws s3 cp` route would need the aws CLI, and
# hides a failed download as a short shard). Registered on import, so in DataLoader workers too.
for _scheme in storage.REMOTE_SCHEMES:
    gopen_schemes.setdefault(_scheme, storage.open_stream)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple: stable across processes (unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_transform(transform: Callable, image: Image.Image, seed: int) -> torch.Tensor:
    """Apply a torchvision transform with its own torch seed, leaving the caller's RNG untouched.

    Only the CPU generator (the one torchvision's random transforms draw from) is seeded and
    restored: `torch.manual_seed` would also queue a lazy seed for every accelerator backend,
    formatting a stack trace each time (a third of the loader's per-sample cost), and leave those
    device generators reseeded."""
    if getattr(transform, "takes_seed", False):  # [i24 hook] draws from its own generator
        return transform(image, seed=seed)
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        return transform(image)
    finally:
        gen.set_state(state)


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    kind: str  # webdataset | csv | synthetic
    shards: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # shard path -> samples, when known
    csv_path: str | None = None

    @property
    def known_samples(self) -> int | None:
        if self.kind == "webdataset" and self.sizes and len(self.sizes) == len(self.shards):
            return sum(self.sizes.values())
        return None


def read_sizes(path: Path | storage.RemotePath) -> dict[str, int]:
    """A sizes.json (shard name -> sample count); anything else is a UsageError."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(table, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in table.values()):
        raise UsageError(f"{path} must map shard names to sample counts (integers >= 0)")
    return table


def _sizes_next_to(paths: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for folder in sorted({os.path.dirname(p) or "." for p in paths}):
        f = storage.location(folder) / SIZES
        if f.is_file():
            for name, n in read_sizes(f).items():
                sizes[_join(folder, name)] = n
    return {p: sizes[p] for p in paths if p in sizes}


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if storage.is_remote(folder) else str(Path(folder) / name)


def _missing(shards: list[str]) -> list[str]:
    """The shards that do not exist (one listing per remote folder)."""
    listed: dict[str, set[str]] = {}
    missing = []
    for s in shards:
        if s.startswith("pipe:") or ("://" in s and not storage.is_remote(s)):
            continue  # opened by webdataset itself
        if not storage.is_remote(s):
            if not os.path.exists(s):
                missing.append(s)
            continue
        folder, name = s.rsplit("/", 1)
        if folder not in listed:
            listed[folder] = {p.name for p in storage.location(folder).iterdir()}
        if name not in listed[folder]:
            missing.append(s)
    return missing


def _is_dir(part: str) -> bool:
    if storage.is_remote(part):
        storage.check_access(part)  # a missing bucket or refused key: one line, before any work
        return storage.location(part).is_dir()
    return os.path.isdir(part)


def _dataprep_dir(d: Path | storage.RemotePath) -> tuple[list[str], dict[str, int]]:
    sizes_file = d / SIZES
    if not sizes_file.is_file():
        tars = [str(p) for p in shard_files(d)]
        if not tars:
            raise UsageError(f"{d} holds no sizes.json and no .tar shards")
        return tars, _sizes_next_to(tars)
    table = read_sizes(sizes_file)
    shard_dir = shard_folder(d)
    shards = [str(shard_dir / name) for name in sorted(table)]
    missing = _missing(shards)
    if missing:
        raise UsageError(f"{sizes_file} lists {len(missing)} shard(s) that do not exist, e.g. {missing[0]}")
    return shards, {str(shard_dir / n): int(c) for n, c in table.items()}


def resolve_source(spec: str | None, dataset_type: str) -> Source:
    """Parse `--train-data`/`--val-data`; raises UsageError for anything unusable."""
    if dataset_type == "synthetic":
        return Source("synthetic")
    if not spec:
        raise UsageError("no --train-data given: pass a dataprep output folder, shards like "
                         "'data/{00000..00009}.tar', a CSV, or --dataset-type synthetic")
    parts = [p for p in spec.split("::") if p]
    if dataset_type == "csv" or (dataset_type == "auto" and len(parts) == 1
                                 and parts[0].endswith((".csv", ".tsv"))):
        if len(parts) != 1:
            raise UsageError("csv data takes a single file")
        if not os.path.isfile(parts[0]):
            raise UsageError(f"csv file {parts[0]} not found")
        return Source("csv", csv_path=parts[0])
    shards: list[str] = []
    sizes: dict[str, int] = {}
    for part in parts:
        if _is_dir(part):
            s, z = _dataprep_dir(storage.location(part))
        else:
            s = list(braceexpand.braceexpand(part))
            missing = _missing(s)
            if missing:
                raise UsageError(f"data path {missing[0]} not found"
                                 + (f" ({len(missing)} of {len(s)} shards missing)" if len(s) > 1 else ""))
            z = _sizes_next_to(s)
        shards += s
        sizes.update(z)
    if not shards:
        raise UsageError(f"--train-data {spec!r} expands to an empty shard list")
    _require_a_sample(shards)
    return Source("webdataset", shards, sizes)


def _require_a_sample(shards: list[str]) -> None:
    """Fail with one line, before any work, when no local shard holds a single usable sample:
    the workers would otherwise stop with a traceback. A clean dataset costs one sample."""
    local = [s for s in shards if "://" not in s and not s.startswith("pipe:")]
    if len(local) < len(shards):
        return  # remote shards are only opened by the workers

    def ignore(exn: Exception) -> bool:
        return True

    for sample in wds.tarfile_to_samples(handler=ignore)({"url": s} for s in local):
        try:
            decode_sample(sample)
            return
        except Exception:  # corrupt bytes: try the next sample
            continue
    raise UsageError(f"no readable sample in {len(local)} shard(s) (e.g. {local[0]}): "
                     "are they webdataset tars with images and .txt captions?")


# ----------------------------------------------------------------------------- decoding


def decode_sample(sample: dict[str, Any]) -> tuple[Image.Image, str]:
    """webdataset sample (raw bytes per extension) → (RGB image, caption)."""
    image_key = next((k for k in IMAGE_EXTS if k in sample), None)
    if image_key is None or "txt" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} lacks an image or a caption")
    image = Image.open(io.BytesIO(sample[image_key]))
    image.load()
    return image.convert("RGB"), sample["txt"].decode("utf-8")


@dataclass
class Position:
    """Where a training epoch stands: enough to continue it exactly."""

    epoch: int = 0
    batch: int = 0  # batches consumed in this epoch (per rank)
    worker_pos: list[int] = field(default_factory=list)  # raw samples consumed, per logical worker
    next_worker: int = 0  # logical worker that delivers the next batch
    skipped: int = 0  # corrupt samples/shards skipped so far (this rank)

    def advance(self, batch: dict[str, Any], n_workers: int) -> None:
        self.batch += 1
        self.skipped += int(batch["errors"])
        if "worker" in batch:
            w = int(batch["worker"])
            if len(self.worker_pos) != n_workers:
                self.worker_pos = [0] * n_workers
            self.worker_pos[w] = int(batch["pos"])
            self.next_worker = (w + 1) % n_workers

    def state_dict(self) -> DataPosition:
        return {"epoch": self.epoch, "batch": self.batch, "worker_pos": list(self.worker_pos),
                "next_worker": self.next_worker, "skipped": self.skipped}

    @classmethod
    def from_state(cls, d: DataPosition) -> Position:
        return cls(int(d["epoch"]), int(d["batch"]), [int(x) for x in d["worker_pos"]],
                   int(d["next_worker"]), int(d["skipped"]))


class ShardStream(IterableDataset):
    """Batches from tar shards for one rank; see the module docstring for the resume design."""

    def __init__(self, shards: list[str], *, transform: Callable, tokenizer: Callable,
                 batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 n_workers: int = 1, resampled: bool = False, shuffle_buffer: int = 1000,
                 start: Position | None = None, training: bool = True,
                 max_samples: int | None = None, sizes: dict[str, int] | None = None) -> None:
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
            return self.shards[w::self.n_workers]
        order = list(self.shards)
        random.Random(derive_seed(self.seed, self.epoch, "shards")).shuffle(order)
        return order[self.rank::self.world_size][w::self.n_workers]

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
            if p:  # later passes over the same shards (the epoch is counted in steps) reshuffle them
                random.Random(derive_seed(self.seed, self.epoch, self.rank, w, "pass", p)).shuffle(mine)
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
        errors_before, n = skips.count, 0
        for sample in wds.tarfile_to_samples(handler=skips.handler)([{"url": url}]):
            n += 1
            yield sample
        missing = self.sizes.get(url, 0) - n - (skips.count - errors_before)
        if missing > 0:
            skips.count += missing
            if url not in skips.short_shards:
                skips.short_shards.add(url)
                log.warning("shard %s ended after %d of %d samples (truncated?): %d skipped",
                            url, n, self.sizes[url], self.sizes[url] - n)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        w = (physical + self.rotation) % self.n_workers
        skips = _Skips()
        handler = skips.handler
        stream: Iterator[dict[str, Any]] = self._samples(w, skips)
        if self.training:
            rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, w, "samples"))
            stream = wds.filters._shuffle(stream, self.shuffle_buffer, min(self.shuffle_buffer, 100), rng)
        pos, reported = 0, 0
        images: list[torch.Tensor] = []
        texts: list[str] = []
        last_yield_pos = 0
        for sample in stream:
            pos += 1
            if pos <= self.start_pos[w]:
                continue  # already trained on before the resume: skip without decoding
            if self.max_samples is not None and pos > self.max_samples:
                break
            try:
                # [i24 hook] a transform that decodes itself (transforms.Uint8TrainTransform)
                # takes the encoded image; the PIL decode stays for the float path
                image, caption = (transforms.encoded_sample(sample)
                                  if getattr(self.transform, "takes_bytes", False)
                                  else decode_sample(sample))
                images.append(seeded_transform(
                    self.transform, image, derive_seed(self.seed, self.epoch, self.rank, w, pos)))
                texts.append(caption)
            except Exception as exn:  # corrupt image bytes, missing caption, ...
                handler(exn)
                continue
            if len(images) == self.batch_size:
                yield self._batch(images, texts, w, pos, skips.count - reported)
                reported, images, texts, last_yield_pos = skips.count, [], [], pos
            if self.training and pos - last_yield_pos > 100 * self.batch_size + self.shuffle_buffer:
                raise RuntimeError(f"worker {w} read {pos - last_yield_pos} samples without a usable "
                                   "one: are the shards corrupt?")
        if images and not self.training:
            yield self._batch(images, texts, w, pos, skips.count - reported)
        elif self.training:
            raise RuntimeError(f"no readable samples in the shards of worker {w} (rank {self.rank})")

    def _batch(self, images: list[torch.Tensor], texts: list[str], w: int, pos: int,
               errors: int) -> dict[str, Any]:
        return {"image": torch.stack(images), "text": self.tokenizer(texts), "worker": w,
                "pos": pos, "errors": errors}


@dataclass
class _Skips:
    """Samples a worker could not use so far, and the short shards it has warned about."""

    count: int = 0
    short_shards: set[str] = field(default_factory=set)

    def handler(self, exn: Exception) -> bool:
        self.count += 1
        log.warning("skipping unreadable shard data: %s", " ".join(str(exn).split())[:300])
        return True


# ----------------------------------------------------------------------------- map-style sources


class CsvCaptions:
    """The reference's CSV: a header row, an image-path column and a caption column."""

    def __init__(self, path: str, root: str | None, sep: str, img_key: str, caption_key: str) -> None:
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

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[Image.Image, str]:
        path, caption = self.items[i]
        with Image.open(path) as im:
            return im.convert("RGB"), caption


class SyntheticScenes:
    """Procedural shape scenes with captions (cloob.dataprep.synthetic): real, learnable, offline."""

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


class IndexedBatches(Dataset):
    """Map-style dataset whose indices carry the sample and its augmentation seed."""

    def __init__(self, source: CsvCaptions | SyntheticScenes, transform: Callable,
                 tokenizer: Callable) -> None:
        self.source, self.transform, self.tokenizer = source, transform, tokenizer

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch: list[tuple[int, int]]) -> dict[str, Any]:
        images, texts, errors = [], [], 0
        for idx, seed in batch:
            for attempt in range(len(self.source)):  # a broken file is replaced by the next one
                try:
                    image, caption = self.source.load((idx + attempt) % len(self.source))
                    break
                except Exception as exn:
                    errors += 1
                    log.warning("skipping unreadable sample %d: %s", idx + attempt, exn)
            images.append(seeded_transform(self.transform, image, seed))
            texts.append(caption)
        return {"image": torch.stack(images), "text": self.tokenizer(texts), "errors": errors}


def _epoch_batches(n: int, *, batch_size: int, world_size: int, rank: int, seed: int, epoch: int,
                   steps: int, start: int, training: bool,
                   accum_freq: int = 1) -> list[list[tuple[int, int]]]:
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
        chunk = order[s * global_batch + rank * batch_size: s * global_batch + (rank + 1) * batch_size]
        if chunk:
            out.append([(i, derive_seed(seed, epoch, "aug", i, s // accum_freq)) for i in chunk])
    return out


# ----------------------------------------------------------------------------- loaders


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


def build_train_data(cfg: DataConfig, *, transform: Callable, tokenizer: Callable,
                     image_size: int, seed: int, rank: int, world_size: int,
                     accum_freq: int = 1, pin_memory: bool = False) -> TrainData:
    source = resolve_source(cfg.train_data, cfg.dataset_type)
    global_batch = cfg.batch_size * world_size * accum_freq  # samples per optimizer step
    workers = cfg.workers
    if source.kind == "webdataset":
        # A shard that sizes.json says is empty (every download failed) would starve its worker.
        source.shards = [s for s in source.shards if source.sizes.get(s) != 0]
        source.sizes = {s: n for s, n in source.sizes.items() if n}
        n = cfg.train_num_samples or source.known_samples
        if n is None:
            raise UsageError("cannot tell how many samples the shards hold: pass --train-num-samples "
                             "or put a sizes.json (shard name -> count) next to the shards")
        if not cfg.dataset_resampled:
            if len(source.shards) < world_size:
                raise UsageError(f"{len(source.shards)} shard(s) cannot be split over {world_size} "
                                 "ranks: make more shards or use --dataset-resampled")
            per_rank = len(source.shards) // world_size
            if workers > per_rank:
                # Documented fallback: a worker without a shard would starve; use fewer workers.
                log.warning("only %d shard(s) per rank: using %d data workers instead of %d",
                            per_rank, per_rank, workers)
                workers = per_rank
    else:
        if source.kind == "csv":
            base: CsvCaptions | SyntheticScenes = CsvCaptions(
                source.csv_path, cfg.path_data, cfg.csv_separator, cfg.csv_img_key, cfg.csv_caption_key)
        else:
            base = SyntheticScenes(cfg.train_num_samples or 10_000, image_size, seed)
        n = cfg.train_num_samples or len(base)
        dataset = IndexedBatches(base, transform, tokenizer)
    steps = n // global_batch
    if steps < 1:
        raise UsageError(f"{n} samples are fewer than one global batch ({global_batch}); "
                         "lower --batch-size" + (" or --accum-freq" if accum_freq > 1 else ""))
    n_logical = max(1, workers)

    def make_loader(pos: Position) -> DataLoader:
        if source.kind == "webdataset":
            stream = ShardStream(source.shards, transform=transform, tokenizer=tokenizer,
                                 batch_size=cfg.batch_size, seed=seed, epoch=pos.epoch, rank=rank,
                                 world_size=world_size, n_workers=n_logical,
                                 resampled=cfg.dataset_resampled, shuffle_buffer=cfg.shuffle_buffer,
                                 start=pos, sizes=source.sizes)
            return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,  # [i24 hook]
                              persistent_workers=False, prefetch_factor=2 if workers else None)
        batches = _epoch_batches(len(dataset), batch_size=cfg.batch_size, world_size=world_size,
                                 rank=rank, seed=seed, epoch=pos.epoch, steps=steps * accum_freq,
                                 start=pos.batch, training=True, accum_freq=accum_freq)
        return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers,
                          pin_memory=pin_memory)  # [i24 hook]

    return TrainData(source, steps, n_logical, make_loader, accum_freq)


def build_val_loader(cfg: DataConfig, *, batch_size: int, transform: Callable,
                     tokenizer: Callable, image_size: int, seed: int) -> DataLoader:
    """One ordered pass over the validation data (rank 0 only)."""
    if cfg.val_data == "synthetic":
        base: CsvCaptions | SyntheticScenes = SyntheticScenes(cfg.val_num_samples or 512, image_size,
                                                              seed + 1)
        return _ordered_loader(base, batch_size, transform, tokenizer, cfg.workers)
    source = resolve_source(cfg.val_data, cfg.dataset_type if cfg.dataset_type == "csv" else "auto")
    if source.kind == "webdataset":
        stream = ShardStream(source.shards, transform=transform, tokenizer=tokenizer,
                             batch_size=batch_size, seed=seed, epoch=0, training=False,
                             n_workers=1, max_samples=cfg.val_num_samples, sizes=source.sizes)
        return DataLoader(stream, batch_size=None, num_workers=0)
    base = CsvCaptions(source.csv_path, cfg.path_data, cfg.csv_separator, cfg.csv_img_key,
                       cfg.csv_caption_key)
    if cfg.val_num_samples:
        base.items = base.items[:cfg.val_num_samples]
    return _ordered_loader(base, batch_size, transform, tokenizer, cfg.workers)


def _ordered_loader(base: CsvCaptions | SyntheticScenes, batch_size: int, transform: Callable,
                    tokenizer: Callable, workers: int) -> DataLoader:
    n = len(base)
    batches = [[(i, 0) for i in range(s, min(s + batch_size, n))] for s in range(0, n, batch_size)]
    return DataLoader(IndexedBatches(base, transform, tokenizer), sampler=batches, batch_size=None,
                      num_workers=min(workers, 2))
