"""Training data loader throughput at 224 px: ours (uint8 and float paths) vs OpenCLIP's
`get_wds_dataset`.

All sides read the same img2dataset-like shards (`photo_shards`: JPEG q95, 256 px short side, mixed
aspect ratios, photograph-like content), with OpenCLIP's RN50 train recipe (RandomResizedCrop 224,
scale 0.9-1, bicubic, OpenAI mean/std) and tokenizer, the same batch size and workers:

- `openclip`:   `open_clip_train.data.get_wds_dataset` with its own transform (float32 from the
  workers);
- `ours-float`: the trainer's ShardStream with that same transform object (the path before
  the uint8 transform);
- `ours-uint8`: the trainer's ShardStream with `transforms.Uint8TrainTransform` (uint8 from the
  workers; float conversion and normalisation on the device, not counted here);
- `ours-device`: the same with `--decode-on-device` (workers ship JPEG bytes + crop boxes; the
  device decodes, crops and resizes: not counted here, and with no GPU here unmeasured; the
  main-process CPU cost of that decode is reported separately as "device path on CPU").

A fresh loader per run; the first `--warmup` batches (worker start, shuffle-buffer fill) are not
timed. Sides alternate, the order rotating every round, and ratios are taken per round. Reported:
samples/s per worker, bytes per sample crossing from the workers (every tensor of a batch), and a
single-core breakdown of each path's stages (read, decode, augment, to-tensor, tokenize, collate).

    uv run python -m bench.compare.loader [--batch 32] [--workers 2] [--batches 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from argparse import Namespace
from pathlib import Path

import torch

from bench._common import markdown_table, report
from bench.tools.photo_shards import photo_shards
from cloob.trainer import data as ours
from cloob.trainer import transforms
from cloob.trainer.config import DataConfig

SIDES = ("openclip", "ours-float", "ours-uint8", "ours-device")
SIZE = 224


def recipe():
    """OpenCLIP's RN50 (QuickGELU) train transform and tokenizer, without building the model."""
    import open_clip

    preprocess = open_clip.image_transform(
        SIZE, is_train=True, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
    )
    return preprocess, open_clip.get_tokenizer("RN50-quickgelu")


def make_ours(a: argparse.Namespace, shards: Path, transform, tokenizer):
    cfg = DataConfig(train_data=str(shards), batch_size=a.batch, workers=a.workers)
    td = ours.build_train_data(
        cfg, transform=transform, tokenizer=tokenizer, image_size=SIZE, seed=0, rank=0, world_size=1
    )
    return td.make_loader(ours.Position())


def make_openclip(a: argparse.Namespace, shards: Path, transform, tokenizer):
    from open_clip_train.data import get_wds_dataset

    n_shards = len(json.loads((shards / "sizes.json").read_text()))
    args = Namespace(
        train_data=str(shards / "shards" / f"{{00000..{n_shards - 1:05d}}}.tar"),
        val_data=None,
        dataset_resampled=False,
        train_data_upsampling_factors=None,
        train_num_samples=(a.warmup + a.batches + 2 * a.workers) * a.batch,
        val_num_samples=None,
        batch_size=a.batch,
        workers=a.workers,
        world_size=1,
        seed=0,
    )
    return get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer).dataloader


