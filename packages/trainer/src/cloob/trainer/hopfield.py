"""Modern Hopfield retrieval, the parameter-free layer CLOOB puts in front of InfoLOOB."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hopfield_retrieval(state: torch.Tensor, memory: torch.Tensor,
                       beta: float | torch.Tensor) -> torch.Tensor:
    """H(S, M) = normalize(softmax(β S Mᵀ) M): one update step, no projections (as in the paper).

    `state` (N, d) queries the stored patterns `memory` (M, d); rows of the result are L2-normalised
    because InfoLOOB compares retrievals by cosine similarity."""
    return _retrieve(state @ memory.t(), memory, beta)


def cloob_retrievals(image_features: torch.Tensor, text_features: torch.Tensor,
                     beta: float | torch.Tensor, rows: slice | None = None) -> tuple[torch.Tensor, ...]:
    """(U_xx, U_xy, U_yy, U_yx): image memory queried by images/texts, text memory by texts/images.

    Same as four `hopfield_retrieval` calls, but y xᵀ is the transpose of x yᵀ: three similarity
    matmuls instead of four. With `rows` only those samples query (the memories stay the whole
    batch): the retrievals of this rank's rows under --local-loss, O(rows · N · d)."""
    x, y = image_features, text_features
    if rows is not None:
        xs, ys = x[rows], y[rows]
        return (_retrieve(xs @ x.t(), x, beta), _retrieve(ys @ x.t(), x, beta),
                _retrieve(ys @ y.t(), y, beta), _retrieve(xs @ y.t(), y, beta))
    xy = x @ y.t()
    return (_retrieve(x @ x.t(), x, beta), _retrieve(xy.t(), x, beta),
            _retrieve(y @ y.t(), y, beta), _retrieve(xy, y, beta))


def _retrieve(similarity: torch.Tensor, memory: torch.Tensor,
              beta: float | torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.softmax(beta * similarity, dim=-1) @ memory, dim=-1)
