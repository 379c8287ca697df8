"""The linear-probe protocol: λ search, validation carve, clip_benchmark parity, the CLI, bad
input."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from cloob.benchmarks.data.images import ImageList
from cloob.benchmarks.data.probe_data import folder_probe
from cloob.benchmarks.models.features import encode_images, image_feature_mode
from cloob.benchmarks.options import in_process
from cloob.benchmarks.reporting import report
from cloob.benchmarks.tasks.linear_probe.protocol import (
    GRID,
    ProbeConfig,
    carve_validation,
    probe,
    search_lambda,
)
from support.benchmark_data import tiny_model, tiny_preprocess, write_tiny_checkpoint, write_tree
from support.probe_data import class_image, class_split

from .conftest import record_problems

CLASSES = [f"class_{c}" for c in range(6)]


def test_search_follows_clips_schedule_to_the_peak():
    peak = 57  # any index: a single-peaked validation curve must be found exactly
    calls = []

    def evaluate(lam: float) -> float:
        calls.append(lam)
        return -abs(int(np.argmin(np.abs(GRID - lam))) - peak)

    index, trace = search_lambda(evaluate)
    assert index == peak and len(GRID) == 97 and GRID[0] == 1e-6 and GRID[-1] == 1e6
    assert calls[:7] == pytest.approx([1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6])
    assert len(calls) == len(set(calls)) <= 15 and len(trace) == len(calls)  # each λ fitted once


def test_ties_go_to_the_larger_lambda():
    index, _ = search_lambda(lambda lam: 1.0)
    assert GRID[index] == 1e6


def test_carved_validation_keeps_every_class_in_train():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    train, val = carve_validation(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val])) == list(range(14))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert set(labels[train]) == {0, 1, 2}
    assert carve_validation(labels, 0.2, seed=0)[1].tolist() == val.tolist()  # seeded


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    write_tree(root / "train", class_split(CLASSES, 8, seed=1, noise=3))
    write_tree(root / "test", class_split(CLASSES, 6, seed=2, noise=3))
    return root


def _features(model, data, kind="pre-projection"):
    with image_feature_mode(model, kind):
        return [
            encode_images(model, ImageList(t.samples, tiny_preprocess()), in_process())
            for t in (data.train, data.test)
        ]


def test_feature_kinds(pair):
    model = tiny_model(0)
    data = folder_probe(pair / "train", pair / "test")
    pre, _ = _features(model, data)
    emb, _ = _features(model, data, "embedding")
    assert pre.x.shape == (48, 64) and emb.x.shape == (48, 32)  # ViT width 64, embed_dim 32
    assert np.allclose(
        pre.x @ model.visual.proj.detach().numpy(), emb.x, atol=1e-5
    )  # proj put back
    assert isinstance(model.visual.proj, torch.nn.Parameter)


def _clip_benchmark_probe(monkeypatch, train_x, train_y, val_x, val_y, test_x, test_y, epochs):
    """clip_benchmark's sweep + final fit (its `evaluate` minus featurising), on CPU.

    Its code moves everything with `.cuda()` (a no-op here) and its accuracy helper breaks on
    numpy >= 2.4 (shared/reference/peers.md), so both are replaced for the duration."""
    from clip_benchmark.metrics import linear_probe as lp
    from torch.utils.data import DataLoader

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)

    def accuracy(logits, target, topk=(1,)):
        top = logits.topk(max(topk), 1).indices
        return [(top[:, :k] == target[:, None]).any(1).float().mean().item() for k in topk]

    monkeypatch.setattr(lp, "accuracy", accuracy)

    def loader(x, y, shuffle=True):
        return DataLoader(
            lp.FeatureDataset(torch.tensor(x), torch.tensor(y)), batch_size=64, shuffle=shuffle
        )

    n_in, n_out = train_x.shape[1], int(train_y.max()) + 1
    args = dict(
        input_shape=n_in,
        output_shape=n_out,
        lr=0.1,
        epochs=epochs,
        amp=False,
        device="cpu",
        verbose=False,
        seed=0,
    )
    wd = np.logspace(-6, 2, num=97).tolist()
    start = [i for i, v in enumerate(wd) if v in np.logspace(-6, 2, num=7).tolist()]
    train, val = loader(train_x, train_y), loader(val_x, val_y)
    peak, span = lp.find_peak(wd, start, train, val, **args), 8
    while span > 0:
        peak = lp.find_peak(
            wd, [max(peak - span, 0), peak, min(peak + span, len(wd) - 1)], train, val, **args
        )
        span //= 2
    final = lp.train(
        loader(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])),
        n_in,
        n_out,
        wd[peak],
        0.1,
        epochs,
        False,
        "cpu",
        0,
    )
    logits, target = lp.infer(final, loader(test_x, test_y, shuffle=False), False, "cpu")
    return (logits.argmax(1) == target).float().mean().item()


def test_parity_with_clip_benchmark(tmp_path, monkeypatch):
    """Same features, same train/val/test: our L-BFGS probe within 0.5 points of
    clip_benchmark's."""
    folders = [f"c{c}" for c in range(8)]
    write_tree(tmp_path / "train", class_split(folders, 25, seed=1, noise=2))
    test = class_split(folders, 24, seed=2, noise=2)
    # every class gets 4 test images drawn like another class: no probe can get those right, so the
    # accuracy is not 100% and both probes must agree on what is learnable
    for c, folder in enumerate(folders):
        for i in range(4):
            test[f"{folder}/wrong_{i}.png"] = class_image(
                (c + 1 + i) % len(folders), 10_000 + 10 * c + i, noise=2
            )
    write_tree(tmp_path / "test", test)
    data = folder_probe(tmp_path / "train", tmp_path / "test")
    train, test_f = _features(tiny_model(0), data)
    tr, va = carve_validation(train.labels, 0.2, seed=0)
    ours = probe(train.x, train.labels, test_f.x, test_f.labels, ProbeConfig())
    theirs = _clip_benchmark_probe(
        monkeypatch,
        train.x[tr],
        train.labels[tr],
        train.x[va],
        train.labels[va],
        test_f.x,
        test_f.labels,
        epochs=15,
    )
    assert len(test_f.labels) == 224 and ours.n_train == len(tr) and ours.n_val == len(va)
    assert 0.5 < ours.metrics["acc1"] < 1.0
    print(f"parity: ours {100 * ours.metrics['acc1']:.2f}%  clip_benchmark {100 * theirs:.2f}%")
    assert abs(100 * ours.metrics["acc1"] - 100 * theirs) <= 0.5, (ours.metrics["acc1"], theirs)


