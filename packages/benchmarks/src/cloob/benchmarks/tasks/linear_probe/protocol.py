"""CLIP's linear-probe protocol on frozen features (Radford et al. 2021, appendix A.3).

Multinomial logistic regression fitted with scikit-learn's L-BFGS (at most 1,000 iterations; each
fit
warm-started from the solution at the nearest λ already fitted, which changes how fast a fit
converges, not where: the objective is strictly convex). The L2
strength λ (sklearn's C = 1/λ) is picked on a validation split — the dataset's own, else one carved
from train — by CLIP's parametric search: λ on 97 log-spaced values from 1e-6 to 1e6 (8 per decade),
first the 7 values 1e-6, 1e-4, …, 1e6, then the interval around the best halved until neighbours are
one grid step apart. The final classifier is refitted on train + validation and scored on test.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cloob.common.cli import UsageError

GRID = np.logspace(-6, 6, 97)  # 8 steps per decade
FIRST_STEP = 16  # the first pass: every second decade (indices 0, 16, …, 96)
TOPK = 5

PROTOCOL = (
    "CLIP linear probe: frozen {feature} image features; scikit-learn L-BFGS multinomial logistic "
    "regression (max_iter {max_iter}); L2 strength λ (C = 1/λ) chosen on {val} by CLIP's "
    "parametric "
    "search over 97 log-spaced λ in [1e-6, 1e6] (start 1e-6, 1e-4, …, 1e6, halve the interval "
    "around the peak down to 8 steps per decade), selection metric {metric}; refit on train + "
    "validation; top-1, top-5 and mean-per-class recall on test"
)


@dataclass
class ProbeConfig:
    max_iter: int = 1000
    val_fraction: float = (
        0.2  # share of each class moved from train to validation when none is given
    )
    seed: int = 0
    select_metric: str = "acc1"  # the dataset's headline metric decides λ


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    lam: float
    search: list[dict] = field(default_factory=list)  # every λ tried: value, validation score
    n_train: int = 0
    n_val: int = 0
    converged: bool = True  # the final fit stopped on its tolerance, not at max_iter
    predictions: np.ndarray | None = None  # test predictions (top-1)
    topk: np.ndarray | None = None  # (N, k) test predictions, best first (the intervals' input)
    iterations: int = 0  # L-BFGS iterations of the final fit

    @property
    def unconverged_search_fits(self) -> int:
        return sum(not step.get("converged", True) for step in self.search)


def carve_validation(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of every class, seeded, at least one image of
    each class left in train (a class absent from train can never be predicted)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(int(round(fraction * len(idx))), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def check_labels(
    train_y: np.ndarray, val_fraction: float, has_val: bool, name: str = "train split"
) -> None:
    """Refuse, in one line, train labels no probe can be fitted on: a single class, or (without a
    validation split of its own) no class large enough to give an image to the carved one."""
    counts = np.unique(np.asarray(train_y), return_counts=True)[1]
    if len(counts) < 2:
        raise UsageError(
            f"{name}: a linear probe needs train images of at least 2 classes, found {len(counts)}"
        )
    if not has_val and not any(min(int(round(val_fraction * n)), n - 1) > 0 for n in counts):
        raise UsageError(
            f"{name}: the validation split carved from train (--val-fraction {val_fraction:g} of "
            f"each class, one image always kept for training) would be empty: "
            f"at most {counts.max()} train image(s) per class; add images or raise --val-fraction"
        )


def metrics(labels: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """top-1, top-k (k = min(5, classes)), and recall averaged over the classes present in `labels`.

    `scores` columns follow `classes` (the labels seen in training)."""
    k = min(TOPK, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = classes[order]
    hit = top == labels[:, None]
    recall = [hit[labels == c, 0].mean() for c in np.unique(labels)]
    return {
        "acc1": float(hit[:, 0].mean()),
        "acc5": float(hit.any(axis=1).mean()),
        "mean_per_class_recall": float(np.mean(recall)),
    }


def fit(x: np.ndarray, y: np.ndarray, lam: float, max_iter: int, start: tuple | None = None):
    """One L-BFGS logistic regression, from `start` = (coef, intercept, classes) when given (a warm
    start:
    the objective is strictly convex, so a converged fit is the same optimum from any start);
    returns (model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if start is not None and not np.array_equal(start[2], np.unique(y)):
        start = None  # another label set (a validation split with classes train lacks): start cold
    model = LogisticRegression(
        C=1.0 / lam, solver="lbfgs", max_iter=max_iter, warm_start=start is not None
    )
    if start is not None:
        model.coef_, model.intercept_ = start[0].copy(), start[1].copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def score(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return metrics(y, model.predict_proba(x), model.classes_)


def search_lambda(evaluate: Callable[[float], float]) -> tuple[int, list[dict]]:
    """CLIP's parametric search on GRID; `evaluate(λ)` is the validation score (higher is better).

    Returns the grid index of the chosen λ and every evaluation. Ties go to the larger λ (the
    simpler classifier), so the choice does not depend on evaluation order."""
    seen: dict[int, float] = {}

    def value(i: int) -> float:
        if i not in seen:
            seen[i] = evaluate(float(GRID[i]))
        return seen[i]

    def best(candidates: list[int]) -> int:
        return max(candidates, key=lambda i: (value(i), i))

    peak = best(list(range(0, len(GRID), FIRST_STEP)))
    step = FIRST_STEP // 2
    while step >= 1:
        peak = best([i for i in (peak - step, peak, peak + step) if 0 <= i < len(GRID)])
        step //= 2
    trace = [{"lambda": float(GRID[i]), "val_score": s} for i, s in sorted(seen.items())]
    return peak, trace


def probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cfg: ProbeConfig,
    val_x: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    on_step: Callable[[], None] | None = None,
    name: str = "train split",
) -> ProbeResult:
    """The whole protocol on feature matrices; `val_x/val_y` None → carve validation from train."""
    check_labels(train_y, cfg.val_fraction, val_y is not None, name)
    if val_x is None:
        tr, va = carve_validation(train_y, cfg.val_fraction, cfg.seed)
        fit_x, fit_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    elif val_y is None:
        raise ValueError("probe: val_x given without val_y")
    else:
        fit_x, fit_y = train_x, train_y

    solutions: dict[
        float, tuple
    ] = {}  # λ → (coef, intercept, classes, converged) of the search's fits

    def nearest(lam: float) -> tuple | None:
        """Warm start from the fitted λ closest on the log scale (the search moves in small
        steps)."""
        if not solutions:
            return None
        near = min(solutions, key=lambda other: abs(np.log(other / lam)))
        return solutions[near][:3]

    def evaluate(lam: float) -> float:
        model, converged = fit(fit_x, fit_y, lam, cfg.max_iter, nearest(lam))
        solutions[lam] = (model.coef_, model.intercept_, model.classes_, converged)
        if on_step:
            on_step()
        return score(model, val_x, val_y)[cfg.select_metric]

    index, trace = search_lambda(evaluate)
    for step in trace:
        step["converged"] = solutions[step["lambda"]][3]
    lam = float(GRID[index])
    model, converged = fit(
        np.concatenate([fit_x, val_x]),
        np.concatenate([fit_y, val_y]),
        lam,
        cfg.max_iter,
        solutions[lam][:3],
    )
    proba = model.predict_proba(test_x)
    top = model.classes_[np.argsort(-proba, axis=1, kind="stable")[:, : min(TOPK, proba.shape[1])]]
    return ProbeResult(
        metrics(test_y, proba, model.classes_),
        lam,
        trace,
        len(fit_y),
        len(val_y),
        converged,
        model.classes_[proba.argmax(axis=1)],
        top,
        int(np.max(model.n_iter_)),
    )
