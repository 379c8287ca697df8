"""The two exact tower shortcuts, before/after in one run: the text-padding trim
(`cloob.common.text`) and the last block run at the pooled token only (`cloob.common.last_block`).

Captions are the demo's (`cloob.dataprep.synthetic`, 10–20 tokens). Timed (forward+backward, one
thread): RN50's text tower (77-token context, 12 layers), tiny-vit's text tower (32-token context,
4 layers), the ViT image towers of tiny-vit (64 px) and ViT-B/32 (224 px), and a whole tiny-vit
training forward+backward. Each row: plain open_clip, then each shortcut added in turn ("+ text
trim" = trimmed, the last block still run at every token). The variants take turns in 3 rounds.
Run: `OMP_NUM_THREADS=1 uv run python -m bench.compare.tower_shortcuts`.
"""

from __future__ import annotations

import contextlib
import copy
import random
import statistics
from collections.abc import Callable, Iterator

import open_clip
import torch

import cloob.common.last_block as last_block
import cloob.trainer.models  # noqa: F401 - registers the 64 px configs
from bench._common import report, time_call
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


def _interleaved(steps: list[Callable[[], None]], rounds: int = 3, repeat: int = 2) -> list[float]:
    """Median seconds per step of each variant; the variants take turns within every round and
    the order rotates, so a machine whose load changes affects them alike."""
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        for i in [(r + j) % len(steps) for j in range(len(steps))]:
            times[i].append(time_call(steps[i], warmup=1, repeat=repeat))
    return [statistics.median(t) for t in times]


def _trim_only(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with _whole_last_block():
            step()

    return run


def _backward(fn: Callable[..., torch.Tensor], model: torch.nn.Module) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        fn().sum().backward()

    return step


def text_rows(captions: list[str]) -> list[list]:
    rows = []
    for name in ("RN50-quickgelu", "tiny-vit"):
        model = open_clip.create_model(name)
        tokens = open_clip.get_tokenizer(name)(captions)
        plain = _backward(lambda m=model, t=tokens: m.encode_text(t), model)
        ours = _backward(lambda m=model, t=tokens: encode_text(m, t), model)
        full, trimmed, both = _interleaved([plain, _trim_only(ours), ours])
        rows.append(
            [
                f"{name} text tower, batch {len(captions)}",
                f"{tokens.shape[1]} → {trim_padding(tokens).shape[1]}",
                full,
                trimmed,
                both,
            ]
        )
    return rows


def image_rows() -> list[list]:
    rows = []
    for name, batch in (("tiny-vit", 64), ("ViT-B-32-quickgelu", 16)):
        plain = open_clip.create_model(name)
        size = plain.visual.image_size
        images = torch.randn(batch, 3, *(size if isinstance(size, tuple) else (size, size)))
        ours = copy.deepcopy(plain)
        last_block.install_image_shortcut(ours)
        full, both = _interleaved(
            [_backward(lambda m=m, x=images: m.encode_image(x), m) for m in (plain, ours)]
        )
        rows.append([f"{name} image tower, batch {batch}", "–", full, full, both])
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
    short = trim_padding(tokens)
    full, trim, both = _interleaved(
        [step(plain, tokens), _trim_only(step(trimmed, short)), step(ours, short)], repeat=4
    )
    return [
        "tiny-vit training step, batch 32",
        f"{tokens.shape[1]} → {short.shape[1]}",
        full,
        trim,
        both,
    ]


def main() -> None:
    torch.manual_seed(0)
    captions = _captions(64)
    rows = [*text_rows(captions), *image_rows(), training_row(captions)]
    table = [
        [work, ctx, full * 1e3, trim * 1e3, ours * 1e3, full / trim, full / ours]
        for work, ctx, full, trim, ours in rows
    ]
    report(
        "tower_shortcuts",
        "Exact tower shortcuts on CPU, forward+backward ms (speed-up = plain ÷ ours)",
        [
            "work",
            "text context",
            "plain ms",
            "+ text trim ms",
            "+ last block ms",
            "trim ×",
            "both ×",
        ],
        table,
        {"threads": torch.get_num_threads()},
    )


if __name__ == "__main__":
    main()