def _save_ckpt(path, seed=1, method="clip"):
    return write_tiny_checkpoint(path, seed, method, epoch=1, step=10)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _save_ckpt(tmp_path_factory.mktemp("ckpt") / "clip_run.pt")


def test_cli_folder_pair_writes_results_and_reuses_cached_features(cli, pair, ckpt, tmp_path):
    out = tmp_path / "out"
    args = (
        "linear-probe",
        "--ckpt",
        ckpt,
        "--train-dir",
        pair / "train",
        "--test-dir",
        pair / "test",
        "--out",
        out,
        "--workers",
        "0",
        "--no-progress",
        "--compare-paper",
        "yfcc-rn50-linear",
    )
    code, _, err = cli(*args)
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert record_problems(record, report.ProbeRecord) == []
    assert record["task"] == "linear_probe" and record["dataset"] == pair.name
    assert (record["n_train"], record["n_val"], record["n_images"], record["n_classes"]) == (
        36,
        12,
        36,
        6,
    )
    assert record["features"] == "pre-projection" and record["feature_dim"] == 64
    assert "before visual.proj" in record["feature_description"] and "L-BFGS" in record["protocol"]
    assert (
        record["checkpoint_sha256"]
        and "scikit-learn" in record["software"]
        and record["precision"] == "fp32"
    )
    assert 1e-6 <= record["lambda"] <= 1e6 and len(record["lambda_search"]) <= 15
    assert record["features_cached"] == {"train": False, "test": False}
    assert "# Linear-probe results" in (out / "results.md").read_text()
    assert {"features", "lambda"} <= set(pd.read_csv(out / "results.csv").columns)
    side = pd.read_csv(out / "side_by_side.csv", index_col=0)
    assert list(side.columns) == [
        "clip_run",
        "paper yfcc-rn50-linear CLIP",
        "paper yfcc-rn50-linear CLOOB",
    ]
    assert len(list((out / ".features").glob("*.npz"))) == 2

    code, _, err = cli(*args)  # the second probe reads the features from the cache
    again = json.loads((out / "results.json").read_text())["records"][0]
    assert code == 0 and again["features_cached"] == {"train": True, "test": True}
    assert again["metrics"] == record["metrics"] and again["lambda"] == record["lambda"]

    code, _, err = cli(*args[:-2], "--features", "embedding", "--out", tmp_path / "emb")
    emb = json.loads((tmp_path / "emb" / "results.json").read_text())["records"][0]
    assert code == 0 and emb["feature_dim"] == 32 and emb["features"] == "embedding"


