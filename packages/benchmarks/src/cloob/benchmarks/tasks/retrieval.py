"""Image–text retrieval: Recall@K both ways, the COCO / Flickr30k protocol (several captions per image).

Image→text: an image counts as found at K if any of its captions is among the K captions most
similar to it. Text→image: a caption counts if its image is among the K most similar images.
Similarity is the cosine of the L2-normalised embeddings; each recall is averaged over the queries.

Inputs: webdataset shards as dataprep writes them (`{key}.jpg|png|webp` + `{key}.txt`, one caption
per image), read straight from the tar members; or a Karpathy-split JSON (`images[*].filename`,
optional `filepath`, `split`, `sentences[*].raw`) with the image folder it refers to.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cloob.benchmarks.data.datasets import read_image
from cloob.benchmarks.options import EvalOptions
from cloob.benchmarks.reporting import stats
from cloob.common import shard_layout
from cloob.common.cli import UsageError
from cloob.common.shard_layout import IMAGE_EXTS

KS = (1, 5, 10)
PROTOCOL = ("image-text retrieval: L2-normalised image and caption embeddings, cosine similarity; "
            "image→text R@K = share of images with at least one of their captions among the K nearest "
            "captions, text→image R@K = share of captions whose image is among the K nearest images; "
            "mean_recall = mean of the six")


@dataclass(frozen=True)
class ImageRef:
    """An image file, or a member of a tar (offset and size of its data, read without unpacking)."""

    path: str
    offset: int = -1
    size: int = -1

    def open(self) -> Image.Image | None:
        """The image as RGB; None (logged) when it does not decode."""
        if self.offset < 0:
            return read_image(lambda: Image.open(self.path), self.path)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        import io

        return read_image(lambda: Image.open(io.BytesIO(data)), f"{self.path} @{self.offset}")


@dataclass
class Pairs:
    """Images, captions, and for each caption the index of its image."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    caption_image: np.ndarray
    source: dict = field(default_factory=dict)


class ImageRefs(Dataset):
    """(image tensor, index, index), or None for an image that does not decode: the shape
    `features.encode_images` expects."""

    def __init__(self, refs: list[ImageRef], transform) -> None:
        self.refs, self.transform = refs, transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        image = self.refs[i].open()
        return None if image is None else (self.transform(image), i, i)


# ---------------------------------------------------------------- inputs

