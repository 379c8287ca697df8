"""Modern Hopfield retrieval, the parameter-free layer CLOOB puts in front of InfoLOOB."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hopfield_retrieval(
    state: torch.Tensor, memory: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """H(S, M) = normalize(softmax(β S Mᵀ) M): one update step, no projections (as in the paper).

    `state` (n, d) queries the stored patterns `memory` (N, d); rows of the result are
    L2-normalised because InfoLOOB compares retrievals by cosine similarity. The update is
    attention with q = β·S, k = v = M and scale 1 (β on the queries, so a learnable β gets its
    gradient): `scaled_dot_product_attention` runs it with fused kernels (flash / memory-efficient
    on GPU, flash on CPU), in O(n·d) memory instead of an n×N softmax."""
    kv = memory[None, None]
    retrieved = F.scaled_dot_product_attention((beta * state)[None, None], kv, kv, scale=1.0)
    return F.normalize(retrieved[0, 0], dim=-1)


def cloob_retrievals(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    beta: float | torch.Tensor,
    rows: slice | None = None,
) -> tuple[torch.Tensor, ...]:
    """(U_xx, U_xy, U_yy, U_yx): image memory queried by images/texts, text memory by texts/images.

    With `rows` only those samples query (the memories stay the whole batch): this rank's
    retrievals under --local-loss, O(rows · N · d) work."""
    x, y = image_features, text_features
    xs, ys = (x, y) if rows is None else (x[rows], y[rows])
    return (
        hopfield_retrieval(xs, x, beta),
        hopfield_retrieval(ys, x, beta),
        hopfield_retrieval(ys, y, beta),
        hopfield_retrieval(xs, y, beta),
    )
