"""Embedding geometry: fixed points of each metric, the CLI's files for two checkpoints, bad
input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cloob.benchmarks.reporting import report
from cloob.benchmarks.tasks.analyze import (
    alignment,
    effective_rank,
    first_captions,
    geometry,
    hardest_negative,
    spectrum,
    uniformity,
)
from support.benchmark_data import write_tiny_checkpoint
from support.shards import write_shards

from .conftest import record_problems


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_fixed_points():
    x = np.eye(4)
    assert alignment(x, x) == 0.0 and alignment(x, -x) == 4.0
    # orthonormal points: every pair at squared distance 2 → log exp(-4) = -4
    assert uniformity(x) == pytest.approx(-4.0)
    # all points equal: the most concentrated configuration, uniformity 0 (its maximum)
    assert uniformity(np.tile([[1.0, 0, 0]], (5, 1))) == pytest.approx(0.0)
    # isotropic spectrum → effective rank = dimension; one direction → 1
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.array([3.0, 0, 0])) == pytest.approx(1.0)
    # ±e1, ±e2: covariance diag(0.5, 0.5, 0) with the n-1 normalisation 4/3 · 0.5
    assert spectrum(np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])) == pytest.approx(
        [2 / 3, 2 / 3, 0]
    )
    # hardest negative: the largest off-diagonal similarity of each row
    y = _unit(np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]))
    assert hardest_negative(y, y) == pytest.approx((0.6 + 0.8 + 0.8) / 3)


def test_gap_and_cosines_on_a_shifted_copy():
    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(50, 8)))
    shift = np.zeros(8)
    shift[0] = 3.0
    y = _unit(
        x + shift
    )  # captions = images pushed towards one direction: a modality gap, high positives
    metrics, spectra = geometry(x, y)
    assert metrics["modality_gap"] == pytest.approx(np.linalg.norm(x.mean(0) - y.mean(0)))
    assert metrics["modality_gap"] > 0.5 and metrics["positive_cosine"] == pytest.approx(
        np.mean(np.sum(x * y, 1))
    )
    assert (
        metrics["uniformity_text"] > metrics["uniformity_image"]
    )  # the pushed copy is more concentrated
    assert metrics["effective_rank_text"] < metrics["effective_rank_image"] <= 8
    assert len(spectra["image"]) == 8 and math.isclose(
        sum(spectra["image"]), np.trace(np.cov(x.T)), rel_tol=1e-6
    )


def test_first_caption_of_each_image():
    assert first_captions(np.array([0, 0, 1, 2, 2, 2]), 3).tolist() == [0, 2, 3]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    out = []
    for seed, method in ((1, "clip"), (2, "cloob")):
        path = folder / f"{method}.pt"
        out.append(write_tiny_checkpoint(path, seed, method))
    return out


def test_cli_two_checkpoints(cli, tmp_path, ckpts):
    shards = write_shards(tmp_path / "val", 1, 16, seed=2)
    out = tmp_path / "out"
    code, _, err = cli(
        "analyze",
        "--ckpt",
        ckpts[0],
        "--ckpt",
        ckpts[1],
        "--data",
        shards,
        "--max-images",
        "12",
        "--out",
        out,
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    analysis = json.loads((out / "analysis.json").read_text())["records"]
    assert all(record_problems(r, report.AnalyzeRecord) == [] for r in analysis)
    assert [r["label"] for r in analysis] == ["clip", "cloob"] and analysis[0]["n_images"] == 12
    assert len(analysis[0]["spectra"]["image"]) == 32 and len(analysis[0]["projection"]["xy"]) == 24
    results = json.loads((out / "results.json").read_text())["records"]
    assert (
        "spectra" not in results[0]
        and results[0]["checkpoint_sha256"]
        and "alignment" in results[0]["protocol"]
    )
    assert set(results[0]["metrics"]) == {
        "alignment",
        "uniformity_image",
        "uniformity_text",
        "modality_gap",
        "effective_rank_image",
        "effective_rank_text",
        "positive_cosine",
        "hardest_negative_cosine_i2t",
        "hardest_negative_cosine_t2i",
    }
    assert "eff. rank img" in (out / "results.md").read_text() and (out / "results.csv").is_file()
    for png in ("spectra.png", "projection.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--projection", "tsne"], "unknown projection 'tsne'"),
        (["--projection", "umap"], "needs umap-learn"),
        (["--max-images", "2"], "Invalid value for '--max-images'"),
        ([], "give --data (dataprep folder or shards) or --karpathy"),
    ],
)
def test_bad_input(cli, tmp_path, ckpts, args, message):
    if "umap" in args:
        try:
            import umap  # noqa: F401

            pytest.skip("umap-learn is installed here")
        except ImportError:
            pass
    code, _, err = cli("analyze", "--ckpt", ckpts[0], "--out", tmp_path / "out", *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