def shard_files(paths: list[Path]) -> list[Path]:
    """Tar files from dataprep output folders (DIR/shards/*.tar or DIR/*.tar) and/or tar paths."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = shard_layout.shard_files(path)
            if not found:
                raise UsageError(f"{path}: no .tar shards (expected {path}/shards/*.tar or {path}/*.tar)")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such shard file or folder")
    return out


def from_shards(paths: list[Path], name: str | None = None) -> Pairs:
    """One (image, caption) pair per sample that has both; samples missing either are skipped."""
    images, captions = [], []
    skipped = 0
    files = shard_files(paths)
    for tar in files:
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(tar) as tf:
                for member in tf:
                    if member.isfile():
                        base = PurePosixPath(member.name)
                        key, _, ext = base.name.partition(".")
                        samples.setdefault(f"{base.parent}/{key}", {})[ext.lower()] = member
                texts = {k: m["txt"] for k, m in samples.items() if "txt" in m}
                caption_bytes = {k: tf.extractfile(m).read() for k, m in texts.items()}
        except tarfile.TarError as err:
            raise UsageError(f"{tar}: not a readable tar ({err})") from None
        for key, members in samples.items():
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            if image is None or key not in caption_bytes:
                skipped += 1
                continue
            images.append(ImageRef(str(tar), image.offset_data, image.size))
            captions.append(caption_bytes[key].decode("utf-8").strip())
    if not images:
        raise UsageError(f"{', '.join(map(str, paths))}: no image–caption pairs found in {len(files)} shard(s)")
    first = Path(paths[0])
    return Pairs(name or (first.name if first.is_dir() else first.parent.name), images, captions,
                 np.arange(len(images)), {"kind": "webdataset shards", "shards": [str(f) for f in files],
                                          "skipped_samples": skipped})


def from_karpathy(json_path: Path, image_root: Path, split: str = "test", name: str | None = None) -> Pairs:
    """Every image of `split` with all its captions (`sentences[*].raw`)."""
    json_path, image_root = Path(json_path), Path(image_root)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such Karpathy-split JSON")
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root}: no such image folder")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        entries = data["images"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{json_path}: not a Karpathy-split JSON (no 'images' list)") from None
    if not isinstance(entries, list):
        raise UsageError(f"{json_path}: not a Karpathy-split JSON ('images' is a {type(entries).__name__}, "
                         f"not a list)")
    for i, e in enumerate(entries):
        _check_entry(json_path, i, e)
    chosen = [e for e in entries if e.get("split") == split]
    if not chosen:
        present = sorted({str(e.get("split")) for e in entries})
        raise UsageError(f"{json_path}: no images in split {split!r} (splits present: {', '.join(present) or 'none'})")
    images, captions, owner = [], [], []
    for e in chosen:
        path = image_root / e.get("filepath", "") / e["filename"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image listed in {json_path.name} not found under {image_root}")
        texts = [s["raw"].strip() for s in e.get("sentences", [])]
        if not texts:
            raise UsageError(f"{json_path}: image {e['filename']} has no sentences")
        owner.extend([len(images)] * len(texts))
        images.append(ImageRef(str(path)))
        captions.extend(texts)
    return Pairs(name or data.get("dataset") or json_path.stem, images, captions, np.array(owner),
                 {"kind": "Karpathy split", "json": str(json_path), "images": str(image_root), "split": split})


def _check_entry(json_path: Path, i: int, e: object) -> None:
    """One `images` entry as the Karpathy format has it, or a UsageError naming what is wrong."""
    where = f"{json_path}: images[{i}]"
    if not isinstance(e, dict):
        raise UsageError(f"{where} is a {type(e).__name__}, not an object with 'filename' and 'sentences'")
    if not isinstance(e.get("filename"), str) or not e["filename"]:
        raise UsageError(f"{where} has no 'filename'")
    if not isinstance(e.get("filepath", ""), str):
        raise UsageError(f"{where}: 'filepath' is not a string")
    sentences = e.get("sentences", [])
    if not isinstance(sentences, list):
        raise UsageError(f"{where} ({e['filename']}): 'sentences' is not a list")
    for j, sentence in enumerate(sentences):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
            raise UsageError(f"{where} ({e['filename']}): sentences[{j}] has no 'raw' text")


# ---------------------------------------------------------------- metrics

def recalls(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = KS,
            chunk: int = 1024) -> dict[str, float]:
    """R@K both ways from normalised embeddings; similarity rows are computed `chunk` at a time."""
    i2t_hit, t2i_hit = (torch.from_numpy(h) for h in hits(image_emb, text_emb, caption_image, ks, chunk))
    out = {}
    for k in ks:  # float32 means, as clip_benchmark computes them (exact parity in the tests)
        out[f"i2t_r{k}"] = i2t_hit[:, :k].any(dim=1).float().mean().item()
        out[f"t2i_r{k}"] = t2i_hit[:, :k].any(dim=1).float().mean().item()
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


def hits(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = KS,
         chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(images, K) and (captions, K) booleans: whether a right answer is at rank j, per query."""
    img, txt = torch.from_numpy(image_emb), torch.from_numpy(text_emb)
    owner = torch.from_numpy(np.asarray(caption_image, dtype=np.int64))
    k_img, k_txt = min(max(ks), len(img)), min(max(ks), len(txt))
    t2i = torch.cat([(txt[s:s + chunk] @ img.T).topk(k_img, dim=1).indices for s in range(0, len(txt), chunk)])
    i2t = torch.cat([(txt @ img[s:s + chunk].T).T.topk(k_txt, dim=1).indices for s in range(0, len(img), chunk)])
    t2i_hit = t2i == owner[:, None]  # (texts, K): is the caption's image at rank j
    i2t_hit = owner[i2t] == torch.arange(len(img))[:, None]  # (images, K): is caption j one of the image's
    return i2t_hit.numpy(), t2i_hit.numpy()


def recall_items(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: np.ndarray,
                 ks: tuple[int, ...] = KS) -> stats.Items:
    """The bootstrap's view of retrieval: resample images, each with its own captions; paired
    tests on image→text R@1 per image."""
    i2t_hit, t2i_hit = hits(image_emb, text_emb, caption_image, ks)
    owner = np.asarray(caption_image, dtype=np.int64)
    n = len(image_emb)
    per_image = {"captions": np.bincount(owner, minlength=n)}
    statistics = {}
    for k in ks:
        statistics[f"i2t_r{k}"] = stats.mean_of(i2t_hit[:, :k].any(axis=1))
        hit_k = np.bincount(owner, weights=t2i_hit[:, :k].any(axis=1), minlength=n)
        statistics[f"t2i_r{k}"] = stats.ratio_of(hit_k, per_image["captions"])
    statistics["mean_recall"] = stats.average_of(*statistics.values())
    return stats.Items(np.arange(n), statistics, i2t_hit[:, 0].astype(np.int8), "i2t_r1")


@dataclass
class Embedded:
    images: np.ndarray  # the readable images' embeddings, in `pairs` order
    texts: np.ndarray  # the captions of those images
    seconds: float
    caption_image: np.ndarray  # for each row of `texts`, its row in `images`
    skipped: int = 0  # images that did not decode (left out with their captions)


