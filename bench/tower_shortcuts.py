"""The two exact tower shortcuts, before/after in one run: the text-padding trim
(`cloob.common.text`) and the last block run at the pooled token only (`cloob.common.last_block`).

Captions are the demo's (`cloob.dataprep.synthetic`, 10–20 tokens). Timed (forward+backward, one
thread): RN50's text tower (77-token context, 12 layers), tiny-vit's text tower (32-token context,
4 layers), the ViT image towers of tiny-vit (64 px) and ViT-B/32 (224 px), and a whole tiny-vit
training forward+backward. Each row: plain open_clip, then each shortcut added in turn
("full block" = trimmed, but the last block still run at every token). Rounds alternate the order.
Run: `OMP_NUM_THREADS=1 uv run python bench/tower_shortcuts.py`.
"""

from __future__ import annotations

import contextlib
import copy
import random
import statistics
from collections.abc import Callable, Iterator

import open_clip
import torch
from _common import report, time_call

import cloob.common.last_block as last_block
import cloob.trainer.models  # noqa: F401 - registers the 64 px configs
from cloob.common.text import encode_text, install, trim_padding
from cloob.dataprep.synthetic import describe, random_scene


def _captions(n: int) -> list[str]:
    rng = random.Random(0)
    return [describe(random_scene(rng), rng) for _ in range(n)]


@contextlib.contextmanager
def _whole_last_block() -> Iterator[None]:
    """The trimmed text path with its last block run at every token (change 3 alone)."""
    shortcut = last_block.last_block_at

    def whole(transformer, x, index=None):
        block = transformer.resblocks[-1]
        n = x.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1) if index is not None else None
        y = block(x, attn_mask=mask)
        return y[:, 0] if index is None else y[torch.arange(x.shape[0]), index]

    last_block.last_block_at = whole
    try:
        yield
    finally:
        last_block.last_block_at = shortcut


def _timed(step: Callable[[], None], rounds: int = 2, repeat: int = 3) -> float:
    return statistics.median(time_call(step, warmup=1, repeat=repeat) for _ in range(rounds))


def _backward(fn: Callable[[], torch.Tensor], model: torch.nn.Module) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        fn().sum().backward()
    return step


def text_rows(captions: list[str]) -> list[list]:
    rows = []
    for name in ("RN50-quickgelu", "tiny-vit"):
        model = open_clip.create_model(name)
        tokens = open_clip.get_tokenizer(name)(captions)
        full = _timed(_backward(lambda m=model, t=tokens: m.encode_text(t), model))
        with _whole_last_block():
            trimmed = _timed(_backward(lambda m=model, t=tokens: encode_text(m, t), model))
        ours = _timed(_backward(lambda m=model, t=tokens: encode_text(m, t), model))
        rows.append([f"{name} text tower, batch {len(captions)}",
                     f"{tokens.shape[1]} → {trim_padding(tokens).shape[1]}", full, trimmed, ours])
    return rows


def image_rows() -> list[list]:
    rows = []
    for name, batch in (("tiny-vit", 64), ("ViT-B-32-quickgelu", 16)):
        model = open_clip.create_model(name)
        size = model.visual.image_size
        images = torch.randn(batch, 3, *(size if isinstance(size, tuple) else (size, size)))
        full = _timed(_backward(lambda m=model, x=images: m.encode_image(x), model), repeat=2)
        last_block.install_image_shortcut(model)
        ours = _timed(_backward(lambda m=model, x=images: m.encode_image(x), model), repeat=2)
        rows.append([f"{name} image tower, batch {batch}", "–", full, full, ours])
    return rows


def training_row(captions: list[str]) -> list:
    plain = open_clip.create_model("tiny-vit")
    tokens = open_clip.get_tokenizer("tiny-vit")(captions[:32])
    images = torch.randn(32, 3, 64, 64)

    def step(model, toks):
        def run() -> None:
            model.zero_grad(set_to_none=True)
            img, txt, scale = model(images, toks)
            (scale * img @ txt.T).logsumexp(1).mean().backward()
        return run

    trimmed = copy.deepcopy(plain)
    install(trimmed)
    ours = copy.deepcopy(trimmed)
    last_block.install_image_shortcut(ours)
    full_ms = _timed(step(plain, tokens), repeat=5)
    with _whole_last_block():
        trimmed_ms = _timed(step(trimmed, trim_padding(tokens)), repeat=5)
    ours_ms = _timed(step(ours, trim_padding(tokens)), repeat=5)
    return ["tiny-vit training step, batch 32",
            f"{tokens.shape[1]} → {trim_padding(tokens).shape[1]}", full_ms, trimmed_ms, ours_ms]


def main() -> None:
    torch.manual_seed(0)
    captions = _captions(64)
    rows = [*text_rows(captions), *image_rows(), training_row(captions)]
    table = [[work, ctx, full * 1e3, trim * 1e3, ours * 1e3, full / trim, full / ours]
             for work, ctx, full, trim, ours in rows]
    report("tower_shortcuts",
           "Exact tower shortcuts on CPU, forward+backward ms (speed-up = plain ÷ ours)",
           ["work", "text context", "plain ms", "+ text trim ms", "+ last block ms",
            "trim ×", "both ×"], table, {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