def _bad_inputs(tmp_path, pair):
    write_tree(tmp_path / "fewer", class_split(CLASSES[:4], 2, seed=5))
    write_tree(tmp_path / "other", class_split([c.upper() + "x" for c in CLASSES], 2, seed=5))
    (tmp_path / "noimages" / "class_0").mkdir(parents=True)
    (tmp_path / "root").mkdir()
    return {
        "missing test split": (
            ["--train-dir", pair / "train", "--test-dir", tmp_path / "nope"],
            "no such test folder",
        ),
        "train without test": (
            ["--train-dir", pair / "train"],
            "--train-dir and --test-dir go together",
        ),
        "no images": (
            ["--train-dir", tmp_path / "noimages", "--test-dir", tmp_path / "noimages"],
            "no images found",
        ),
        "class-count mismatch": (
            ["--train-dir", pair / "train", "--test-dir", tmp_path / "fewer"],
            "class-count mismatch: 6 class folders in train",
        ),
        "different classes": (
            ["--train-dir", pair / "train", "--test-dir", tmp_path / "other"],
            "train and test class folders differ",
        ),
        "no train split": (
            ["--datasets", "birdsnap", "--root", tmp_path / "root"],
            "birdsnap has no train split under",
        ),
        "imagenetv2 needs imagenet train": (
            ["--datasets", "imagenetv2", "--root", tmp_path / "root"],
            "benchmarks fetch imagenet --root",
        ),
        "nothing to probe": (
            ["--datasets", "all", "--root", tmp_path / "root"],
            "nothing to probe",
        ),
        "unknown dataset": (
            ["--datasets", "mnist", "--root", tmp_path / "root"],
            "unknown dataset 'mnist'",
        ),
        "bad precision": (["--precision", "fp8"], "unknown precision"),
        "bad feature kind": (["--features", "logits"], "unknown feature kind"),
        "bad paper key": (["--compare-paper", "laion"], "unknown paper setting"),
    }


BAD = [
    "missing test split",
    "train without test",
    "no images",
    "class-count mismatch",
    "different classes",
    "no train split",
    "imagenetv2 needs imagenet train",
    "nothing to probe",
    "unknown dataset",
    "bad precision",
    "bad feature kind",
    "bad paper key",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_matrix(cli, tmp_path, pair, ckpt, case):
    """input → exit 2, one `error:` line naming the problem, no result files."""
    args, message = _bad_inputs(tmp_path, pair)[case]
    out = tmp_path / "out"
    code, _, err = cli(
        "linear-probe", "--ckpt", ckpt, "--out", out, "--workers", "0", "--no-progress", *args
    )
    lines = err.strip().splitlines()
    assert (
        (code, len(lines)) == (2, 1) and lines[0].startswith("error: ") and message in lines[0]
    ), err
    assert not out.exists()


def test_an_unconverged_fit_is_warned_about_and_marked(cli, pair, ckpt, tmp_path):
    """--max-iter 1 cannot converge: one warning line for the (checkpoint, dataset), and the
    headline cell marked † with its footnote in the printed table and results.md."""
    out = tmp_path / "out"
    code, stdout, err = cli(
        "linear-probe",
        "--ckpt",
        ckpt,
        "--train-dir",
        pair / "train",
        "--test-dir",
        pair / "test",
        "--out",
        out,
        "--workers",
        "0",
        "--no-progress",
        "--max-iter",
        "1",
    )
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert record["converged"] is False and record["iterations"] == 1
    assert record["unconverged_search_fits"] == len(record["lambda_search"])
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1
        and f"clip_run · {pair.name}" in warnings[0]
        and "--max-iter 1 " in warnings[0]
    )
    markdown = (out / "results.md").read_text()
    # the bold headline cell (value and its interval), then the mark
    headline = re.search(r"\*\*(\d+\.\d+)[^*]*\*\*†", markdown)
    assert headline and headline[1] == f"{100 * record['metrics']['acc1']:.2f}", markdown
    assert "† the final L-BFGS fit" in markdown
    assert "†" in stdout and "† the final L-BFGS fit" in stdout


def test_warm_starts_change_the_path_not_the_optimum():
    """A fit started from another λ's solution ends where a cold fit does (a strictly convex
    objective: the same minimum, to L-BFGS's stopping tolerance) in fewer iterations; a start for
    another label set is not used."""
    from cloob.benchmarks.tasks.linear_probe.protocol import fit

    rng = np.random.default_rng(0)
    y = np.arange(300) % 4
    x = rng.standard_normal((300, 20)) + 2.0 + rng.standard_normal((4, 20))[y]
    lam = 0.75

    def objective(model) -> float:  # sklearn's: mean log loss + ||W||² / (2 C n)
        proba = model.predict_proba(x)[np.arange(len(y)), np.searchsorted(model.classes_, y)]
        return float(-np.log(proba).mean() + lam * (model.coef_**2).sum() / (2 * len(y)))

    near, _ = fit(x, y, 1.0, 1000)
    cold, cold_ok = fit(x, y, lam, 1000)
    warm, warm_ok = fit(x, y, lam, 1000, (near.coef_, near.intercept_, near.classes_))
    assert cold_ok and warm_ok and warm.n_iter_[0] < cold.n_iter_[0]
    assert objective(warm) == pytest.approx(objective(cold), rel=1e-3)
    other, _ = fit(x[y < 3], y[y < 3], 1.0, 1000)  # three classes: not a start for four
    again, ok = fit(x, y, lam, 1000, (other.coef_, other.intercept_, other.classes_))
    assert ok and again.n_iter_[0] == cold.n_iter_[0]
