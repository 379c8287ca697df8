"""The statistics behind every interval and paired test (cloob.benchmarks.reporting.stats), checked
against
closed forms: the bootstrap of a 0/1 mean is exactly Binomial(n, p̂)/n, and the exact McNemar
test is scipy's two-sided binomial test on the discordant images (and a table worked by hand)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from cloob.benchmarks.reporting import report, stats


def test_bootstrap_interval_of_an_accuracy_is_the_binomial_quantiles():
    n, k = 400, 283  # 70.75% correct
    correct = np.zeros(n)
    correct[:k] = 1
    lo, hi = stats.intervals({"acc": stats.mean_of(correct)}, n, 20000, seed=3)["acc"]
    p = k / n
    # each replicate's mean is Binomial(n, p̂)/n: its quantiles are binom.ppf / n
    assert abs(lo - binom.ppf(0.025, n, p) / n) <= 1.5 / n
    assert abs(hi - binom.ppf(0.975, n, p) / n) <= 1.5 / n
    # and close to the normal approximation at this n
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert abs(lo - (p - half)) < 0.006 and abs(hi - (p + half)) < 0.006


def test_intervals_are_seeded_and_chunking_does_not_change_them(monkeypatch):
    correct = (np.arange(1000) % 3 == 0).astype(float)
    one = stats.intervals({"a": stats.mean_of(correct)}, 1000, 500, seed=7)
    assert one == stats.intervals({"a": stats.mean_of(correct)}, 1000, 500, seed=7)
    assert one != stats.intervals({"a": stats.mean_of(correct)}, 1000, 500, seed=8)
    assert stats.intervals({"a": stats.mean_of(correct)}, 1000, 0) == {}


def test_mean_per_class_statistic_is_the_metric_on_the_identity_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    correct = rng.random(300) < 0.6
    recall = np.mean([correct[labels == c].mean() for c in np.unique(labels)])
    value = stats.mean_per_class_of(correct, labels)(np.arange(300)[None, :])
    assert value[0] == pytest.approx(recall, abs=1e-12)


def test_mcnemar_hand_computed_table():
    # a right / b wrong on 1 image, b right / a wrong on 9, 20 concordant:
    # p = 2 · P(X ≤ 1 | n=10, ½) = 2 · (1 + 10) / 1024
    a = np.array([1] * 1 + [0] * 9 + [1] * 10 + [0] * 10)
    b = np.array([0] * 1 + [1] * 9 + [1] * 10 + [0] * 10)
    test = stats.mcnemar_exact(a, b)
    assert (test["a_only"], test["b_only"]) == (1, 9)
    assert test["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert stats.mcnemar_exact(a, a)["p_value"] == 1.0


@pytest.mark.parametrize(
    ("a_only", "b_only"), [(0, 5), (3, 4), (17, 40), (250, 310), (20000, 20400)]
)
def test_mcnemar_equals_scipy_binomtest(a_only, b_only):
    a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(7)]
    b = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(7)]
    expected = binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert stats.mcnemar_exact(a, b)["p_value"] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_paired_difference_interval_and_sign():
    rng = np.random.default_rng(1)
    a = (rng.random(2000) < 0.75).astype(int)
    b = np.where(rng.random(2000) < 0.1, 1 - a, a)  # b flips 10% of a's outcomes
    test = stats.paired(a, b, 2000)
    assert test["difference"] == pytest.approx(a.mean() - b.mean())
    lo, hi = test["interval"]
    assert lo <= test["difference"] <= hi
    # the paired interval is narrower than the unpaired sum of variances would give
    unpaired = 1.96 * math.sqrt(a.mean() * (1 - a.mean()) / 2000 + b.mean() * (1 - b.mean()) / 2000)
    assert (hi - lo) / 2 < unpaired


def _record(label: str, correct: np.ndarray) -> tuple[dict, stats.Items]:
    labels = np.zeros(len(correct), dtype=int)
    topk = np.where(correct[:, None], 0, 1) * np.ones((1, 2), dtype=int)
    items = stats.classification_items(np.arange(len(correct)), labels, topk)
    record = {
        "label": label,
        "model": "m",
        "method": "clip",
        "dataset": "d",
        "n_images": len(correct),
        "n_classes": 2,
        "headline": "acc1",
        "precision": "fp32",
        "metrics": {
            "acc1": correct.mean(),
            "acc5": correct.mean(),
            "mean_per_class_recall": correct.mean(),
        },
    }
    stats.attach_intervals(record, items, 300)
    record[stats.ITEMS] = items
    return record, items


def test_report_carries_intervals_and_paired_tests(tmp_path):
    a, _ = _record("a", np.r_[np.ones(60), np.zeros(40)].astype(bool))
    b, _ = _record("b", np.r_[np.ones(45), np.zeros(55)].astype(bool))
    written = report.write_all([a, b], tmp_path)
    data = json.loads(written["json"].read_text())
    assert [stats.ITEMS not in r for r in data["records"]] == [True, True]
    (pair,) = data["comparisons"]
    assert (
        pair["a_only"] == 15 and pair["b_only"] == 0 and pair["difference"] == pytest.approx(0.15)
    )
    assert pair["p_value"] == pytest.approx(binomtest(15, 15, 0.5).pvalue)
    lo, hi = data["records"][0]["intervals"]["acc1"]
    assert lo < 0.6 < hi
    md = written["md"].read_text()
    assert (
        "## Paired comparisons (same images)" in md
        and f"| {60:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" in md
    )
    assert {"acc1_lo", "acc1_hi"} <= set(written["csv"].read_text().splitlines()[0].split(","))
    assert written["comparisons"].is_file() and written["png"].is_file()


def test_classification_cells_give_the_metrics_and_the_binomial_interval():
    """The multinomial cell path: on the observed counts it is the metric itself; its top-1
    interval is the same Binomial(n, p̂)/n closed form."""
    from cloob.benchmarks.tasks.zeroshot.protocol import Predictions, metrics

    rng = np.random.default_rng(2)
    n, k = 600, 7
    labels = rng.integers(0, k, n)
    topk = np.stack([rng.permutation(k)[:5] for _ in range(n)])
    topk[:, 0] = np.where(rng.random(n) < 0.55, labels, topk[:, 0])
    items = stats.classification_items(np.arange(n), labels, topk)
    expected = metrics(Predictions(labels, topk, np.zeros_like(topk, dtype=float), 0.0))
    for name, fn in items.statistics.items():
        assert fn(items.cells[None, :])[0] == pytest.approx(expected[name], abs=1e-12), name
    lo, hi = stats.intervals(items.statistics, n, 20000, seed=1, cells=items.cells)["acc1"]
    p = expected["acc1"]
    assert abs(lo - binom.ppf(0.025, n, p) / n) <= 1.5 / n
    assert abs(hi - binom.ppf(0.975, n, p) / n) <= 1.5 / n
