"""Every evaluation (zeroshot, linear-probe, retrieval, analyze) skips images that do not decode
(corrupt, truncated, empty), through one collate, and counts them in results.json (zeroshot also
in the printed table and results.md), as the trainer does with bad samples."""

from __future__ import annotations

import io
import json
import tarfile

import pandas as pd
import pytest

from support.benchmark_data import class_tree, png_bytes, write_tiny_checkpoint, write_tree
from support.shards import write_shards

BAD = {
    "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "truncated.png": png_bytes(9)[:60],
    "empty.jpg": b"",
}


@pytest.fixture
def ckpt(tmp_path):
    return write_tiny_checkpoint(tmp_path / "run.pt", 0, "clip")


def test_unreadable_images_are_skipped_and_counted(cli, tmp_path):  # zeroshot
    ckpt = tmp_path / "run.pt"
    write_tiny_checkpoint(ckpt, 0, "clip")
    task = write_tree(
        tmp_path / "task",
        {
            **class_tree({"a": 2, "b": 2}),
            "a/corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
            "b/truncated.png": png_bytes(9)[:60],
            "b/empty.jpg": b"",
        },
    )
    out = tmp_path / "out"
    code, stdout, err = cli(
        "zeroshot",
        "--ckpt",
        ckpt,
        "--dataset-dir",
        task,
        "--out",
        out,
        "--workers",
        "0",
        "--batch-size",
        "3",
        "--save-predictions",
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert (record["n_images"], record["n_skipped"]) == (4, 3)
    assert "skipped" in stdout and "| skipped |" in (out / "results.md").read_text()
    assert pd.read_csv(out / "results.csv")["n_skipped"].tolist() == [3]
    predictions = pd.read_parquet(out / record["predictions"])
    assert sorted(predictions["path"]) == [
        "a/img_000.png",
        "a/img_001.png",
        "b/img_000.png",
        "b/img_001.png",
    ]


def test_linear_probe_skips_and_counts_unreadable_images(cli, tmp_path, ckpt):
    for split in ("train", "test"):
        write_tree(
            tmp_path / "pair" / split,
            {
                **class_tree({"a": 4, "b": 4}),
                "a/corrupt.png": BAD["corrupt.png"],
                "b/empty.jpg": BAD["empty.jpg"],
            },
        )
    out = tmp_path / "out"
    code, _, err = cli(
        "linear-probe",
        "--ckpt",
        ckpt,
        "--train-dir",
        tmp_path / "pair" / "train",
        "--test-dir",
        tmp_path / "pair" / "test",
        "--out",
        out,
        "--workers",
        "0",
        "--batch-size",
        "3",
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert (record["n_images"], record["n_skipped"], record["n_train"] + record["n_val"]) == (
        8,
        2,
        8,
    )
    assert record["skipped_by_split"] == {"train": 2, "test": 2}
    assert "unreadable images skipped: 2 train, 2 test" in err
    code, _, err = cli(
        "linear-probe",
        "--ckpt",
        ckpt,
        "--train-dir",
        tmp_path / "pair" / "train",
        "--test-dir",
        tmp_path / "pair" / "test",
        "--out",
        out,
        "--workers",
        "0",
        "--no-progress",
    )
    again = json.loads((out / "results.json").read_text())["records"][0]  # from the feature cache
    assert code == 0 and again["features_cached"] == {"train": True, "test": True}
    assert (
        again["skipped_by_split"] == record["skipped_by_split"]
        and again["metrics"] == record["metrics"]
    )


def add_unreadable_sample(shards, key: str, caption: bytes = b"a broken picture") -> None:
    with tarfile.open(shards / "shards" / f"{key}.tar", "w") as tf:
        for name, body in ((f"{key}.jpg", b"\xff\xd8 not really a jpeg"), (f"{key}.txt", caption)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))


@pytest.mark.parametrize("command", ["retrieval", "analyze"])
def test_pairs_skip_and_count_unreadable_images_in_shards(cli, tmp_path, ckpt, command):
    shards = write_shards(tmp_path / "val", 1, 8, seed=2)
    add_unreadable_sample(shards, "zzbroken")
    out = tmp_path / "out"
    code, _, err = cli(
        command,
        "--ckpt",
        ckpt,
        "--data",
        shards,
        "--out",
        out,
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert (record["n_images"], record["n_skipped"]) == (8, 1), record
    if command == "retrieval":
        assert record["n_captions"] == 8
    assert "1 unreadable images skipped" in err
    assert pd.read_csv(out / "results.csv")["n_skipped"].tolist() == [1]


def test_retrieval_skips_an_unreadable_karpathy_image_with_its_captions(cli, tmp_path, ckpt):
    write_tree(
        tmp_path / "coco",
        {**class_tree({"val2014": 4}), "val2014/broken.png": BAD["truncated.png"]},
    )
    entries = [
        {
            "split": "test",
            "filepath": "val2014",
            "filename": name,
            "sentences": [{"raw": f"{name} {j}"} for j in range(2)],
        }
        for name in ["img_000.png", "broken.png", "img_001.png", "img_002.png", "img_003.png"]
    ]
    (tmp_path / "k.json").write_text(json.dumps({"images": entries}))
    code, _, err = cli(
        "retrieval",
        "--ckpt",
        ckpt,
        "--karpathy",
        tmp_path / "k.json",
        "--images",
        tmp_path / "coco",
        "--out",
        tmp_path / "out",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["records"][0]
    assert (record["n_images"], record["n_skipped"], record["n_captions"]) == (4, 1, 8)
