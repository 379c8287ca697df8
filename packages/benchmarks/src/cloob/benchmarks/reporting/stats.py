"""Uncertainty for every benchmark number: percentile bootstrap intervals over the test images, and
paired comparisons of two checkpoints on the same images (bootstrap difference + exact McNemar).

The bootstrap resamples test items (images; queries for retrieval) with replacement, `n_boot`
times from one seeded generator, and recomputes the metric from the predictions already made (no
model runs again). The same resampled indices serve every metric of one evaluation and both sides
of a paired difference, so the pair's correlation is kept. Replicates are drawn in chunks so that
memory stays O(chunk · n), whatever `n_boot` is.

Where a metric depends only on how many items fall in each of a few cells (classification: class ×
{top-1 right, only top-k right, wrong}; a pair: a right/wrong × b right/wrong), resampling n items
is the same as drawing the cell counts from Multinomial(n, cell frequencies): O(cells) per
replicate instead of O(n), which keeps 1000 resamples of ImageNet's 50,000 images well under 5%
of its evaluation.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from cloob.benchmarks.reporting.report import BaseRecord, WritableRecords

DEFAULT_SEED = 0
LEVEL = 0.95
ITEMS: Final = (
    "_items"  # the record key under which a runner hands its Items to the report (not saved)
)
_CHUNK_ELEMENTS = 1 << 22  # indices per chunk of replicates (32 MiB of int64)


def resamples(n: int, n_boot: int, seed: int = DEFAULT_SEED) -> Iterator[np.ndarray]:
    """(rows, n) index arrays, rows summing to n_boot: the same stream for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // max(1, n))
    done = 0
    while done < n_boot:
        take = min(rows, n_boot - done)
        yield rng.integers(0, n, size=(take, n))
        done += take


