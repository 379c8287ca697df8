"""Any dataset with at least one global batch trains with any --workers and shard layout, and
resumes exactly; a shard that ends before its sizes.json count is warned about and counted."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from cloob.trainer import data, models
from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from cloob.trainer.loop import train
from support.shards import read_member, write_shards

from .conftest import MICRO


def shards(root: Path, counts: tuple[int, ...]) -> Path:
    """A dataprep-style folder whose shard i holds counts[i] samples (0: an empty tar)."""
    write_shards(root, len(counts), max(counts), size=32)
    for i, n in enumerate(counts):
        if n < max(counts):
            tar = root / "shards" / f"{i:05d}.tar"
            with tarfile.open(tar) as src:
                keep = [m for m in src.getmembers() if int(m.name[5:9]) < n]
                payload = {m.name: read_member(src, m) for m in keep}
            with tarfile.open(tar, "w") as dst:
                for name, blob in payload.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    dst.addfile(info, io.BytesIO(blob))
    sizes = {f"{i:05d}.tar": n for i, n in enumerate(counts)}
    for where in (root, root / "shards"):
        (where / "sizes.json").write_text(json.dumps(sizes))
    return root


@pytest.mark.parametrize(
    "counts, workers",
    [
        ((24, 24, 24), 2),  # the report: worker 1 read its one shard, then stopped
        ((24, 24, 0), 2),  # a shard whose every download failed
        ((8,), 1),  # exactly one global batch
    ],
)
def test_a_full_epoch_trains_on_any_layout(tmp_path, counts, workers):
    root = shards(tmp_path / "data", counts)
    cfg = TrainConfig(
        data=DataConfig(train_data=str(root), batch_size=8, workers=workers),
        model=ModelConfig(model=MICRO, method="clip"),
        optim=OptimConfig(warmup=1, epochs=1),
        run=RunConfig(logs=str(tmp_path / "logs"), name="run", report_to="none", progress=False),
    )
    result = train(cfg)
    assert torch.load(result.checkpoint, weights_only=True)["step"] == sum(counts) // 8
    assert result.metrics["skipped_samples"] == 0


def _loader_batches(root: Path, workers: int, start: data.Position) -> list[dict]:
    bundle = models.create(
        MICRO, init_inv_tau=30, learnable_inv_tau=False, device=torch.device("cpu")
    )
    d = data.build_train_data(
        DataConfig(train_data=str(root), batch_size=8, workers=workers),
        transform=bundle.preprocess_train,
        tokenizer=bundle.tokenizer,
        image_size=32,
        seed=5,
        rank=0,
        world_size=1,
    )
    batches = []
    for batch in d.make_loader(start):
        batches.append(batch)
        if start.batch + len(batches) == d.steps_per_epoch:
            break
    return batches


def test_resume_on_small_shards_continues_the_same_stream(tmp_path):
    root = shards(tmp_path / "data", (24, 24, 24))
    straight = _loader_batches(root, 2, data.Position())
    assert len(straight) == 9
    position = data.Position()
    for batch in straight[:4]:
        position.advance(batch, 2)
    resumed = _loader_batches(root, 2, position)
    assert len(resumed) == 5
    for a, b in zip(straight[4:], resumed, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])


@pytest.fixture
def trainer_warnings():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("cloob.trainer")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_shard_cut_on_a_block_boundary_is_warned_about_and_counted(tmp_path, trainer_warnings):
    root = write_shards(tmp_path / "data", 2, 12, size=32)
    tar = root / "shards" / "00001.tar"
    with tarfile.open(tar) as archive:
        cut = archive.getmembers()[3 * 8].offset  # where sample 8's first header starts
    tar.write_bytes(tar.read_bytes()[:cut])  # a valid tar: reading it raises nothing
    assert cut % 512 == 0 and sum(1 for _ in wds.WebDataset(str(tar), shardshuffle=False)) == 8
    source = data.resolve_source(str(root), "auto")

    def as_tensor(image):
        return torch.zeros(1)

    # A training stream cycles over the shards; 6 batches of 4 (plus the shuffle buffer's one
    # sample of read-ahead) pass the end of the short shard exactly once, in either shard order.
    stream = data.ShardStream(
        source.shards,
        transform=as_tensor,
        tokenizer=lambda t: t,
        batch_size=4,
        seed=0,
        epoch=0,
        shuffle_buffer=1,
        sizes=source.sizes,
    )
    position = data.Position()
    for batch, _ in zip(stream, range(6), strict=False):
        position.advance(batch, 1)
    assert position.skipped == 4
    assert any("00001.tar ended after 8 of 12 samples" in r.getMessage() for r in trainer_warnings)


def _stream(source: data.Source, **kw) -> data.ShardStream:
    return data.ShardStream(
        source.shards,
        transform=lambda image: torch.zeros(1),
        tokenizer=lambda t: t,
        batch_size=2,
        seed=0,
        epoch=0,
        shuffle_buffer=1,
        sizes=source.sizes,
        **kw,
    )


def test_a_resume_far_into_an_epoch_is_not_taken_for_corrupt_shards(tmp_path):
    """The skipped samples before a resume point are not "samples without a usable one": a worker
    resumed 300 samples in (past the 100-batches-plus-buffer alarm) continues the same stream."""
    source = data.resolve_source(str(write_shards(tmp_path / "data", 2, 8, size=16)), "auto")
    straight = [b["pos"] for b, _ in zip(_stream(source), range(160), strict=False)]
    resumed = _stream(source, start=data.Position(worker_pos=[300]))
    assert [b["pos"] for b, _ in zip(resumed, range(3), strict=False)] == [
        p for p in straight if p > 300
    ][:3]


def test_shards_that_go_bad_after_the_check_end_the_stream(tmp_path):
    """Every sample undecodable (the start-up check passed, then the bytes changed): the stream
    stops with one message instead of re-reading the shards forever."""
    source = data.resolve_source(str(write_shards(tmp_path / "data", 2, 8, size=16)), "auto")
    stream = _stream(source)
    stream.transform = lambda image: (_ for _ in ()).throw(OSError("broken"))
    with pytest.raises(RuntimeError, match="without a batch's worth of usable ones"):
        next(iter(stream))
