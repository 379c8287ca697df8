"""Exact text-padding trim for open_clip's causal text towers.

Captions are 10–20 tokens, but the tokenizer pads to the context length (77 for the paper's
models) and the text tower runs every position. With the causal mask the features at the
end-of-text token depend only on the positions before it, and OpenAI-style towers pool exactly
there (`text_pool_type == "argmax"`: the end-of-text token has the largest id). So running a
batch only up to its longest caption gives the same text features (to float rounding) at a
fraction of the cost. Towers that pool elsewhere or attend bidirectionally are left untouched.

torch/open_clip are imported lazily: `common` is also used by `dataprep`.
"""

from __future__ import annotations

import functools
from typing import Any


def trimmable(model: Any) -> bool:
    """True for open_clip CLIP models whose text features are exact under the trim."""
    import open_clip

    from cloob.common.last_block import blocks_supported

    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
        and blocks_supported(model.transformer)
    )


def trim_padding(tokens: Any) -> Any:
    """`tokens` (B, context) cut after the batch's last end-of-text token (its largest id)."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :length]


def encode_text(model: Any, tokens: Any, normalize: bool = False) -> Any:
    """`model.encode_text(tokens)` on the trimmed tokens when exact, the plain call otherwise."""
    if not trimmable(model):  # any model with encode_text(tokens), as open_clip's own call
        return model.encode_text(tokens, normalize=True) if normalize else model.encode_text(tokens)
    return _encode_trimmed(model, trim_padding(tokens), normalize)


def install(model: Any) -> bool:
    """Make `model.encode_text` (and so `model(images, texts)`) accept tokens of any length up to
    the context length, so a data pipeline can trim them on the host (no device sync). An
    instance attribute: the state dict, and so the checkpoints, stay open_clip's."""
    if not trimmable(model):
        return False
    # a partial of a module-level function (not a closure, not a bound method, which pickle looks
    # up by name on the class): deepcopy and pickle rebind it to the copy
    model.encode_text = functools.partial(_encode_trimmed, model)
    return True


def _encode_trimmed(model: Any, tokens: Any, normalize: bool = False) -> Any:
    """open_clip's CLIP.encode_text with the positional embedding and causal mask cut to the
    tokens' length, and the last block run at the end-of-text token only (argmax pooling, as
    `trimmable` guarantees; see `cloob.common.last_block`)."""
    import torch
    import torch.nn.functional as F

    from cloob.common.last_block import last_block_at, run_blocks

    n = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:n].to(cast_dtype)
    x = run_blocks(model.transformer, x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(last_block_at(model.transformer, x, tokens.argmax(dim=-1)))
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1) if normalize else x
