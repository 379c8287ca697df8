"""Short real runs on every data source; corrupt data is skipped and counted; checkpoints load in
open_clip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import open_clip
import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError
from cloob.trainer import data, models
from cloob.trainer.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from cloob.trainer.loop import train
from support.images import make_images
from support.shards import truncate, write_shards

from .conftest import MICRO


def cfg(logs: Path, name: str, **data_kw) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(**{"batch_size": 8, "workers": 0, **data_kw}),
        model=ModelConfig(model=MICRO, method="clip"),
        optim=OptimConfig(lr=1e-3, warmup=1, epochs=1, max_steps=4),
        run=RunConfig(
            logs=str(logs), name=name, report_to="tensorboard", progress=False, log_every_n_steps=2
        ),
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_on_dataprep_shards(shard_dir, tmp_path):
    c = cfg(
        tmp_path,
        "wds",
        train_data=str(shard_dir),
        val_data=str(shard_dir),
        val_num_samples=24,
        workers=2,
    )
    result = train(c)
    rows = metrics(result.run_dir)
    assert rows[-1]["val/n_samples"] == 24 and "val/image_to_text_R@1" in rows[-1]
    assert {"loss", "lr", "inv_tau", "beta", "samples_per_s"} <= set(rows[0])
    assert result.metrics["skipped_samples"] == 0
    for f in ("config.json", "curves.png", "checkpoints/latest.pt"):
        assert (result.run_dir / f).exists(), f
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])  # grouped as OpenCLIP's, so runs of both sit side by side
    assert {
        "train/loss",
        "train/lr",
        "train/samples_per_second",
        "train/scale",
        "val/clip_val_loss",
        "val/num_samples",
    } <= tags, tags
    ckpt = torch.load(result.checkpoint, weights_only=True)  # plain types only
    assert ckpt["format"] == ckpt_format.FORMAT and ckpt["model_name"] == "micro"
    # the format's description is what the trainer writes: every key (but siglip's bias, which
    # a clip run has not), and nothing undescribed
    described = set(typing.get_type_hints(ckpt_format.TrainerCheckpoint))
    assert set(ckpt) == described - {"logit_bias"}
    ckpt_format.read(result.checkpoint)  # and each value has the described kind
    assert ckpt["method"] == "clip" and ckpt["step"] == 4 and ckpt["config"]["data"]["workers"] == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert abs(ckpt["state_dict"]["logit_scale"].exp().item() - ckpt["inv_tau"]) < 1e-4
    # open_clip loads the checkpoint directly into the architecture named in it
    loaded = open_clip.create_model(ckpt["model_name"], pretrained=str(result.checkpoint))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k


def test_brace_pattern_and_joined_sources(shard_dir, tmp_path):
    pattern = f"{shard_dir}/shards/{{00000..00001}}.tar::{shard_dir}/shards/0000{{2,3}}.tar"
    source = data.resolve_source(pattern, "auto")
    assert source.kind == "webdataset" and len(source.shards) == 4 and source.known_samples == 64
    assert data.resolve_source(str(shard_dir / "shards" / "00000.tar"), "auto").known_samples == 16


def test_corrupt_shard_and_sample_are_skipped_and_counted(tmp_path):
    root = write_shards(tmp_path / "data", 3, 12, size=32)
    truncate(root / "shards" / "00001.tar", 0.4)  # a killed writer's tar
    # a sample whose image bytes are garbage, in an otherwise fine shard
    import webdataset as wds

    with wds.TarWriter(str(root / "shards" / "00002.tar")) as sink:
        for i in range(12):
            jpg = b"not a jpeg" if i == 3 else _jpeg(i)
            sink.write({"__key__": f"bad{i:03d}", "jpg": jpg, "txt": b"a caption"})
    result = train(cfg(tmp_path, "corrupt", train_data=str(root), workers=2, batch_size=4))
    skipped = result.metrics["skipped_samples"]
    assert skipped >= 2  # at least the truncated shard's error and the garbage image
    rows = metrics(result.run_dir)
    assert rows[-1]["step"] == 4


def _jpeg(seed: int) -> bytes:
    from support.images import image_bytes

    return image_bytes(seed=seed, size=32)


def test_fewer_shards_than_workers_falls_back(tmp_path, caplog):
    root = write_shards(tmp_path / "one", 1, 20, size=32)
    result = train(cfg(tmp_path, "few", train_data=str(root), workers=2))
    assert (result.run_dir / "checkpoints" / "latest.pt").exists()
    assert "using 1 data workers instead of 2" in (result.run_dir / "out.log").read_text()


def test_resampled_with_num_samples(shard_dir, tmp_path):
    result = train(
        cfg(
            tmp_path,
            "res",
            train_data=f"{shard_dir}/shards/{{00000..00003}}.tar",
            dataset_resampled=True,
            train_num_samples=40,
            workers=2,
        )
    )
    assert ckpt_format.read(result.checkpoint)["step"] == 4


def test_csv_reference_format(tmp_path):
    root = tmp_path / "cc"
    images = make_images(root, 24, size=32, subdir="images")
    csv_path = root / "train.csv"
    csv_path.write_text(
        "title\tfilepath\n" + "".join(f"{im.caption}\t{im.relpath}\n" for im in images)
    )
    (root / "images" / images[5].path.name).write_bytes(b"broken")  # skipped and counted
    c = cfg(
        tmp_path,
        "csv",
        train_data=str(csv_path),
        path_data=str(root),
        dataset_type="csv",
        csv_separator="\\t",
        val_data=str(csv_path),
        workers=1,
    )
    result = train(c)
    assert "val/loss" in result.metrics
    assert result.metrics["skipped_samples"] >= 1
    assert result.metrics["val/n_samples"] == 24


def test_synthetic_with_real_zeroshot_and_benchmarks_loader(tmp_path):
    """Zero-shot during training runs through cloob.benchmarks (the one implementation), and the
    benchmarks package loads our checkpoint without importing the trainer."""
    from cloob.benchmarks.models.checkpoints import load_checkpoint

    task = tmp_path / "shapes"
    for shape in ("circle", "square"):
        make_images(task / "images", 2, size=32, subdir=shape, seed=len(shape))
    (task / "classnames.txt").write_text("circle\nsquare\n")
    (task / "templates.txt").write_text("a photo of a {}.\na drawing of a {}.\n")
    c = cfg(tmp_path, "syn", dataset_type="synthetic", train_num_samples=32)
    c.eval = EvalConfig(zeroshot_tasks=[str(task)], batch_size_eval=4)
    c.model.method = "cloob"
    result = train(c)
    acc1 = result.metrics["zeroshot/shapes/acc1"]
    assert 0.0 <= acc1 <= 1.0 and "zeroshot/shapes/acc5" in result.metrics
    assert any("zeroshot/shapes/acc1" in r for r in metrics(result.run_dir))
    assert (result.run_dir / "curves.png").stat().st_size > 0
    loaded = load_checkpoint(result.checkpoint)
    assert hasattr(loaded.model, "encode_image")


def test_synthetic_batches_are_deterministic():
    bundle = models.create(
        MICRO, init_inv_tau=30, learnable_inv_tau=False, device=torch.device("cpu")
    )
    d = data.build_train_data(
        DataConfig(dataset_type="synthetic", train_num_samples=32, batch_size=4, workers=0),
        transform=bundle.preprocess_train,
        tokenizer=bundle.tokenizer,
        image_size=32,
        seed=3,
        rank=0,
        world_size=1,
    )
    first = [b["image"] for b in d.make_loader(data.Position())]
    again = [b["image"] for b in d.make_loader(data.Position(batch=2))]
    assert len(first) == 8 and len(again) == 6
    for a, b in zip(first[2:], again, strict=True):
        assert torch.equal(a, b)


def test_sizes_json_lists_missing_shard(shard_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shard_dir, broken)
    (broken / "shards" / "00003.tar").unlink()
    with pytest.raises(Exception, match="do not exist"):
        data.resolve_source(str(broken), "auto")


def test_importing_the_data_package_has_no_side_effects():
    """The s3 opener is registered when a remote shard is opened, not at import: a run on local
    or synthetic data leaves webdataset's openers and the object-store client alone."""
    probe = (
        "import sys; import cloob.trainer.data, cloob.trainer.loop; "
        "from webdataset.gopen import gopen_schemes; "
        "print('s3' in gopen_schemes, 's3fs' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


class _AllBroken:
    def __len__(self) -> int:
        return 3

    def load(self, i: int):
        raise OSError(f"image {i} is gone")


def test_a_batch_whose_every_sample_is_unreadable_is_a_clear_error():
    batches = data.IndexedBatches(_AllBroken(), transform=lambda im: im, tokenizer=lambda t: t)
    with pytest.raises(UsageError, match="none of the 3 samples could be read .*image 2 is gone"):
        batches[[(0, 1), (1, 2)]]


def test_position_owns_the_epoch_rollover():
    p = data.Position(epoch=2, batch=3, worker_pos=[5, 7], next_worker=1, skipped=4)
    assert not p.end_epoch_if_done(4) and p.batch == 3
    p.batch = 4
    assert p.end_epoch_if_done(4)
    assert p == data.Position(epoch=3, batch=0, worker_pos=[], next_worker=0, skipped=4)
