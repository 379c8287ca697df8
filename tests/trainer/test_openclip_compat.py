"""OpenCLIP users keep their launch lines and their dashboards."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from cloob.common import precision
from cloob.common.cli import UsageError
from cloob.trainer import cli
from cloob.trainer.openclip_compat import check_argv, dashboard_tag, report_targets

from .conftest import MICRO

# open_clip's README (3.x): the single-process RN50 sample it shows the Conceptual Captions curves
# for, the same with the YFCC changes it names (lr 5e-4, 32 epochs), its torchrun line and its
# SLURM line (which adds --local-loss --gather-with-grad).
README_LINES = {
    "cc3m-rn50": """--save-frequency 1 --zeroshot-frequency 1 --report-to tensorboard
        --train-data="/path/to/train_data.csv" --val-data="/path/to/validation_data.csv"
        --csv-img-key filepath --csv-caption-key title --imagenet-val=/path/to/imagenet/root/val/
        --warmup 10000 --batch-size=128 --lr=1e-3 --wd=0.1 --epochs=30 --workers=8 --model RN50""",
    "yfcc-rn50": """--save-frequency 1 --zeroshot-frequency 1 --report-to tensorboard
        --train-data="/path/to/train_data.csv" --val-data="/path/to/validation_data.csv"
        --csv-img-key filepath --csv-caption-key title --imagenet-val=/path/to/imagenet/root/val/
        --warmup 10000 --batch-size=128 --lr=5e-4 --wd=0.1 --epochs=32 --workers=8 --model RN50""",
    "torchrun-cc12m": """--train-data '/data/cc12m/cc12m-train-{0000..2175}.tar'
        --train-num-samples 10968539 --dataset-type webdataset --batch-size 320 --precision amp
        --workers 4 --imagenet-val /data/imagenet/validation/""",
    "slurm-laion": """--save-frequency 1 --report-to tensorboard
        --train-data="/data/LAION-400M/{00000..41455}.tar" --warmup 2000 --batch-size=256
        --epochs=32 --workers=8 --model ViT-B-32 --name "ViT-B-32-Vanilla" --seed 0 --local-loss
        --gather-with-grad""",
    "other-flags": """--dataset-resampled --val-frequency 2 --report-to all --precision amp_bfloat16
        --train-num-samples 1000 --val-num-samples 100 --log-every-n-steps 5 --grad-clip-norm 1.0
        --accum-freq 2 --dist-url env:// --dist-backend nccl --torchcompile --grad-checkpointing""",
}


def parse(argv: list[str]) -> dict:
    """click's parse of `trainer run ARGV` (no work done): the parameters it would call run with."""
    import typer

    check_argv(argv)
    group = typer.main.get_command(cli.app)
    assert isinstance(group, typer.core.TyperGroup)  # typer's own click: not click.Group
    command = group.commands["run"]
    with command.make_context("run", list(argv)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("name", README_LINES)
def test_openclip_readme_launch_lines_parse(name):
    params = parse(shlex.split(README_LINES[name]))
    if name == "yfcc-rn50":
        assert params["lr"] == 5e-4 and params["epochs"] == 32 and params["model"] == "RN50"
        assert params["imagenet_val"] == "/path/to/imagenet/root/val/"
    if name == "slurm-laion":
        assert (
            params["gather_with_grad"]
            and params["local_loss"]
            and params["name"] == "ViT-B-32-Vanilla"
        )
    if name == "other-flags":
        assert params["dataset_resampled"] and params["val_frequency"] == 2
        assert report_targets(params["report_to"]) == {"tensorboard", "wandb"}
        assert precision.resolve(params["precision"]).name == "amp_bf16"


@pytest.mark.parametrize(
    ("value", "targets"),
    [
        ("all", {"tensorboard", "wandb"}),
        ("tensorboard", {"tensorboard"}),
        ("wandb", {"wandb"}),
        ("wandb,tensorboard", {"tensorboard", "wandb"}),
        ("tensorboard, wandb", {"tensorboard", "wandb"}),
        ("none", set()),
        ("", set()),
        (None, set()),
        ("all,tensorboard", {"tensorboard", "wandb"}),
    ],
)
def test_report_to_values(value, targets):
    assert report_targets(value) == targets


@pytest.mark.parametrize("value", ["tensorbaord", "tb", "tensorboard;wandb", "all,csv"])
def test_report_to_typos_refused(value):
    with pytest.raises(UsageError, match="use all, tensorboard, wandb"):
        report_targets(value)


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("amp", "amp"),
        ("amp_bf16", "amp_bf16"),
        ("amp_bfloat16", "amp_bf16"),
        ("bf16", "bf16"),
        ("fp16", "fp16"),
        ("pure_bf16", "pure_bf16"),
        ("pure_fp16", "pure_fp16"),
        ("fp32", "fp32"),
    ],
)
def test_every_openclip_precision_name(name, ours):
    """open_clip_train's --precision choices all resolve, to weights open_clip itself builds."""
    from open_clip_train.params import parse_args

    assert parse_args(["--precision", name]).precision == name  # still one of its choices
    p = precision.resolve(name)
    low = name in ("fp16", "bf16", "pure_bf16", "pure_fp16")  # the weights themselves change
    assert p.name == ours and p.open_clip == (name if low else "fp32")


