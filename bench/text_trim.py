"""The exact text-padding trim (`cloob.common.text`), before/after in one run.

Captions are the demo's (`cloob.dataprep.synthetic`, 10–20 tokens). Timed: forward+backward of
the text tower alone (RN50's 77-token, 12-layer tower and tiny-vit's 32-token one), a whole
tiny-vit training forward+backward, and building a zero-shot classifier (forward only), each
with the full context vs trimmed to the batch's longest caption. Rounds alternate the order.
Run: `OMP_NUM_THREADS=1 uv run python bench/text_trim.py`.
"""

from __future__ import annotations

import random
import statistics

import open_clip
import torch
from _common import report, time_call

import cloob.trainer.models  # noqa: F401 - registers the 64 px configs
from cloob.common.text import encode_text, install, trim_padding
from cloob.dataprep.synthetic import describe, random_scene


def _captions(n: int) -> list[str]:
    rng = random.Random(0)
    return [describe(random_scene(rng), rng) for _ in range(n)]


def _text_step(model, tokens, trimmed: bool):
    def step():
        model.zero_grad(set_to_none=True)
        feats = encode_text(model, tokens) if trimmed else model.encode_text(tokens)
        feats.sum().backward()
    return step


def _train_step(model, images, tokens):
    def step():
        model.zero_grad(set_to_none=True)
        img, txt, scale = model(images, tokens)
        (scale * img @ txt.T).logsumexp(1).mean().backward()
    return step


def main() -> None:
    torch.manual_seed(0)
    rows = []
    captions = _captions(64)
    for name in ("RN50-quickgelu", "tiny-vit"):
        model = open_clip.create_model(name)
        tokens = open_clip.get_tokenizer(name)(captions)
        full = [time_call(_text_step(model, tokens, False), warmup=1, repeat=3) for _ in range(2)]
        trim = [time_call(_text_step(model, tokens, True), warmup=1, repeat=3) for _ in range(2)]
        rows.append([f"{name} text tower fwd+bwd, batch 64", tokens.shape[1],
                     trim_padding(tokens).shape[1], statistics.median(full) * 1e3,
                     statistics.median(trim) * 1e3, statistics.median(full) / statistics.median(trim)])
    model = open_clip.create_model("tiny-vit")
    tokens = open_clip.get_tokenizer("tiny-vit")(captions[:32])
    images = torch.randn(32, 3, 64, 64)
    full = time_call(_train_step(model, images, tokens), warmup=1, repeat=5)
    install(model)
    trim = time_call(_train_step(model, images, trim_padding(tokens)), warmup=1, repeat=5)
    rows.append(["tiny-vit training fwd+bwd, batch 32", tokens.shape[1],
                 trim_padding(tokens).shape[1], full * 1e3, trim * 1e3, full / trim])
    report("text_trim", "Exact text-padding trim on CPU (ms; speed-up = full ÷ trimmed)",
           ["work", "context", "trimmed to", "full ms", "trimmed ms", "speed-up"], rows,
           {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
