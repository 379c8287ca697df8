"""Image–text retrieval: hand-computed recalls, clip_benchmark parity, shards and Karpathy inputs,
the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cloob.benchmarks.data.pairs import from_karpathy, from_shards
from cloob.benchmarks.models.features import embed
from cloob.benchmarks.options import in_process
from cloob.benchmarks.reporting import report
from cloob.benchmarks.tasks.retrieval import recalls
from support.benchmark_data import tiny_model, tiny_preprocess, write_tiny_checkpoint
from support.images import make_images
from support.shards import write_shards

from .conftest import record_problems


def test_hand_computed_recalls():
    # 3 images on the axes; captions 0 and 1 belong to image 0, caption 2 to image 1, caption 3 to
    # image 2
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0.1, 0.995, 0], [0.6, 0.8, 0], [0.8, 0, 0.6]], dtype=np.float32)
    m = recalls(images, texts, np.array([0, 0, 1, 2]), ks=(1, 2))
    # text→image, nearest image: c0 → 0 ✓, c1 → 1 ✗ (then 0 ✓), c2 → 1 ✓, c3 → 0 ✗ (then 2 ✓)
    assert (m["t2i_r1"], m["t2i_r2"]) == (0.5, 1.0)
    # image→text, nearest caption: image 0 → c0 ✓; image 1 → c1 ✗ (then c2 ✓); image 2 → c3 ✓
    assert (m["i2t_r1"], m["i2t_r2"]) == (pytest.approx(2 / 3), 1.0)
    assert m["mean_recall"] == pytest.approx((0.5 + 1 + 2 / 3 + 1) / 4)


def karpathy_set(root, n_images=14):
    """A Karpathy-split JSON (COCO's shape: filepath + filename, 2–3 sentences) and its images."""
    made = make_images(root / "images", n_images, seed=7, size=40, subdir="val2014")
    entries = []
    for i, img in enumerate(made):
        n_captions = 2 + i % 2
        entries.append(
            {
                "filepath": "val2014",
                "filename": img.path.name,
                "imgid": i,
                "split": "test" if i >= 2 else "train",
                "sentences": [
                    {"raw": f"{img.caption} ({j})", "tokens": []} for j in range(n_captions)
                ],
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return root / "dataset_coco.json", root / "images"


def test_karpathy_and_shards_inputs(tmp_path):
    pairs = from_karpathy(*karpathy_set(tmp_path))
    assert pairs.name == "coco" and len(pairs.images) == 12 and len(pairs.captions) == 30
    assert pairs.caption_image.tolist()[:5] == [0, 0, 1, 1, 1]
    shards = write_shards(tmp_path / "wds", 2, 6, seed=3)
    import io
    import tarfile

    with tarfile.open(
        shards / "shards" / "extra.tar", "w"
    ) as tf:  # a sample without caption is skipped
        info = tarfile.TarInfo("lonely.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    pairs = from_shards([shards])
    assert len(pairs.images) == 12 and pairs.caption_image.tolist() == list(range(12))
    assert pairs.source["skipped_samples"] == 1 and pairs.images[0].open().size == (64, 64)


def test_parity_with_clip_benchmark(tmp_path):
    """Same model, same images and captions: identical recalls to clip_benchmark's zero-shot
    retrieval."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_retrieval as cb
    from torch.utils.data import DataLoader, Dataset

    pairs = from_karpathy(*karpathy_set(tmp_path))
    model, preprocess, tokenizer = (
        tiny_model(5),
        tiny_preprocess(),
        open_clip.get_tokenizer("ViT-B-32"),
    )
    emb = embed(model, preprocess, tokenizer, pairs, in_process(batch_size=5))
    ours = recalls(emb.images, emb.texts, pairs.caption_image)

    class ImageCaptions(Dataset):  # clip_benchmark's retrieval input: (image, [its captions])
        def __len__(self):
            return len(pairs.images)

        def __getitem__(self, i):
            return preprocess(pairs.images[i].open()), [
                c for c, o in zip(pairs.captions, pairs.caption_image, strict=True) if o == i
            ]

    loader = DataLoader(
        ImageCaptions(),
        batch_size=4,
        collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b]),
    )
    theirs = cb.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        assert ours[f"t2i_r{k}"] == theirs[f"image_retrieval_recall@{k}"]
        assert ours[f"i2t_r{k}"] == theirs[f"text_retrieval_recall@{k}"]
    assert 0 < ours["t2i_r1"] < 1 and 0 < ours["i2t_r5"] < 1  # not a degenerate case
    print("parity:", {k: round(v, 4) for k, v in ours.items()})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "cloob_run.pt"
    return write_tiny_checkpoint(path, 2, "cloob")


def test_cli_shards_and_karpathy(cli, tmp_path, ckpt):
    shards = write_shards(tmp_path / "cc3m-val", 1, 12, seed=1)
    code, _, err = cli(
        "retrieval",
        "--ckpt",
        ckpt,
        "--data",
        shards,
        "--out",
        tmp_path / "o1",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads((tmp_path / "o1" / "results.json").read_text())["records"][0]
    assert record_problems(record, report.RetrievalRecord) == []
    assert (
        record["task"] == "retrieval"
        and record["dataset"] == "cc3m-val"
        and record["method"] == "cloob"
    )
    assert (record["n_images"], record["n_captions"]) == (12, 12) and record["checkpoint_sha256"]
    assert set(record["metrics"]) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {
        "mean_recall"
    }
    assert (
        "Recall" in (tmp_path / "o1" / "results.md").read_text()
        and (tmp_path / "o1" / "results.csv").is_file()
    )
    json_path, images = karpathy_set(tmp_path / "k")
    code, _, err = cli(
        "retrieval",
        "--ckpt",
        ckpt,
        "--karpathy",
        json_path,
        "--images",
        images,
        "--out",
        tmp_path / "o2",
        "--workers",
        "0",
        "--no-progress",
        "--precision",
        "amp_bf16",
    )
    record = json.loads((tmp_path / "o2" / "results.json").read_text())["records"][0]
    assert code == 0 and record["n_captions"] == 30 and record["precision"] == "amp_bf16"


def _bad(tmp_path):
    json_path, images = karpathy_set(tmp_path / "k", n_images=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "nocap").mkdir()
    import io
    import tarfile

    with tarfile.open(tmp_path / "nocap" / "0.tar", "w") as tf:
        info = tarfile.TarInfo("a.jpg")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "broken.json").write_text("[1, 2]")
    return {
        "missing split": (
            ["--karpathy", json_path, "--images", images, "--split", "val"],
            "no images in split 'val' (splits present: test, train)",
        ),
        "missing image folder": (
            ["--karpathy", json_path, "--images", tmp_path / "nope"],
            "no such image folder",
        ),
        "not karpathy": (
            ["--karpathy", tmp_path / "broken.json", "--images", images],
            "not a Karpathy-split JSON",
        ),
        "no shards": (["--data", tmp_path / "empty"], "no .tar shards"),
        "no pairs": (["--data", tmp_path / "nocap"], "no image–caption pairs found"),
        "both inputs": (["--data", tmp_path / "nocap", "--karpathy", json_path], "not both"),
        "karpathy without images": (["--karpathy", json_path], "--karpathy needs --images"),
        "bad precision": (
            ["--data", tmp_path / "nocap", "--precision", "fp8"],
            "unknown precision",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing split",
        "missing image folder",
        "not karpathy",
        "no shards",
        "no pairs",
        "both inputs",
        "karpathy without images",
        "bad precision",
    ],
)
def test_bad_input_matrix(cli, tmp_path, ckpt, case):
    args, message = _bad(tmp_path)[case]
    code, _, err = cli(
        "retrieval", "--ckpt", ckpt, "--out", tmp_path / "out", "--no-progress", *args
    )
    lines = err.strip().splitlines()
    assert (
        (code, len(lines)) == (2, 1) and lines[0].startswith("error: ") and message in lines[0]
    ), err
    assert not (tmp_path / "out").exists()
