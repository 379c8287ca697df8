"""What an objective did to the embedding space: the geometry of paired image/caption embeddings.

For N images, each paired with its first caption (rows x_i, y_i, L2-normalised):
- alignment (Wang & Isola 2020, α = 2): mean ‖x_i − y_i‖², lower = positives closer;
- uniformity (ibid., t = 2), per modality: log mean_{i≠j} exp(−2‖u_i − u_j‖²), lower = more spread;
- modality gap (Liang et al. 2022): ‖mean x − mean y‖, the distance between the two centroids;
- eigenvalue spectrum of each modality's covariance and its effective rank, exp(entropy of the
  normalised eigenvalues) (Roy & Vetterli 2007): how many directions the embeddings really use —
  the paper's argument is that InfoNCE saturates and CLOOB's retrievals raise the covariance
  structure;
- mean positive cosine ⟨x_i, y_i⟩ vs mean hardest-negative cosine max_{j≠i} ⟨x_i, y_j⟩ (both ways).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloob.benchmarks.options import EvalOptions
from cloob.common.cli import UsageError
from cloob.common.files import atomic_path, write_json

if TYPE_CHECKING:
    from cloob.benchmarks.reporting.report import AnalyzeRecord

PROTOCOL = (
    "embedding geometry on {n} images, each paired with its first caption, L2-normalised "
    "embeddings: alignment = mean ||x_i - y_i||^2; "
    "uniformity = log mean_(i!=j) exp(-2 ||u_i - u_j||^2) "
    "per modality; modality gap = ||mean x - mean y||; covariance eigen-spectrum per modality with "
    "effective rank = exp(entropy of normalised eigenvalues); mean positive cosine vs mean "
    "hardest-negative cosine (max over the other captions / images)"
)
COLUMNS = {
    "alignment": "alignment ↓",
    "uniformity_image": "uniformity img ↓",
    "uniformity_text": "uniformity txt ↓",
    "modality_gap": "modality gap",
    "effective_rank_image": "eff. rank img",
    "effective_rank_text": "eff. rank txt",
    "positive_cosine": "positive cos",
    "hardest_negative_cosine_i2t": "hardest neg cos i→t",
    "hardest_negative_cosine_t2i": "hardest neg cos t→i",
}
PROJECTIONS = ("pca", "umap")


def alignment(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sum((x - y) ** 2, axis=1)))


def uniformity(u: np.ndarray, t: float = 2.0) -> float:
    """log of the mean Gaussian potential over distinct pairs (stable: log-sum-exp)."""
    sq = np.maximum(2.0 - 2.0 * (u @ u.T), 0.0)  # ‖a − b‖² of unit vectors
    off = sq[~np.eye(len(u), dtype=bool)].astype(np.float64)
    a = -t * off
    top = a.max()
    return float(top + math.log(np.mean(np.exp(a - top))))


def spectrum(u: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of the rows, largest first (clipped at 0: round-off)."""
    centred = u - u.mean(axis=0, keepdims=True)
    cov = centred.T.astype(np.float64) @ centred / max(len(u) - 1, 1)
    return np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)


def effective_rank(eigenvalues: np.ndarray) -> float:
    p = eigenvalues / eigenvalues.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def hardest_negative(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over rows of x of the largest cosine to a y that is not its pair."""
    sim = x @ y.T
    np.fill_diagonal(sim, -np.inf)
    return float(sim.max(axis=1).mean())


def geometry(x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(scalar metrics, spectra) of paired normalised embeddings x (images) and y (captions)."""
    if len(x) < 3:
        raise UsageError(f"the analysis needs at least 3 image–caption pairs, got {len(x)}")
    spec = {"image": spectrum(x), "text": spectrum(y)}
    metrics = {
        "alignment": alignment(x, y),
        "uniformity_image": uniformity(x),
        "uniformity_text": uniformity(y),
        "modality_gap": float(np.linalg.norm(x.mean(axis=0) - y.mean(axis=0))),
        "effective_rank_image": effective_rank(spec["image"]),
        "effective_rank_text": effective_rank(spec["text"]),
        "positive_cosine": float(np.mean(np.sum(x * y, axis=1))),
        "hardest_negative_cosine_i2t": hardest_negative(x, y),
        "hardest_negative_cosine_t2i": hardest_negative(y, x),
    }
    return metrics, {k: v.tolist() for k, v in spec.items()}


def first_captions(caption_image: np.ndarray, n_images: int) -> np.ndarray:
    """Index of the first caption of every image (each image must have one)."""
    first = np.full(n_images, -1)
    for t in range(len(caption_image) - 1, -1, -1):
        first[caption_image[t]] = t
    return first


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def check_projection(method: str) -> None:
    """Fail early: an unknown method, or UMAP without umap-learn (an optional extra, never
    required)."""
    if method not in PROJECTIONS:
        raise UsageError(f"unknown projection {method!r}; choose from {', '.join(PROJECTIONS)}")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise UsageError(
                "--projection umap needs umap-learn (pip install umap-learn); pca needs nothing"
            ) from None


def project(x: np.ndarray, y: np.ndarray, method: str = "pca") -> np.ndarray:
    """2-D coordinates of the rows of [x; y] (one joint projection, so the gap stays visible)."""
    check_projection(method)
    joint = np.concatenate([x, y]).astype(np.float64)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=0).fit_transform(joint)
    centred = joint - joint.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


