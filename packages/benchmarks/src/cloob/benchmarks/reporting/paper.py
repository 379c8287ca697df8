"""Published zero-shot and linear-probe top-1 accuracies (%) of the CLOOB paper (Fürst et al.,
NeurIPS 2022)."""

from __future__ import annotations

from cloob.common.cli import UsageError

_ORDER = (
    "birdsnap",
    "country211",
    "flowers102",
    "gtsrb",
    "ucf101",
    "stanford_cars",
    "imagenet",
    "imagenetv2",
)


def _table(clip: tuple[float, ...], cloob: tuple[float, ...]) -> dict[str, dict[str, float]]:
    return {
        "clip": dict(zip(_ORDER, clip, strict=True)),
        "cloob": dict(zip(_ORDER, cloob, strict=True)),
    }


# Conceptual Captions numbers are means over 5 runs (31 epochs; "-e128": 128 epochs).
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "cc-rn50": _table(
        (2.26, 0.67, 12.56, 7.66, 20.98, 0.91, 20.33, 20.24),
        (3.06, 0.67, 13.45, 6.38, 22.26, 1.23, 23.97, 23.59),
    ),
    "cc-rn50-e128": _table(
        (2.8, 0.7, 13.32, 8.96, 21.63, 0.99, 21.3, 21.24),
        (3.24, 0.73, 14.36, 7.03, 23.03, 1.41, 25.67, 25.49),
    ),
    "yfcc-rn50": _table(
        (21.8, 6.9, 48.0, 7.9, 27.2, 3.7, 34.6, 33.4), (28.9, 7.9, 55.1, 8.1, 25.3, 4.1, 35.7, 34.6)
    ),
    "yfcc-rn101": _table(
        (22.6, 7.8, 48.0, 7.4, 28.6, 3.8, 35.3, 34.1),
        (30.3, 8.5, 55.3, 11.6, 28.8, 5.5, 37.1, 35.6),
    ),
    "yfcc-rn50x4": _table(
        (20.8, 8.1, 50.1, 9.4, 31.0, 3.5, 37.7, 35.9),
        (32.0, 9.3, 54.3, 11.8, 31.9, 6.1, 39.0, 37.3),
    ),
    # Linear probing (YFCC-15M RN50; the paper gives no CLIP number for ImageNet V2).
    "yfcc-rn50-linear": {
        "clip": dict(zip(_ORDER[:7], (47.4, 23.1, 94.4, 66.8, 69.2, 31.4, 62.0), strict=True)),
        "cloob": dict(zip(_ORDER, (56.2, 20.6, 96.1, 78.9, 72.3, 37.7, 65.7, 58.7), strict=True)),
    },
}


def published(key: str) -> dict[str, dict[str, float]]:
    """{"clip": {dataset: top-1 %}, "cloob": {...}} for one of PAPER's settings."""
    if key not in PAPER:
        raise UsageError(f"unknown paper setting {key!r}; known: {', '.join(PAPER)}")
    return PAPER[key]
