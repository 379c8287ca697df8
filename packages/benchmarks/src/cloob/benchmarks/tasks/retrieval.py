"""Image–text retrieval: Recall@K both ways, the COCO / Flickr30k protocol (several captions per
image).

Image→text: an image counts as found at K if any of its captions is among the K captions most
similar to it. Text→image: a caption counts if its image is among the K most similar images.
Similarity is the cosine of the L2-normalised embeddings; each recall is averaged over the queries.

The image–caption pairs come from `cloob.benchmarks.data.pairs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from cloob.benchmarks.data.pairs import Pairs
from cloob.benchmarks.models.features import embed, embed_loaded
from cloob.benchmarks.options import EvalOptions
from cloob.benchmarks.reporting import stats

if TYPE_CHECKING:
    from cloob.benchmarks.reporting.report import RetrievalRecord

KS = (1, 5, 10)
PROTOCOL = (
    "image-text retrieval: L2-normalised image and caption embeddings, cosine similarity; "
    "image→text R@K = share of images with at least one of their captions among the K nearest "
    "captions, text→image R@K = share of captions whose image is among the K nearest images; "
    "mean_recall = mean of the six"
)


# ---------------------------------------------------------------- metrics


def recalls(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    caption_image: np.ndarray,
    ks: tuple[int, ...] = KS,
    chunk: int = 1024,
) -> dict[str, float]:
    """R@K both ways from normalised embeddings; similarity rows are computed `chunk` at a time."""
    i2t_hit, t2i_hit = (
        torch.from_numpy(h) for h in hits(image_emb, text_emb, caption_image, ks, chunk)
    )
    out = {}
    for k in ks:  # float32 means, as clip_benchmark computes them (exact parity in the tests)
        out[f"i2t_r{k}"] = i2t_hit[:, :k].any(dim=1).float().mean().item()
        out[f"t2i_r{k}"] = t2i_hit[:, :k].any(dim=1).float().mean().item()
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


def hits(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    caption_image: np.ndarray,
    ks: tuple[int, ...] = KS,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, K) and (captions, K) booleans: whether a right answer is at rank j, per query."""
    img, txt = torch.from_numpy(image_emb), torch.from_numpy(text_emb)
    owner = torch.from_numpy(np.asarray(caption_image, dtype=np.int64))
    k_img, k_txt = min(max(ks), len(img)), min(max(ks), len(txt))
    t2i = torch.cat(
        [(txt[s : s + chunk] @ img.T).topk(k_img, dim=1).indices for s in range(0, len(txt), chunk)]
    )
    i2t = torch.cat(
        [
            (txt @ img[s : s + chunk].T).T.topk(k_txt, dim=1).indices
            for s in range(0, len(img), chunk)
        ]
    )
    t2i_hit = t2i == owner[:, None]  # (texts, K): is the caption's image at rank j
    i2t_hit = (
        owner[i2t] == torch.arange(len(img))[:, None]
    )  # (images, K): is caption j one of the image's
    return i2t_hit.numpy(), t2i_hit.numpy()


def recall_items(
    image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = KS
) -> stats.Items:
    """The bootstrap's view of retrieval: resample images, each with its own captions; paired
    tests on image→text R@1 per image."""
    i2t_hit, t2i_hit = hits(image_emb, text_emb, caption_image, ks)
    owner = np.asarray(caption_image, dtype=np.int64)
    n = len(image_emb)
    per_image = {"captions": np.bincount(owner, minlength=n)}
    statistics = {}
    for k in ks:
        statistics[f"i2t_r{k}"] = stats.mean_of(np.asarray(i2t_hit[:, :k].any(axis=1)))
        hit_k = np.bincount(owner, weights=t2i_hit[:, :k].any(axis=1), minlength=n)
        statistics[f"t2i_r{k}"] = stats.ratio_of(hit_k, per_image["captions"])
    statistics["mean_recall"] = stats.average_of(*statistics.values())
    return stats.Items(np.arange(n), statistics, i2t_hit[:, 0].astype(np.int8), "i2t_r1")


def retrieval_eval(
    model, preprocess, tokenizer, pairs: Pairs, opts: EvalOptions
) -> dict[str, float]:
    """R@1/5/10 both ways and their mean for one model on `pairs`."""
    emb = embed(model, preprocess, tokenizer, pairs, opts)
    return recalls(emb.images, emb.texts, emb.caption_image)


@dataclass
class RetrievalConfig(EvalOptions):
    """Retrieval needs nothing beyond the shared evaluation options."""


def run(
    models: list, pairs: Pairs, cfg: RetrievalConfig, echo: Callable[[str], None] = print
) -> list[RetrievalRecord]:
    """Every model on `pairs`: one record each (the zero-shot record's fields, retrieval
    metrics)."""
    from cloob.benchmarks.models.checkpoints import labels_for
    from cloob.benchmarks.reporting import report

    versions = report.software_versions()
    records: list[RetrievalRecord] = []
    for loaded, label in zip(models, labels_for(models), strict=True):
        emb = embed_loaded(loaded, pairs, cfg)
        m = recalls(emb.images, emb.texts, emb.caption_image)
        records.append(
            {
                **report.base_record(loaded, label, pairs.name, cfg, versions, task="retrieval"),
                "n_images": len(emb.images),
                "n_skipped": emb.skipped,
                "n_captions": len(emb.texts),
                "metrics": m,
                "headline": "mean_recall",
                "source": pairs.source,
                "protocol": PROTOCOL,
                "seconds": round(emb.seconds, 3),
            }
        )
        items = recall_items(emb.images, emb.texts, emb.caption_image)
        stats.attach_intervals(records[-1], items, cfg.bootstrap)
        records[-1][stats.ITEMS] = items
        echo(
            f"{label} · {pairs.name}: image→text R@1/5/10 {100 * m['i2t_r1']:.2f} / "
            f"{100 * m['i2t_r5']:.2f} / "
            f"{100 * m['i2t_r10']:.2f}   text→image {100 * m['t2i_r1']:.2f} / "
            f"{100 * m['t2i_r5']:.2f} / "
            f"{100 * m['t2i_r10']:.2f}  ({len(emb.images)} images, {len(emb.texts)} captions"
            + (f", {emb.skipped} unreadable images skipped)" if emb.skipped else ")")
        )
    return records
