"""`benchmarks zeroshot` skips images that do not decode (corrupt, truncated, empty) and counts
them in results.json, the printed table and results.md, as the trainer does with bad samples."""

from __future__ import annotations

import json

import pandas as pd

from support.benchmark_data import class_tree, png_bytes, write_tiny_checkpoint, write_tree


def test_unreadable_images_are_skipped_and_counted(cli, tmp_path):
    ckpt = tmp_path / "run.pt"
    write_tiny_checkpoint(ckpt, 0, "clip")
    task = write_tree(tmp_path / "task", {
        **class_tree({"a": 2, "b": 2}),
        "a/corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "b/truncated.png": png_bytes(9)[:60],
        "b/empty.jpg": b"",
    })
    out = tmp_path / "out"
    code, stdout, err = cli("zeroshot", "--ckpt", ckpt, "--dataset-dir", task, "--out", out,
                            "--workers", "0", "--batch-size", "3", "--save-predictions",
                            "--no-progress")
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert (record["n_images"], record["n_skipped"]) == (4, 3)
    assert "skipped" in stdout and "| skipped |" in (out / "results.md").read_text()
    assert pd.read_csv(out / "results.csv")["n_skipped"].tolist() == [3]
    predictions = pd.read_parquet(out / record["predictions"])
    assert sorted(predictions["path"]) == ["a/img_000.png", "a/img_001.png", "b/img_000.png",
                                           "b/img_001.png"]
