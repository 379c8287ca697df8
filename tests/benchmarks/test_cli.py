"""The `benchmarks` CLI end to end: fetch from a mirror, list, zeroshot with reports; bad input."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import torch
from clip_benchmark.cli import main_build

from cloob.benchmarks.reporting import report
from cloob.common import checkpoint as ckpt_format
from support.benchmark_data import class_tree, write_tiny_checkpoint, write_tree

from .conftest import record_problems


def save_trainer_ckpt(path, seed: int, method: str):
    return write_tiny_checkpoint(
        path,
        seed,
        method,
        inv_tau=30.0,
        hopfield_beta=8.0,
        epoch=1,
        step=10,
        optimizer={},
        config={},
        name=path.stem,
    )


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return [
        save_trainer_ckpt(folder / "clip_run.pt", 1, "clip"),
        save_trainer_ckpt(folder / "cloob_run.pt", 2, "cloob"),
    ]


def test_fetch_list_and_zeroshot_two_checkpoints(cli, mirror, tmp_path, ckpts):
    root, out = tmp_path / "bench", tmp_path / "out"
    code, _, err = cli(
        "fetch",
        "flowers102",
        "birdsnap",
        "--root",
        root,
        "--base-url",
        mirror.url,
        "--checksums",
        mirror.checksums,
        "--no-progress",
    )
    assert code == 0, err
    assert "flowers102: fetched, 8 images" in err and "birdsnap: fetched" in err
    code, listing, _ = cli("list", "--root", root)
    assert code == 0 and "flowers102" in listing and "yes" in listing

    code, _, err = cli(
        "zeroshot",
        "--ckpt",
        ckpts[0],
        "--ckpt",
        ckpts[1],
        "--datasets",
        "flowers102,birdsnap",
        "--root",
        root,
        "--out",
        out,
        "--compare-paper",
        "yfcc-rn50",
        "--save-predictions",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert code == 0, err
    records = json.loads((out / "results.json").read_text())["records"]
    assert all(record_problems(r, report.ZeroshotRecord) == [] for r in records), records[0]
    assert [(r["label"], r["dataset"]) for r in records] == [
        ("clip_run", "flowers102"),
        ("clip_run", "birdsnap"),
        ("cloob_run", "flowers102"),
        ("cloob_run", "birdsnap"),
    ]
    r = records[0]
    assert r["checkpoint_sha256"] and r["method"] == "clip" and r["model"] == "tiny-vit"
    assert r["n_images"] == 8 and r["n_classes"] == 4 and r["precision"] == "fp32"
    assert (
        set(r["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"} and r["headline"] == "acc1"
    )
    assert r["templates"] == ["a photo of a {}, a type of flower."] and "open_clip" in r["software"]
    preds = pd.read_parquet(out / r["predictions"])
    assert len(preds) == 8 and list(preds.columns) == ["path", "label", "top5_index", "top5_score"]
    first = preds.iloc[0]
    assert (
        first["path"] == "moon orchid/img_000.png"
        and first["label"] == 3
        and len(first["top5_index"]) == 4
    )
    assert (
        abs(
            (preds["top5_index"].map(lambda t: t[0]) == preds["label"]).mean()
            - r["metrics"]["acc1"]
        )
        < 1e-9
    )
    side = pd.read_csv(out / "side_by_side.csv", index_col=0)
    assert list(side.columns) == [
        "clip_run",
        "cloob_run",
        "paper yfcc-rn50 CLIP",
        "paper yfcc-rn50 CLOOB",
    ]
    assert side.loc["birdsnap", "paper yfcc-rn50 CLOOB"] == 28.9
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "**" in (out / "results.md").read_text() and len(pd.read_csv(out / "results.csv")) == 4
    assert list((out / ".classifiers").glob("*.pt"))  # cached per (checkpoint, dataset)


def test_zeroshot_demo_task_dir(cli, tmp_path, ckpts):
    task = tmp_path / "task"
    write_tree(task / "images", class_tree({"red square": 2, "blue circle": 2}))
    (task / "classnames.txt").write_text("red square\nblue circle\n")
    (task / "templates.txt").write_text("a drawing of a {}.\n")
    for args in (
        ["--dataset-dir", task],
        [
            "--dataset-dir",
            task / "images",
            "--classnames",
            task / "classnames.txt",
            "--templates",
            task / "templates.txt",
        ],
    ):
        code, _, err = cli(
            "zeroshot",
            "--ckpt",
            ckpts[0],
            *args,
            "--out",
            tmp_path / "o",
            "--workers",
            "0",
            "--no-progress",
        )
        assert code == 0, err
        record = json.loads((tmp_path / "o" / "results.json").read_text())["records"][0]
        assert record["n_images"] == 4 and record["templates"] == ["a drawing of a {}."]
    # and clip_benchmark's `build` aggregates the export (it fails on results.json: KeyError
    # 'metrics')
    csv = tmp_path / "benchmark.csv"
    main_build(argparse.Namespace(files=[str(tmp_path / "o" / "clip_benchmark")], output=str(csv)))
    row = pd.read_csv(csv).iloc[0]
    assert row.task == "zeroshot_classification" and row.acc1 == record["metrics"]["acc1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--datasets", "mnist"], "unknown dataset 'mnist'"),
        (["--datasets", "gtsrb"], "benchmarks fetch gtsrb --root"),
        (["--precision", "fp8"], "unknown precision"),
        (["--compare-paper", "laion"], "unknown paper setting"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, tmp_path, ckpts, args, message):
    code, _, err = cli(
        "zeroshot", "--ckpt", ckpts[0], "--root", tmp_path, "--out", tmp_path / "o", *args
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_zeroshot_without_root_uses_fetch_default(cli, tmp_path, ckpts, monkeypatch):
    # the commands it suggests must work as printed: the same default root as `benchmarks fetch`
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("zeroshot", "--ckpt", ckpts[0], "--out", tmp_path / "o")
    assert code == 2 and "--root None" not in err, err
    assert "benchmarks fetch gtsrb --root data/benchmarks" in err
    assert err.strip().splitlines()[-1] == (
        "error: no datasets to evaluate under data/benchmarks; "
        "run: benchmarks fetch all --root data/benchmarks"
    )


def test_every_command_defaults_to_auto_device_and_one_root():
    import typer.main

    from cloob.benchmarks.cli import app

    commands = typer.main.get_command(app).commands
    defaults = {(name, p.name): p.default for name, cmd in commands.items() for p in cmd.params}
    evaluators = {name for name, _ in defaults if (name, "device") in defaults}
    assert evaluators == {"zeroshot", "linear-probe", "retrieval", "analyze"}
    assert all(defaults[(name, "device")] == "auto" for name in evaluators)
    roots = {defaults[key] for key in defaults if key[1] == "root"}
    assert roots == {defaults[("fetch", "root")]}, roots


def test_unreadable_and_mismatched_checkpoints_exit_2(cli, tmp_path, ckpts):
    task = tmp_path / "d"
    write_tree(task, class_tree({"a": 1, "b": 1}))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    code, _, err = cli(
        "zeroshot", "--ckpt", tmp_path / "junk.pt", "--dataset-dir", task, "--out", tmp_path / "o"
    )
    assert code == 2 and "not a readable checkpoint" in err
    ckpt = torch.load(ckpts[0], weights_only=True)
    ckpt["model_cfg"]["text_cfg"]["layers"] = 3
    ckpt_format.write(tmp_path / "wrong.pt", ckpt)
    code, _, err = cli(
        "zeroshot", "--ckpt", tmp_path / "wrong.pt", "--dataset-dir", task, "--out", tmp_path / "o"
    )
    assert code == 2 and "do not fit" in err and len(err.strip().splitlines()) == 1


def test_labels_tell_trainer_runs_apart():
    from cloob.benchmarks.models.checkpoints import LoadedModel, labels_for

    def m(path):
        return LoadedModel(
            model=None, preprocess=None, tokenizer=None, name="x", format="f", path=path
        )

    assert labels_for(
        [m("/r/cloob/checkpoints/latest.pt"), m("/r/clip/checkpoints/latest.pt")]
    ) == ["cloob/latest", "clip/latest"]
    assert labels_for([m("/a/epoch_1.pt"), m("/a/epoch_2.pt")]) == ["epoch_1", "epoch_2"]


def test_a_run_alone_is_still_named_for_its_run(tmp_path):
    """Two runs evaluated separately: each latest.pt exports under its run's name, so
    clip_benchmark's rows (and the report tables) tell them apart."""
    from cloob.benchmarks.models.checkpoints import LoadedModel
    from cloob.benchmarks.reporting.clip_benchmark_export import clip_benchmark_record
    from cloob.benchmarks.tasks.zeroshot.run import labels_for

    def m(path):
        return LoadedModel(
            model=None, preprocess=None, tokenizer=None, name="x", format="f", path=path
        )

    rows = []
    for run in ("cloob-rn50", "clip-rn50"):
        (label,) = labels_for([m(f"/logs/{run}/checkpoints/latest.pt")])
        rows.append(
            clip_benchmark_record(
                {
                    "dataset": "cifar10",
                    "model": "RN50",
                    "label": label,
                    "checkpoint": "x.pt",
                    "metrics": {"acc1": 0.5, "acc5": 0.9, "mean_per_class_recall": 0.5},
                }
            )
        )
    assert [r["pretrained"] for r in rows] == ["cloob-rn50/latest", "clip-rn50/latest"]
    assert labels_for([m("/a/epoch_1.pt")]) == ["epoch_1"]  # no run folder: the stem, as before


def test_bootstrap_0_turns_the_intervals_off(cli, tmp_path, ckpts):
    """The edge of the --bootstrap range (its bad values are rows of the bad-input matrix)."""
    write_tree(tmp_path / "task", class_tree({"a": 2, "b": 2}))
    code, _, err = cli(
        "zeroshot", "--ckpt", ckpts[0], "--dataset-dir", tmp_path / "task", "--out",
        tmp_path / "o", "--workers", "0", "--no-progress", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "results.json").read_text())["records"][0]
    assert "acc1" in record["metrics"] and not any(k.endswith("_lo") for k in record["metrics"])
    assert "(off: --bootstrap 0)" in (tmp_path / "o" / "results.md").read_text()
