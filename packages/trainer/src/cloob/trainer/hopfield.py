"""Modern Hopfield retrieval, the parameter-free layer CLOOB puts in front of InfoLOOB."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hopfield_retrieval(state: torch.Tensor, memory: torch.Tensor,
                       beta: float | torch.Tensor) -> torch.Tensor:
    """H(S, M) = normalize(softmax(β S Mᵀ) M): one update step, no projections (as in the paper).

    `state` (N, d) queries the stored patterns `memory` (M, d); rows of the result are L2-normalised
    because InfoLOOB compares retrievals by cosine similarity."""
    attention = torch.softmax(beta * (state @ memory.t()), dim=-1)
    return F.normalize(attention @ memory, dim=-1)


def cloob_retrievals(image_features: torch.Tensor, text_features: torch.Tensor,
                     beta: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(U_xx, U_xy, U_yy, U_yx): image memory queried by images/texts, text memory by texts/images."""
    x, y = image_features, text_features
    return (hopfield_retrieval(x, x, beta), hopfield_retrieval(y, x, beta),
            hopfield_retrieval(y, y, beta), hopfield_retrieval(x, y, beta))
