"""The uint8 training path equals OpenCLIP's float path to within one uint8 grey level; the trainer
logs its data wait and warns once when data-bound.

The bound: decoding (libjpeg-turbo through torchvision vs through PIL) and the crop box (same RNG
draws) are exact, and ToTensor + Normalize on the device are the same float32 operations in the same
order, so the only difference is the bicubic resample: torchvision's uint8 antialias kernel and
PIL's quantise their weights differently. Measured on the 224-px bench shards (150 crops): 93.9% of
values bit-identical, 6.1% one grey level apart, 2 in a million two levels apart, none more. The
bound tested: every value within 2 / (255 · std_c) (≤ 0.030 for OpenAI's std), at most 1 in 10^4
more than one level apart, and most values bit-identical.
"""

from __future__ import annotations

import io
import json
import logging
import random
import zlib

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from cloob.trainer import data, transforms
from cloob.trainer.data_wait import WARMUP_STEPS, DataWait

SIZE = 64
STD = open_clip.OPENAI_DATASET_STD
LEVEL = torch.tensor(STD).view(3, 1, 1) * 255  # normalised difference × LEVEL = grey levels


def photo(h: int, w: int, rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """Textured (smoothed noise) image: resampling differences show up, unlike on flat colours."""
    a = rng.normal(size=(h // 4 + 1, w // 4 + 1, 3)).cumsum(0).cumsum(1)
    a = (a - a.min()) / (np.ptp(a) + 1e-9) * 255
    im = Image.fromarray(a.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return im.convert(mode)


def encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def recipe():
    preprocess = open_clip.image_transform(
        SIZE, is_train=True, mean=open_clip.OPENAI_DATASET_MEAN, std=STD
    )
    uint8 = transforms.uint8_train_transform(preprocess)
    assert uint8 is not None
    return preprocess, uint8


@pytest.mark.parametrize("hw", [(96, 128), (128, 96), (80, 80), (71, 300), (300, 62), (1, 1)])
def test_crop_box_makes_torchvisions_draws(hw):
    h, w = hw
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    gen = torch.Generator()
    for seed in range(200):
        torch.manual_seed(seed)
        want = T.RandomResizedCrop.get_params(image, [0.9, 1.0], [3 / 4, 4 / 3])
        got = transforms.crop_box(h, w, [0.9, 1.0], [3 / 4, 4 / 3], gen.manual_seed(seed))
        assert got == want, (seed, got, want)


@pytest.mark.parametrize(
    ("fmt", "mode", "hw"),
    [
        ("JPEG", "RGB", (96, 144)),
        ("JPEG", "RGB", (160, 96)),
        ("JPEG", "L", (96, 96)),
        ("JPEG", "CMYK", (100, 90)),
        ("PNG", "RGB", (90, 120)),
        ("PNG", "RGBA", (96, 96)),
        ("PNG", "P", (96, 128)),
    ],
)
def test_uint8_path_equals_openclip_float_path_within_one_grey_level(recipe, fmt, mode, hw):
    preprocess, uint8 = recipe
    rng = np.random.default_rng(zlib.crc32(repr((fmt, mode, hw)).encode()))
    raw = encoded(photo(*hw, rng, mode), fmt)
    ext = "jpg" if fmt == "JPEG" else "png"
    sample = {"__key__": "k", ext: raw, "txt": b"a caption"}
    pil, caption = data.decode_sample(sample)  # the float path's decode (PIL, then RGB)
    (enc, got_ext), caption2 = transforms.encoded_sample(sample)
    assert (got_ext, caption2) == (ext, caption)
    assert torch.equal(transforms.decode((enc, ext)), pil_to_tensor(pil))  # decode: exact
    levels = []
    for seed in range(8):
        old = data.seeded_transform(preprocess, pil, seed)
        crop = data.seeded_transform(uint8, (enc, ext), seed)
        assert crop.dtype == torch.uint8 and crop.shape == (3, SIZE, SIZE)
        new = transforms.to_device(crop[None], torch.device("cpu"), uint8.norm)[0]
        assert new.dtype == torch.float32 and new.shape == old.shape
        levels.append((new - old).abs() * LEVEL)
    diff = torch.stack(levels)
    assert diff.max() <= 2 + 1e-3, diff.max().item()
    assert (diff > 1 + 1e-3).float().mean() <= 1e-4
    assert (
        diff == 0
    ).float().mean() > 0.5  # mostly bit-identical: the same crop, not a similar one


def test_device_normalisation_is_totensor_then_normalize_bitwise(recipe):
    preprocess, uint8 = recipe
    crop = photo(SIZE, SIZE, np.random.default_rng(0))
    want = preprocess.transforms[-1](preprocess.transforms[-2](crop))  # ToTensor, Normalize
    got = transforms.to_device(pil_to_tensor(crop)[None], torch.device("cpu"), uint8.norm)[0]
    assert torch.equal(got, want)
    cl = transforms.to_device(
        pil_to_tensor(crop)[None], torch.device("cpu"), uint8.norm, channels_last=True
    )
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl[0], want)
    floats = torch.rand(2, 3, 4, 4)
    assert (
        transforms.to_device(floats, torch.device("cpu"), None) is floats
    )  # float batches: moved only
    with pytest.raises(ValueError):
        transforms.to_device(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.device("cpu"), None)


def test_seeded_uint8_transform_leaves_global_rng_alone(recipe):
    _, uint8 = recipe
    raw = (encoded(photo(96, 128, np.random.default_rng(1)), "JPEG"), "jpg")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = data.seeded_transform(uint8, raw, 7)
    assert torch.equal(torch.rand(3), before)
    assert torch.equal(data.seeded_transform(uint8, raw, 7), a)  # same seed, same crop
    assert not torch.equal(data.seeded_transform(uint8, raw, 8), a)


def test_other_recipes_keep_the_float_path(recipe):
    preprocess, _ = recipe
    steps = list(preprocess.transforms)
    jitter = T.Compose([*steps[:2], T.ColorJitter(0.4, 0.4, 0.4, 0.1), *steps[2:]])
    assert transforms.uint8_train_transform(jitter) is None
    bilinear = T.Compose([T.RandomResizedCrop(SIZE, scale=(0.9, 1.0)), *steps[1:]])
    assert transforms.uint8_train_transform(bilinear) is None
    val = open_clip.image_transform(SIZE, is_train=False)
    assert transforms.uint8_train_transform(val) is None  # validation/zero-shot stay as they are


def test_corrupt_jpeg_raises_like_pil(recipe):
    _, uint8 = recipe
    raw = encoded(photo(96, 128, np.random.default_rng(2)), "JPEG")
    for bad in (raw[: len(raw) // 2], b"\xff\xd8\xff" + b"x" * 50, b"not an image"):
        with pytest.raises(Exception):  # noqa: B017 - the reader's handler counts any error
            uint8((bad, "jpg"), seed=0)


# ------------------------------------------------------------------- decode on the device


def device_decode_inputs() -> list[tuple[bytes, str]]:
    """Clean RGB and greyscale JPEGs (decoded on the device) mixed with what falls back to the
    worker: CMYK JPEG, PNG, a JPEG with bytes after its end marker."""
    rng = np.random.default_rng(5)
    jpg = [
        encoded(photo(h, w, rng, m), "JPEG")
        for h, w, m in [
            (96, 144, "RGB"),
            (160, 96, "RGB"),
            (80, 80, "RGB"),
            (71, 200, "RGB"),
            (96, 96, "L"),
        ]
    ]
    return [
        (jpg[0], "jpg"),
        (encoded(photo(100, 90, rng, "CMYK"), "JPEG"), "jpg"),
        (jpg[1], "jpg"),
        (encoded(photo(90, 120, rng, "RGB"), "PNG"), "png"),
        (jpg[2], "jpg"),
        (jpg[3] + b"trailing", "jpg"),
        (jpg[4], "jpg"),
    ]


def test_decode_on_device_batch_equals_worker_batch_exactly(recipe):
    """device="cpu" runs the device path's code (batched decode_jpeg, per-image resized_crop) with
    the worker's decoder: the same seeds must give the same uint8 batch, bit for bit."""
    _, uint8 = recipe
    on_device = transforms.decoding_on_device(uint8)
    inputs = device_decode_inputs()
    for base in range(3):
        seeds = [data.derive_seed(base, k) for k in range(len(inputs))]
        worker = transforms.stack(
            [data.seeded_transform(uint8, x, s) for x, s in zip(inputs, seeds, strict=True)]
        )
        items = [data.seeded_transform(on_device, x, s) for x, s in zip(inputs, seeds, strict=True)]
        assert [isinstance(x, transforms.EncodedCrop) for x in items] == [
            True,
            False,
            True,
            False,
            True,
            False,
            True,
        ]  # CMYK, PNG, trailing bytes: worker path
        packed = transforms.stack(items)
        assert isinstance(packed, transforms.EncodedBatch) and len(packed) == len(inputs)
        assert packed.ready.shape[0] == 3
        assert torch.equal(packed.decode(torch.device("cpu")), worker)
        cpu = torch.device("cpu")
        assert torch.equal(
            transforms.to_device(packed, cpu, uint8.norm, channels_last=True),
            transforms.to_device(worker, cpu, uint8.norm),
        )


def test_decode_on_device_header_size_matches_decoder(recipe):
    rng = np.random.default_rng(6)
    for h, w in [(37, 211), (256, 384), (300, 256)]:
        raw = encoded(photo(h, w, rng), "JPEG")
        assert (
            transforms.jpeg_size(raw) == (h, w) == tuple(transforms.decode((raw, "jpg")).shape[1:])
        )
        assert transforms.jpeg_size(raw[: len(raw) // 2]) is None  # truncated: the worker decides
    assert transforms.jpeg_size(b"not an image") is None
    assert transforms.jpeg_size(b"\xff\xd8garbage\xff\xd9") is None


def test_decode_on_device_through_loader_workers(shard_dir, recipe):
    """A real ShardStream with 2 worker processes: packed batches cross the pipe and decode to the
    worker path's batches; the bytes crossing are the JPEGs', not the crops'."""
    from cloob.trainer.config import DataConfig

    _, uint8 = recipe
    tok = open_clip.get_tokenizer("RN50")
    got = {}
    for flag in (False, True):
        cfg = DataConfig(
            train_data=str(shard_dir),
            batch_size=8,
            workers=2,
            shuffle_buffer=16,
            decode_on_device=flag,
        )
        td = data.build_train_data(
            cfg, transform=uint8, tokenizer=tok, image_size=SIZE, seed=0, rank=0, world_size=1
        )
        got[flag] = [b for _, b in zip(range(4), td.make_loader(data.Position()), strict=False)]
    for a, b in zip(got[False], got[True], strict=True):
        assert isinstance(b["image"], transforms.EncodedBatch)
        assert torch.equal(b["image"].decode(torch.device("cpu")), a["image"])
        assert torch.equal(a["text"], b["text"]) and (a["worker"], a["pos"]) == (
            b["worker"],
            b["pos"],
        )


def test_decode_on_device_refuses_other_recipes(shard_dir, recipe):
    """A train transform beyond the plain recipe has no device path: one UsageError, not a silent
    fallback (the CLI prints it as `error: ...`, exit 2; the shard-less case is in the bad-input
    matrix)."""
    from cloob.common.cli import UsageError
    from cloob.trainer.config import DataConfig

    preprocess, _ = recipe
    cfg = DataConfig(train_data=str(shard_dir), batch_size=8, workers=0, decode_on_device=True)
    with pytest.raises(UsageError, match="needs the plain RandomResizedCrop"):
        data.build_train_data(
            cfg,
            transform=preprocess,
            tokenizer=open_clip.get_tokenizer("RN50"),
            image_size=SIZE,
            seed=0,
            rank=0,
            world_size=1,
        )


# ----------------------------------------------------------------------------- data wait


def test_data_wait_warns_once_after_warmup(caplog):
    meter = DataWait()
    caplog.set_level(logging.WARNING, logger="cloob.trainer")
    batches = list(meter.timed(iter(range(WARMUP_STEPS + 5))))
    assert batches == list(range(WARMUP_STEPS + 5)) and meter.steps_since_start == WARMUP_STEPS + 5
    first = meter.window(elapsed=1.0, steps=WARMUP_STEPS + 5, samples_per_step=64, workers=4)
    assert 0 <= first["data_time_fraction"] < 1 and not caplog.records  # warm-up is not judged
    meter.waited = 0.6
    v = meter.window(elapsed=1.0, steps=10, samples_per_step=64, workers=4)
    assert v == pytest.approx({"data_time": 0.06, "batch_time": 0.1, "data_time_fraction": 0.6})
    meter.waited = 0.9
    meter.window(elapsed=1.0, steps=10, samples_per_step=64, workers=4)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    # 640 samples in 1 s, of which 0.6 s waiting: the workers give 640/s, the model takes 1600/s
    assert lines[0].startswith(
        "data-bound: 60% of each step waits for data; 4 workers give ~640 "
        "samples/s (~160 per worker), the model takes ~1,600"
    ), lines[0]
    assert "--workers (about 10 would keep up)" in lines[0]


def test_data_wait_quiet_when_fed_and_rewarms_per_loader(caplog):
    caplog.set_level(logging.WARNING, logger="cloob.trainer")
    meter = DataWait()
    for _ in meter.timed(range(WARMUP_STEPS)):
        pass
    for _ in range(4):
        meter.waited = 0.1  # 10% < 20%: fed
        meter.window(elapsed=1.0, steps=10, samples_per_step=64, workers=4)
    assert meter.judged and not caplog.records
    meter = DataWait()
    for _ in meter.timed(range(3)):  # a new loader (epoch) of only 3 steps: still warming up
        pass
    meter.waited = 0.9
    meter.window(elapsed=1.0, steps=3, samples_per_step=64, workers=0)
    meter.waited = 0.9
    meter.window(elapsed=1.0, steps=3, samples_per_step=64, workers=0)
    assert not caplog.records


def test_trainer_logs_data_time(shard_dir, tmp_path):
    """A real short run: metrics.jsonl and tensorboard get data_time, batch_time,
    data_time_fraction."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
    from cloob.trainer.loop import train

    from .conftest import MICRO

    random.seed(0)
    cfg = TrainConfig(
        data=DataConfig(train_data=str(shard_dir), batch_size=8, workers=0),
        model=ModelConfig(model=MICRO, method="clip"),
        optim=OptimConfig(lr=1e-3, warmup=1, epochs=1, max_steps=4),
        run=RunConfig(
            logs=str(tmp_path),
            name="dt",
            report_to="tensorboard",
            progress=False,
            log_every_n_steps=2,
        ),
    )
    result = train(cfg)
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all(0 <= r["data_time_fraction"] <= 1 for r in train_rows)
    assert all(r["data_time"] <= r["batch_time"] for r in train_rows)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert {"train/data_time_fraction", "train/data_time", "train/batch_time"} <= set(
        events.Tags()["scalars"]
    )