def run(loader, a: argparse.Namespace) -> tuple[float, float, float]:
    """(samples/s per worker after warm-up, samples per CPU-second of the workers, bytes per
    sample of the batches' tensors). The CPU-time rate is what a worker with a core to itself
    does: on this shared machine wall time also counts other people's processes."""
    it = iter(loader)
    for _ in range(a.warmup):
        next(it)
    n = nbytes = 0
    cpu0, t0 = _children_cpu(), time.perf_counter()
    for _ in range(a.batches):
        batch = next(it)
        tensors: list[torch.Tensor] = []
        for v in batch.values() if isinstance(batch, dict) else batch:
            if isinstance(v, transforms.EncodedBatch):  # --decode-on-device: JPEG bytes + boxes
                tensors += v.tensors()
            elif isinstance(v, torch.Tensor):
                tensors.append(v)
        n += len(batch["text"]) if isinstance(batch, dict) else tensors[0].shape[0]
        nbytes += sum(t.nbytes for t in tensors)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    del it
    return n / wall / max(a.workers, 1), n / cpu, nbytes / n


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's live child processes (the
    DataLoader workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def stages(shards: Path, preprocess, tokenizer, uint8, n: int = 256, batch: int = 32) -> dict:
    """CPU ms per sample of each stage, one thread, in this process (median of 3 passes over n
    samples; process time, so other people's processes on the machine do not count)."""
    import webdataset as wds

    url = str(sorted((shards / "shards").glob("*.tar"))[0])
    crop, _convert, to_tensor, normalize = preprocess.transforms
    on_device = transforms.decoding_on_device(uint8)
    passes = []
    for _ in range(3):
        t: dict[str, float] = {}
        t0 = time.process_time()
        raw = [s for _, s in zip(range(n), wds.tarfile_to_samples()([{"url": url}]), strict=False)]
        t["read"] = time.process_time() - t0

        def timed(name, fn, items, t=t):
            t0 = time.process_time()
            out = [fn(x) for x in items]
            t[name] = time.process_time() - t0
            return out

        pil = timed("decode PIL", lambda s: _pil(s["jpg"]).convert("RGB"), raw)
        tv = timed("decode torchvision", lambda s: transforms.decode((s["jpg"], "jpg")), raw)
        crops = timed("crop+resize PIL", crop, pil)
        timed("crop+resize torchvision uint8", uint8_crop(uint8), tv)
        device_items = timed(
            "device path: worker (JPEG header + box)",
            lambda s: ours.seeded_transform(on_device, (s["jpg"], "jpg"), 0),
            raw,
        )
        t0 = time.process_time()
        for i in range(0, n, batch):
            transforms.to_device(
                transforms.stack(device_items[i : i + batch]), torch.device("cpu"), uint8.norm
            )
        t["device path on CPU: collate + decode + crop + normalise"] = time.process_time() - t0
        floats = timed("ToTensor+Normalize", lambda c: normalize(to_tensor(c)), crops)
        u8 = timed("PIL→uint8 tensor", transforms._pil_rgb, crops)
        captions = [s["txt"].decode() for s in raw]
        t0 = time.process_time()
        for i in range(0, n, batch):
            tokenizer(captions[i : i + batch])
        t["tokenize"] = time.process_time() - t0
        for name, items in (("collate float32", floats), ("collate uint8", u8)):
            t0 = time.process_time()
            for i in range(0, n, batch):
                torch.stack(items[i : i + batch])
            t[name] = time.process_time() - t0
        passes.append(t)
    return {k: 1e3 * statistics.median(p[k] for p in passes) / n for k in passes[0]}


def _pil(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def uint8_crop(uint8: transforms.Uint8TrainTransform):
    def crop(pixels: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        i, j, h, w = RandomResizedCrop.get_params(pixels, uint8.scale, uint8.ratio)
        return F.resized_crop(
            pixels, i, j, h, w, uint8.size, interpolation=InterpolationMode.BICUBIC, antialias=True
        )

    return crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args()
    torch.set_num_threads(1)  # one core per worker, and the main process only collects
    shards = photo_shards(Path(os.environ.get("BENCH_CACHE", "/tmp/cloob-bench-cache")))
    preprocess, tokenizer = recipe()
    uint8 = transforms.uint8_train_transform(preprocess)
    assert uint8 is not None
    transform = {
        "openclip": preprocess,
        "ours-float": preprocess,
        "ours-uint8": uint8,
        "ours-device": transforms.decoding_on_device(uint8),
    }
    rates: dict[str, list[float]] = {k: [] for k in SIDES}
    cpu_rates: dict[str, list[float]] = {k: [] for k in SIDES}
    bytes_per: dict[str, float] = {}
    for r in range(a.rounds):
        order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
        for side in order if r % 2 == 0 else order[::-1]:
            maker = make_openclip if side == "openclip" else make_ours
            rate, cpu_rate, bytes_per[side] = run(maker(a, shards, transform[side], tokenizer), a)
            rates[side].append(rate)
            cpu_rates[side].append(cpu_rate)
            print(
                f"round {r} {side:10s} {rate:7.1f} samples/s per worker (wall), "
                f"{cpu_rate:7.1f} per worker CPU-second",
                flush=True,
            )

    def ratio(table: dict[str, list[float]], s: str) -> float:
        return statistics.median(x / o for x, o in zip(table[s], table["openclip"], strict=True))

    rows = [
        [
            s,
            statistics.median(cpu_rates[s]),
            ratio(cpu_rates, s),
            statistics.median(rates[s]),
            ratio(rates, s),
            round(bytes_per[s]),
            bytes_per["openclip"] / bytes_per[s],
        ]
        for s in SIDES
    ]
    columns = [
        "loader",
        "samples per worker CPU-s",
        "× OpenCLIP",
        "samples/s per worker (wall)",
        "× OpenCLIP (wall)",
        "bytes/sample",
        "× fewer bytes",
    ]
    stage_ms = stages(shards, preprocess, tokenizer, uint8)
    stage_rows = [[k, v] for k, v in stage_ms.items()]
    report(
        "loader",
        f"Train loader at {SIZE} px on img2dataset-like shards: batch {a.batch}, "
        f"{a.workers} workers, {a.batches} batches (median of {a.rounds} rounds)",
        columns,
        rows,
        {
            "rounds_wall": rates,
            "rounds_cpu": cpu_rates,
            "bytes_per_sample": bytes_per,
            "stage_ms_per_sample": stage_ms,
            "settings": vars(a),
            "shards": str(shards),
        },
    )
    print(markdown_table(columns, rows))
    print(markdown_table(["stage (one core)", "ms/sample"], stage_rows))


if __name__ == "__main__":
    main()
