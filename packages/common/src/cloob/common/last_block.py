"""Run a pooled tower's last transformer block only where the pooling reads it.

A CLIP tower keeps one token of its last block's output: the class token (ViT, `pool_type
"tok"`) or the end-of-text token (text, argmax pooling). Everything in a block except attention
acts on each token alone, and attention needs the other tokens only as keys and values. So the
last block can take its queries, output projection, residuals and MLP at the pooled token only,
with keys and values from every token: the same features (to float rounding) for about 3/4 less
of that block's work — a quarter of a 4-layer tower, a sixteenth of a 12-layer one — in the
forward and the backward pass.

`install_image_shortcut` sets it up for ViT image towers (the text side lives in
`cloob.common.text`); the state dict, so the checkpoints, stay open_clip's.

torch/open_clip are imported lazily: `common` is also used by `dataprep`.
"""

from __future__ import annotations

import functools
from typing import Any


def blocks_supported(transformer: Any) -> bool:
    """open_clip's plain pre-norm blocks, batch first (what this module re-implements)."""
    from open_clip.transformer import ResidualAttentionBlock, Transformer

    return (
        isinstance(transformer, Transformer)
        and transformer.batch_first
        and len(transformer.resblocks) > 0
        and all(
            type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv")
            for b in transformer.resblocks
        )
    )


def run_blocks(transformer: Any, x: Any, attn_mask: Any = None) -> Any:
    """`transformer(x, attn_mask)` without its last block (gradient checkpointing honoured)."""
    from torch.utils.checkpoint import checkpoint

    for block in transformer.resblocks[:-1]:
        if transformer.grad_checkpointing:
            x = checkpoint(block, x, None, None, attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=attn_mask)
    return x


def last_block_at(transformer: Any, x: Any, index: Any = None) -> Any:
    """The last block's output (B, D) at token `index` (B,) of each sequence, or at token 0
    when `index` is None. With an index, keys after it are masked: the causal mask's row there."""
    from torch.utils.checkpoint import checkpoint

    block = transformer.resblocks[-1]
    if transformer.grad_checkpointing:
        return checkpoint(_block_rows, block, x, index, use_reentrant=False)
    return _block_rows(block, x, index)


def _block_rows(block: Any, x: Any, index: Any) -> Any:
    import torch

    h = block.ln_1(x)
    padding: Any = None
    if index is None:
        query, residual = h[:, :1], x[:, :1]
    else:
        rows = torch.arange(x.shape[0], device=x.device)
        query, residual = h[rows, index].unsqueeze(1), x[rows, index].unsqueeze(1)
        # one query per sequence: the causal mask's row is a key padding mask
        padding = torch.arange(x.shape[1], device=x.device)[None, :] > index[:, None]
    attended = block.attn(query, h, h, need_weights=False, key_padding_mask=padding)[0]
    y = residual + block.ls_1(attended)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y[:, 0]


def image_shortcut_supported(visual: Any) -> bool:
    """ViT towers that pool the class token (per-token LN, no attention pooler, no token output)."""
    from open_clip.transformer import VisionTransformer

    return (
        isinstance(visual, VisionTransformer)
        and visual.attn_pool is None
        and visual.pool_type == "tok"
        and not visual.output_tokens
        and blocks_supported(visual.transformer)
    )


def install_image_shortcut(model: Any) -> bool:
    """Make `model.visual` (so `encode_image` and `model(images, texts)`) run its last block at
    the class token only. An instance attribute (a partial of a module-level function, so deepcopy
    and pickle rebind it to the copy); the state dict is unchanged."""
    visual = getattr(model, "visual", None)
    if visual is None or not image_shortcut_supported(visual):
        return False
    visual.forward = functools.partial(_vit_forward, visual)
    return True


def _vit_forward(visual: Any, images: Any) -> Any:
    """open_clip's VisionTransformer.forward for class-token pooling, last block at that token."""
    x = run_blocks(visual.transformer, visual._embeds(images))
    pooled = visual.ln_post(
        last_block_at(visual.transformer, x)
    )  # LN is per token: same either way
    return pooled @ visual.proj if visual.proj is not None else pooled
