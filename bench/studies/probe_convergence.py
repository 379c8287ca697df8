"""Does the linear probe's L-BFGS converge along CLIP's λ search, cold vs warm-started?

Synthetic frozen features shaped like the probe datasets (train/val/test sizes and class counts,
scaled where a 2-core machine cannot fit the real size): class means in a low-dimensional subspace,
anisotropic noise with a decaying spectrum and a large shared offset, as CLIP features have. Runs
`linear_probe.probe` with warm starts (the code) and with every fit cold (the code before), in the
same process, alternating, and prints per dataset: unconverged fits in the search, whether the final
fit converged, total L-BFGS iterations, wall-time ratio, chosen λ and test top-1 of both; writes
bench/results/probe_convergence.json.

    OMP_NUM_THREADS=1 uv run python -m bench.studies.probe_convergence [--scale 0.25] [--dim 256]
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np

from bench._common import report
from cloob.benchmarks.tasks.linear_probe import protocol as lp

# name: (train, val (0 = carved), test, classes) at full size (CLIP's splits / the fetched ones)
SHAPES = {
    "flowers102": (1020, 1020, 6149, 102),
    "stanford_cars": (8144, 0, 8041, 196),
    "ucf101": (9537, 0, 3783, 101),
    "gtsrb": (26640, 0, 12630, 43),
    "country211": (31650, 10550, 21100, 211),
}


def features(n: int, classes: int, dim: int, rng: np.random.Generator, means: np.ndarray):
    y = rng.integers(0, classes, n)
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
    x = (
        means[y] + rng.standard_normal((n, dim)) * spectrum + 3.0
    )  # shared offset, as CLIP features have
    return x.astype(np.float32), y


def dataset(name: str, scale: float, dim: int, seed: int = 0):
    train, val, test, classes = SHAPES[name]
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 32)))[0]
    means = 0.35 * rng.standard_normal((classes, 32)) @ basis.T
    n = lambda k: max(classes * 2, int(k * scale))  # noqa: E731
    out = [
        features(n(train), classes, dim, rng, means),
        features(n(test), classes, dim, rng, means),
    ]
    out.append(features(n(val), classes, dim, rng, means) if val else (None, None))
    return out


def run(data, max_iter: int, warm: bool):
    (tx, ty), (sx, sy), (vx, vy) = data
    iterations = []
    real_fit = lp.fit

    def counted(x, y, lam, it, start=None):
        model, ok = real_fit(x, y, lam, it, start if warm else None)
        iterations.append(int(np.max(model.n_iter_)))
        return model, ok

    started = time.perf_counter()
    with mock.patch.object(lp, "fit", counted):
        result = lp.probe(tx, ty, sx, sy, lp.ProbeConfig(max_iter=max_iter), vx, vy)
    return result, sum(iterations), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--datasets", default=",".join(SHAPES))
    args = ap.parse_args()
    rows = []
    for name in args.datasets.split(","):
        data = dataset(name, args.scale, args.dim)
        cold, it_cold, t_cold = run(data, args.max_iter, warm=False)
        warm, it_warm, t_warm = run(data, args.max_iter, warm=True)
        rows.append(
            [
                name,
                len(cold.search) + 1,
                f"{cold.unconverged_search_fits + (not cold.converged)} / "
                f"{warm.unconverged_search_fits + (not warm.converged)}",
                f"{it_cold} / {it_warm}",
                t_warm / t_cold,
                f"{cold.lam:.3g} / {warm.lam:.3g}",
                f"{100 * cold.metrics['acc1']:.2f} / {100 * warm.metrics['acc1']:.2f}",
            ]
        )
    report(
        "probe_convergence",
        f"Linear-probe L-BFGS along CLIP's λ search, cold vs warm starts (synthetic features at "
        f"{args.scale} of the datasets' sizes, {args.dim}-d, max_iter {args.max_iter})",
        [
            "dataset",
            "fits",
            "unconverged cold / warm",
            "L-BFGS iterations cold / warm",
            "time warm ÷ cold",
            "λ cold / warm",
            "test top-1 cold / warm",
        ],
        rows,
        extra={"settings": vars(args)},
    )


if __name__ == "__main__":
    main()
