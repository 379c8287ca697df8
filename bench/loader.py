"""Training data loader throughput: our webdataset loader vs OpenCLIP's `get_wds_dataset`.

Both read the same demo shards (20 × 1000 JPEGs at 64 px) and do the same work per sample: read
from the tar, shuffle, decode to RGB, the CLIP train transform (tiny-vit's, from
`open_clip.create_model_and_transforms`, identical objects on both sides) and tokenization, then
batch — with the same batch size and worker count. A fresh loader per run; the first `--warmup`
batches (worker start-up, shuffle-buffer fill) are not timed, then `--batches` are. Sides alternate
(A, B, B, A, ...) and the ratio is taken per round. Shards are cached under $BENCH_CACHE.

    uv run python bench/loader.py [--batch 32] [--workers 2] [--batches 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from argparse import Namespace
from pathlib import Path

import torch
from _common import report
from train_step import demo_shards

from cloob.trainer import data as ours
from cloob.trainer import models
from cloob.trainer.config import DataConfig


def make_ours(a: argparse.Namespace, shards: Path, bundle: models.ModelBundle):
    cfg = DataConfig(train_data=str(shards), batch_size=a.batch, workers=a.workers)
    td = ours.build_train_data(cfg, transform=bundle.preprocess_train, tokenizer=bundle.tokenizer,
                               image_size=64, seed=0, rank=0, world_size=1)
    return td.make_loader(ours.Position())


def make_openclip(a: argparse.Namespace, shards: Path, bundle: models.ModelBundle):
    from open_clip_train.data import get_wds_dataset

    n_shards = len(json.loads((shards / "sizes.json").read_text()))
    args = Namespace(train_data=str(shards / "shards" / f"{{00000..{n_shards - 1:05d}}}.tar"),
                     val_data=None, dataset_resampled=False, train_data_upsampling_factors=None,
                     train_num_samples=(a.warmup + a.batches + 2 * a.workers) * a.batch,
                     val_num_samples=None, batch_size=a.batch, workers=a.workers, world_size=1,
                     seed=0)
    return get_wds_dataset(args, bundle.preprocess_train, is_train=True, epoch=0,
                           tokenizer=bundle.tokenizer).dataloader


def images_per_s(loader, a: argparse.Namespace) -> float:
    it = iter(loader)
    for _ in range(a.warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(a.batches):
        batch = next(it)
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        n += images.shape[0]
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    shards = demo_shards(Path(os.environ.get("BENCH_CACHE", "/tmp/cloob-bench-cache")))
    torch.manual_seed(0)
    bundle = models.create("tiny-vit", init_inv_tau=30, learnable_inv_tau=False,
                           device=torch.device("cpu"))
    makers = {"openclip": make_openclip, "ours": make_ours}
    rates: dict[str, list[float]] = {k: [] for k in makers}
    for r in range(a.rounds):
        for side in (makers if r % 2 == 0 else list(makers)[::-1]):
            rate = images_per_s(makers[side](a, shards, bundle), a)
            rates[side].append(rate)
            print(f"round {r} {side:8s} {rate:7.1f} images/s", flush=True)
    ratios = [o / c for o, c in zip(rates["ours"], rates["openclip"], strict=True)]
    rows = [["openclip (get_wds_dataset)", statistics.median(rates["openclip"]), 1.0],
            ["ours (trainer ShardStream)", statistics.median(rates["ours"]), statistics.median(ratios)]]
    report("loader", f"Train loader on CPU: decode + train transform + tokenize, batch {a.batch}, "
           f"{a.workers} workers, {a.batches} batches (median of {a.rounds} rounds)",
           ["loader", "images/s", "× OpenCLIP"], rows,
           {"rounds": rates, "per_round_ratio": ratios, "settings": vars(a)})


if __name__ == "__main__":
    main()