@pytest.mark.parametrize("name", ["bf16", "pure_fp16"])
def test_new_precisions_cast_like_open_clip(name):
    import open_clip
    import torch

    open_clip.add_model_config(MICRO)  # registers "micro"
    ours = precision.resolve(name).cast_model(open_clip.create_model("micro"))
    theirs = open_clip.create_model("micro", precision=name)
    assert {k: v.dtype for k, v in ours.state_dict().items()} == {
        k: v.dtype for k, v in theirs.state_dict().items()
    }
    assert any(v.dtype != torch.float32 for v in ours.state_dict().values())


def test_dashboard_tags():
    assert dashboard_tag("inv_tau") == "train/scale"
    assert dashboard_tag("samples_per_s") == "train/samples_per_second"
    assert dashboard_tag("beta") == "train/beta"  # OpenCLIP has no β: ours
    assert dashboard_tag("val/loss") == "val/clip_val_loss"
    assert dashboard_tag("val/n_samples") == "val/num_samples"
    assert dashboard_tag("zeroshot/imagenet/acc1") == "val/imagenet-zeroshot-val-top1"
    assert dashboard_tag("zeroshot/imagenet/acc5") == "val/imagenet-zeroshot-val-top5"
    assert (
        dashboard_tag("zeroshot/imagenet/mean_per_class_recall")
        == "zeroshot/imagenet/mean_per_class_recall"
    )
    assert dashboard_tag("val/image_to_text_R@1") == "val/image_to_text_R@1"


COLOURS = ("red", "blue", "green", "yellow", "white")


def scalar_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return set(events.Tags()["scalars"])


def openclip_run(tmp_path: Path, monkeypatch) -> set[str]:
    """Two steps of OpenCLIP's own trainer (synthetic data, the micro model): the tags it writes."""
    import open_clip
    import open_clip_train.data as oc_data
    from open_clip_train.main import main as openclip_main

    class PairSized(oc_data.SyntheticDataset):  # its synthetic images break on an int size (PIL)
        def __init__(self, *args, image_size=(32, 32), **kw):
            size = (image_size, image_size) if isinstance(image_size, int) else image_size
            super().__init__(*args, image_size=size, **kw)

    monkeypatch.setattr(oc_data, "SyntheticDataset", PairSized)
    open_clip.add_model_config(MICRO)
    monkeypatch.setattr(sys, "argv", ["open_clip_train"])
    openclip_main(
        [
            "--model",
            "micro",
            "--zeroshot-frequency",
            "1",
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "16",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--val-data",
            "synthetic",
            "--log-every-n-steps",
            "1",
            "--report-to",
            "tensorboard",
            "--logs",
            str(tmp_path / "oc"),
            "--name",
            "run",
            "--save-frequency",
            "0",
            "--warmup",
            "1",
        ]
    )
    return scalar_tags(tmp_path / "oc" / "run" / "tensorboard")


def ours_run(tmp_path: Path, monkeypatch) -> set[str]:
    task = tmp_path / "imagenet"  # a zero-shot task folder: the task is named for it
    from PIL import Image

    for colour in COLOURS:
        (task / "images" / colour).mkdir(parents=True)
        Image.new("RGB", (32, 32), colour).save(task / "images" / colour / "a.png")
    (task / "classnames.txt").write_text("\n".join(COLOURS) + "\n")
    (task / "templates.txt").write_text("a {} shape\n")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "trainer",
            "run",
            "--model",
            MICRO,
            "--method",
            "cloob",
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "16",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--workers",
            "0",
            "--val-data",
            "synthetic",
            "--val-num-samples",
            "8",
            "--zeroshot-task",
            str(task),
            "--log-every-n-steps",
            "1",
            "--report-to",
            "all",
            "--logs",
            str(tmp_path / "ours"),
            "--name",
            "run",
            "--save-frequency",
            "0",
            "--warmup",
            "1",
            "--no-progress",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli.main()  # returns on success
    return scalar_tags(tmp_path / "ours" / "run" / "tensorboard")


@pytest.mark.slow  # ~40 s: two short trainings (ours and open_clip_train's) plus wandb offline
def test_tensorboard_tags_overlay_openclip(tmp_path, monkeypatch):
    theirs = openclip_run(tmp_path, monkeypatch)
    ours = ours_run(tmp_path, monkeypatch)
    same_quantity = {
        "train/loss",
        "train/lr",
        "train/scale",
        "train/samples_per_second",
        "val/clip_val_loss",
        "val/num_samples",
        "val/image_to_text_R@1",
        "val/text_to_image_mean_rank",
    }
    assert same_quantity <= theirs, sorted(theirs)
    assert same_quantity <= ours, sorted(same_quantity - ours)
    # OpenCLIP's zero-shot tags (its zero_shot.py: "<task>-zeroshot-val-top1/5" under val/; its
    # ImageNet accuracy breaks on numpy 2 here, so the names are checked, not run)
    assert {"val/imagenet-zeroshot-val-top1", "val/imagenet-zeroshot-val-top5"} <= ours
    assert not {"train/inv_tau", "train/samples_per_s", "val/loss", "val/n_samples"} & ours
    assert {"train/beta"} <= ours  # β: OpenCLIP has none, ours stays
    # wandb (--report-to all) wrote an offline run with the same tags
    runs = list((tmp_path / "ours" / "run").rglob("offline-run-*"))
    assert runs, "no offline wandb run"