def cell_resamples(
    cell_counts: np.ndarray, n_boot: int, seed: int = DEFAULT_SEED
) -> Iterator[np.ndarray]:
    """(rows, cells) counts of a resample of the n = Σ cell_counts items, rows summing to n_boot."""
    rng = np.random.default_rng(seed)
    cell_counts = np.asarray(cell_counts, dtype=np.int64)
    n = int(cell_counts.sum())
    rows = max(1, _CHUNK_ELEMENTS // max(1, len(cell_counts)))
    done = 0
    while done < n_boot:
        take = min(rows, n_boot - done)
        yield rng.multinomial(n, cell_counts / n, size=take)
        done += take


def bootstrap(
    statistics: dict[str, Callable[[np.ndarray], np.ndarray]],
    n: int,
    n_boot: int,
    seed: int = DEFAULT_SEED,
    cells: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each statistic maps a (rows, n) index array, or with `cells` (the items per cell) a
    (rows, cells) count array, to (rows,) values; → name → (n_boot,) replicates."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    draws = resamples(n, n_boot, seed) if cells is None else cell_resamples(cells, n_boot, seed)
    for idx in draws:
        for name, fn in statistics.items():
            out[name].append(np.asarray(fn(idx), dtype=np.float64))
    return {name: np.concatenate(v) if v else np.empty(0) for name, v in out.items()}


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> list[float]:
    """[lo, hi]: the (1 − level)/2 and (1 + level)/2 quantiles of the replicates."""
    if replicates.size == 0:
        return [math.nan, math.nan]
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def mean_of(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: the mean of a per-item value (e.g. 0/1 correct) over the resampled items."""
    values = np.asarray(values, dtype=np.float64)
    return lambda idx: values[idx].mean(axis=1)


def mean_per_class_of(
    correct: np.ndarray, labels: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: recall averaged over the classes present in the resample (as the metric does)."""
    correct = np.asarray(correct, dtype=np.float64)
    classes, inverse = np.unique(labels, return_inverse=True)
    k = len(classes)

    def fn(idx: np.ndarray) -> np.ndarray:
        rows = np.arange(idx.shape[0])[:, None]
        flat = (rows * k + inverse[idx]).ravel()
        hits = np.bincount(flat, weights=correct[idx].ravel(), minlength=idx.shape[0] * k)
        counts = np.bincount(flat, minlength=idx.shape[0] * k)
        hits, counts = hits.reshape(-1, k), counts.reshape(-1, k)
        present = counts > 0
        return np.where(present, hits / np.maximum(counts, 1), 0).sum(1) / present.sum(1)

    return fn


def intervals(
    statistics: dict[str, Callable[[np.ndarray], np.ndarray]],
    n: int,
    n_boot: int,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
    cells: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """name → [lo, hi] (empty when n_boot is 0: --bootstrap 0 turns the intervals off)."""
    if n_boot <= 0 or n == 0:
        return {}
    reps = bootstrap(statistics, n, n_boot, seed, cells)
    return {name: percentile_interval(r, level) for name, r in reps.items()}


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, float | int]:
    """Exact (binomial) McNemar test on paired 0/1 outcomes of the same items.

    Only the discordant items count: a_only (a right, b wrong) and b_only. Under H0 each is
    a_only ~ Binomial(a_only + b_only, ½); the two-sided p-value is min(1, 2 · P(X ≤ min)),
    summed in log space so that tens of thousands of discordant items do not underflow."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    top = max(log_terms)
    log_tail = top + math.log(sum(math.exp(t - top) for t in log_terms))
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2.0 * math.exp(log_tail))}


def paired(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    n_boot: int,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict:
    """a − b in top-1 on the same items: the difference, its bootstrap interval and McNemar."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    n = len(a)
    # cells: (a, b) = (wrong, wrong), (wrong, right), (right, wrong), (right, right)
    cells = np.bincount(2 * a.astype(np.int64) + b, minlength=4)
    diff = {"d": lambda w: (w[:, 2] - w[:, 1]) / n}
    return {
        "n_items": int(n),
        "difference": float(a.mean() - b.mean()),
        "interval": intervals(diff, n, n_boot, seed, level, cells).get("d"),
        **mcnemar_exact(a, b),
    }


def format_interval(
    value: float, interval: list[float] | None, scale: float = 100.0, digits: int = 2
) -> str:
    """'96.50 [95.17, 97.67]' (percent by default); just the value without an interval."""
    if not interval:
        return f"{scale * value:.{digits}f}"
    lo, hi = interval
    return f"{scale * value:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


# ---------------------------------------------------------------- the reports' glue


def ratio_of(numer: np.ndarray, denom: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: Σ numer / Σ denom over the resampled items (a per-image count of hits over a
    per-image count of captions: resampling images keeps each image's captions together)."""
    numer, denom = np.asarray(numer, dtype=np.float64), np.asarray(denom, dtype=np.float64)
    return lambda idx: numer[idx].sum(axis=1) / np.maximum(denom[idx].sum(axis=1), 1e-300)


def average_of(*fns: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda idx: np.mean([fn(idx) for fn in fns], axis=0)


@dataclass
class Items:
    """What a report keeps of one evaluation for its intervals and paired tests: the item ids
    (positions in the dataset, so two checkpoints pair on the same images), the metric
    statistics, and the per-item 0/1 outcome that McNemar pairs (`paired_metric`)."""

    ids: np.ndarray
    statistics: dict[str, Callable[[np.ndarray], np.ndarray]]
    outcome: np.ndarray
    paired_metric: str = "acc1"
    cells: np.ndarray | None = None  # items per cell, when the statistics read cell counts


def classification_items(ids: np.ndarray, labels: np.ndarray, topk: np.ndarray) -> Items:
    """Zero-shot and linear-probe: top-1, top-k (k = the columns of `topk`) and mean-per-class,
    read from cell counts: cell 3·c + o for class c and o = 0 (top-1 right), 1 (only top-k), 2."""
    correct1 = topk[:, 0] == labels
    correctk = (topk == labels[:, None]).any(axis=1)
    _, klass = np.unique(labels, return_inverse=True)
    k = int(klass.max()) + 1
    outcome = np.where(correct1, 0, np.where(correctk, 1, 2))
    cells = np.bincount(3 * klass + outcome, minlength=3 * k)
    n = len(labels)

    def per_class(w: np.ndarray) -> np.ndarray:
        w = w.reshape(w.shape[0], k, 3)
        counts = w.sum(axis=2)
        present = counts > 0
        return np.where(present, w[:, :, 0] / np.maximum(counts, 1), 0).sum(1) / present.sum(1)

    statistics: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "acc1": lambda w: w.reshape(w.shape[0], k, 3)[:, :, 0].sum(1) / n,
        "acc5": lambda w: w.reshape(w.shape[0], k, 3)[:, :, :2].sum((1, 2)) / n,
        "mean_per_class_recall": per_class,
    }
    return Items(np.asarray(ids), statistics, correct1.astype(np.int8), cells=cells)


def attach_intervals(
    record: BaseRecord | dict[str, Any], items: Items, n_boot: int, seed: int = DEFAULT_SEED
) -> None:
    """record["intervals"] (metric → [lo, hi]) and record["bootstrap"] (how, and what it cost)."""
    started = time.perf_counter()
    record["intervals"] = intervals(
        items.statistics, len(items.ids), n_boot, seed, cells=items.cells
    )
    record["bootstrap"] = {
        "resamples": n_boot,
        "seed": seed,
        "level": LEVEL,
        "unit": "test image",
        "seconds": round(time.perf_counter() - started, 4),
    }


def comparisons(
    records: Sequence[Mapping[str, Any]],
    items: list[Items | None],
    n_boot: int,
    seed: int = DEFAULT_SEED,
) -> list[dict]:
    """Every pair of checkpoints evaluated on the same dataset: a − b in the paired metric on the
    images both evaluated (matched by id), its bootstrap interval and the exact McNemar p-value."""
    out = []
    for i, j in itertools.combinations(range(len(records)), 2):
        a, b, items_a, items_b = records[i], records[j], items[i], items[j]
        if (
            a["dataset"] != b["dataset"]
            or a["label"] == b["label"]
            or items_a is None
            or items_b is None
        ):
            continue
        common, ia, ib = np.intersect1d(items_a.ids, items_b.ids, return_indices=True)
        test = paired(items_a.outcome[ia], items_b.outcome[ib], n_boot, seed)
        out.append(
            {
                "dataset": a["dataset"],
                "a": a["label"],
                "b": b["label"],
                "metric": items_a.paired_metric,
                "a_value": float(items_a.outcome[ia].mean()),
                "b_value": float(items_b.outcome[ib].mean()),
                **test,
            }
        )
    return out


def comparisons_markdown(rows: list[dict]) -> list[str]:
    """The Markdown section for `comparisons` (empty when there is nothing to compare)."""
    if not rows:
        return []
    lines = [
        "",
        "## Paired comparisons (same images)",
        "",
        "a − b in percentage points with its 95% bootstrap interval; McNemar: exact two-sided "
        "p-value on the images one got right and the other wrong.",
        "",
        "| dataset | metric | a | b | a − b (pp) | a only | b only | McNemar p |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['metric']} | {r['a']} | {r['b']} | "
            f"{format_interval(r['difference'], r['interval'])} | {r['a_only']} | "
            f"{r['b_only']} | {r['p_value']:.3g} |"
        )
    return lines


def take_items(records: WritableRecords) -> list[Items | None]:
    """Remove the runners' Items from the records (they are not JSON) and return them in order."""
    return [r.pop(ITEMS, None) for r in records]


def resamples_of(records: Sequence[Mapping[str, Any]]) -> int:
    return max((r.get("bootstrap", {}).get("resamples", 0) for r in records), default=0)