def embed(model, preprocess, tokenizer, pairs: Pairs, *, batch_size: int = 64, workers: int = 0,
          device: str = "cpu", precision: str = "fp32", progress: bool = False) -> Embedded:
    """Normalised image and caption embeddings of `pairs`; an image that does not decode is
    skipped with its captions and counted."""
    import time

    from cloob.benchmarks.models.features import encode_images, encode_texts

    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        images = encode_images(model, ImageRefs(pairs.images, preprocess), batch_size=batch_size, workers=workers,
                               device=device, precision=precision, progress=progress, label=f"{pairs.name} images",
                               normalize=True)
        keep, owner = readable_captions(pairs.caption_image, images.index, len(pairs.images))
        texts = encode_texts(model, tokenizer, [pairs.captions[t] for t in keep], device=device,
                             precision=precision, progress=progress, label=f"{pairs.name} captions")
    finally:
        model.train(was_training)
    return Embedded(images.x, texts, time.perf_counter() - started, owner, images.skipped)


def readable_captions(caption_image: np.ndarray, kept_images: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the captions whose image was read, their image's row among the kept images)."""
    row = np.full(n_images, -1, dtype=np.int64)
    row[kept_images] = np.arange(len(kept_images))
    owner = row[np.asarray(caption_image, dtype=np.int64)]
    keep = np.flatnonzero(owner >= 0)
    return keep, owner[keep]


def retrieval_eval(model, preprocess, tokenizer, pairs: Pairs, **kwargs) -> dict[str, float]:
    """R@1/5/10 both ways and their mean for one model on `pairs` (kwargs as for `embed`)."""
    emb = embed(model, preprocess, tokenizer, pairs, **kwargs)
    return recalls(emb.images, emb.texts, emb.caption_image)


@dataclass
class RetrievalConfig(EvalOptions):
    """Retrieval needs nothing beyond the shared evaluation options."""


def embed_loaded(loaded, pairs: Pairs, cfg) -> Embedded:
    """`embed` a loaded checkpoint on cfg.device (and back to the CPU after): `cfg` is any config
    with the EvalOptions fields (retrieval's, analyze's)."""
    loaded.model.to(cfg.device)
    try:
        return embed(loaded.model, loaded.preprocess, loaded.tokenizer, pairs,
                     batch_size=cfg.batch_size, workers=cfg.workers, device=cfg.device,
                     precision=cfg.precision, progress=cfg.progress)
    finally:
        loaded.model.to("cpu")


def run(models: list, pairs: Pairs, cfg: RetrievalConfig, echo: Callable[[str], None] = print) -> list[dict]:
    """Every model on `pairs`: one record each (the zero-shot record's fields, retrieval metrics)."""
    from cloob.benchmarks.reporting import report
    from cloob.benchmarks.tasks.zeroshot.run import labels_for

    versions = report.software_versions()
    records = []
    for loaded, label in zip(models, labels_for(models), strict=True):
        emb = embed_loaded(loaded, pairs, cfg)
        m = recalls(emb.images, emb.texts, emb.caption_image)
        records.append({
            "task": "retrieval", "label": label, "checkpoint": loaded.path, "checkpoint_sha256": loaded.sha256,
            "checkpoint_format": loaded.format, "model": loaded.name, "method": loaded.method,
            "checkpoint_info": loaded.info, "dataset": pairs.name, "n_images": len(emb.images),
            "n_skipped": emb.skipped, "n_captions": len(emb.texts), "metrics": m, "headline": "mean_recall", "source": pairs.source,
            "protocol": PROTOCOL, "precision": cfg.precision, "device": cfg.device, "software": versions,
            "seconds": round(emb.seconds, 3)})
        items = recall_items(emb.images, emb.texts, emb.caption_image)
        stats.attach_intervals(records[-1], items, cfg.bootstrap)
        records[-1][stats.ITEMS] = items
        echo(f"{label} · {pairs.name}: image→text R@1/5/10 {100 * m['i2t_r1']:.2f} / {100 * m['i2t_r5']:.2f} / "
             f"{100 * m['i2t_r10']:.2f}   text→image {100 * m['t2i_r1']:.2f} / {100 * m['t2i_r5']:.2f} / "
             f"{100 * m['t2i_r10']:.2f}  ({len(emb.images)} images, {len(emb.texts)} captions"
             + (f", {emb.skipped} unreadable images skipped)" if emb.skipped else ")"))
    return records


def resolve_pairs(data: list[Path] | None, karpathy: Path | None, images: Path | None, split: str,
                  name: str | None = None) -> Pairs:
    if bool(data) == bool(karpathy):
        raise UsageError("give --data (dataprep folder or shards) or --karpathy JSON --images DIR, not both")
    if karpathy:
        if images is None:
            raise UsageError("--karpathy needs --images DIR (the folder its filenames are relative to)")
        return from_karpathy(karpathy, images, split, name)
    return from_shards(list(data), name)