# ---------------------------------------------------------------- running and writing


@dataclass
class AnalyzeConfig(EvalOptions):
    out: Path
    max_images: int | None = 2000  # pairwise terms grow as N²
    seed: int = 0
    projection: str = "pca"


def run(
    models: list, pairs, cfg: AnalyzeConfig, echo: Callable[[str], None] = print
) -> list[AnalyzeRecord]:
    """One record per checkpoint: metrics, spectra and the 2-D projection of its embeddings."""
    from cloob.benchmarks.data.pairs import Pairs
    from cloob.benchmarks.models.checkpoints import labels_for
    from cloob.benchmarks.models.features import embed_loaded
    from cloob.benchmarks.reporting import report

    check_projection(cfg.projection)
    keep = subsample(len(pairs.images), cfg.max_images, cfg.seed)
    first = first_captions(pairs.caption_image, len(pairs.images))[keep]
    paired = Pairs(
        pairs.name,
        [pairs.images[i] for i in keep],
        [pairs.captions[t] for t in first],
        np.arange(len(keep)),
        pairs.source,
    )
    versions = report.software_versions()
    records: list[AnalyzeRecord] = []
    for loaded, label in zip(models, labels_for(models), strict=True):
        emb = embed_loaded(loaded, paired, cfg)
        metrics, spectra = geometry(emb.images, emb.texts)
        records.append(
            {
                **report.base_record(loaded, label, pairs.name, cfg, versions, task="analyze"),
                "n_images": len(emb.images),
                "n_skipped": emb.skipped,
                "metrics": metrics,
                "spectra": spectra,
                "projection": {
                    "method": cfg.projection,
                    "xy": project(emb.images, emb.texts, cfg.projection).tolist(),
                },
                "source": pairs.source,
                "protocol": PROTOCOL.format(n=len(emb.images)),
            }
        )
        echo(
            f"{label} · {pairs.name}: "
            + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            + (f"  ({emb.skipped} unreadable images skipped)" if emb.skipped else "")
        )
    return records


def write(records: list[AnalyzeRecord], out: Path) -> dict[str, Path]:
    """analysis.json (everything), results.json/.md/.csv (the scalars), spectra.png,
    projection.png."""
    from cloob.benchmarks.reporting import report

    written = report.write_records(
        [_scalars(r) for r in records], out, "Embedding-space analysis", COLUMNS, percent=False
    )
    written["analysis"] = out / "analysis.json"
    write_json(written["analysis"], {"records": records})
    written["spectra"] = plot_spectra(records, out / "spectra.png")
    written["projection"] = plot_projection(records, out / "projection.png")
    return written


def _scalars(record: AnalyzeRecord) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("spectra", "projection")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_spectra(records: Sequence[AnalyzeRecord], target: Path) -> Path:
    """Normalised covariance eigenvalues (log scale) of every checkpoint: images solid, captions
    dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(records):
        colour = f"C{i % 10}"
        for modality, style in (("image", "-"), ("text", "--")):
            ev = np.asarray(r["spectra"][modality])
            ax.plot(
                np.arange(1, len(ev) + 1),
                ev / ev.sum(),
                style,
                color=colour,
                label=(
                    f"{r['label']} {modality} "
                    f"(eff. rank {r['metrics'][f'effective_rank_{modality}']:.1f})"
                ),
            )
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("share of total variance")
    ax.set_title(f"Covariance eigen-spectra ({records[0]['dataset']})")
    ax.legend(fontsize="small")
    return _save(fig, target, plt)


def plot_projection(records: Sequence[AnalyzeRecord], target: Path) -> Path:
    """One panel per checkpoint: images and captions in one 2-D projection, coloured by modality."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 4.2), squeeze=False)
    for ax, r in zip(axes[0], records, strict=True):
        xy = np.asarray(r["projection"]["xy"])
        n = len(xy) // 2
        ax.scatter(xy[:n, 0], xy[:n, 1], s=6, alpha=0.6, label="images")
        ax.scatter(xy[n:, 0], xy[n:, 1], s=6, alpha=0.6, label="captions")
        ax.set_title(f"{r['label']}\ngap {r['metrics']['modality_gap']:.2f}", fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{records[0]['projection']['method'].upper()} of image and caption embeddings")
    return _save(fig, target, plt)


def _save(fig, target: Path, plt) -> Path:
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return target
