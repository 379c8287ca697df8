"""Contrastive objectives on L2-normalised features (N, d), each returning a scalar tensor.

`inv_tau` and `beta` may be Python floats or 0-d tensors (learnable parameters).
The methods: `clip` (InfoNCE), `cloob` (Hopfield + InfoLOOB), the paper's two ablations
`infoloob` (InfoLOOB without Hopfield) and `hopfield_infonce` (Hopfield + InfoNCE), and `siglip`
(the pairwise sigmoid loss of Zhai et al. 2023, arXiv 2303.15343, with a learnable bias).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cloob.trainer import methods
from cloob.trainer.hopfield import cloob_retrievals


@dataclass(frozen=True)
class LocalRows:
    """--local-loss: this rank's rows [start, stop) of the gathered batch, and the all-gather (with
    gradient, rank order) that makes per-row retrievals global. Each rank then computes only its
    rows of every N×N matrix, normalised by its own row count: the mean over ranks is the
    objective, and the gradients summed by the gathers and averaged by DDP are its gradient."""

    start: int
    stop: int
    gather: Callable[[torch.Tensor], torch.Tensor]

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def infonce(a: torch.Tensor, b: torch.Tensor, inv_tau: float | torch.Tensor) -> torch.Tensor:
    """One-directional InfoNCE: mean_i −log softmax_j(τ⁻¹⟨a_i, b_j⟩)_i."""
    return _infonce_logits(inv_tau * (a @ b.t()))


def _infonce_logits(logits: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Row i's positive is column offset + i (offset: where these rows start in the batch)."""
    n = logits.shape[0]
    return F.cross_entropy(logits, torch.arange(offset, offset + n, device=logits.device))


def infoloob(a: torch.Tensor, b: torch.Tensor, inv_tau: float | torch.Tensor) -> torch.Tensor:
    """L_LOOB(a, b) = τ · mean_i [−k_ii + log Σ_{j≠i} exp k_ij],  k = τ⁻¹ a bᵀ.

    The positive is excluded exactly (set to −inf before logsumexp); the reference zeroes the
    diagonal and subtracts 1000 there, which is the same to float precision. The factor τ keeps
    gradient magnitudes independent of the temperature, as in the reference."""
    return _infoloob_logits(inv_tau * (a @ b.t()), inv_tau)


def _infoloob_logits(
    logits: torch.Tensor, inv_tau: float | torch.Tensor, offset: int = 0
) -> torch.Tensor:
    n = logits.shape[0]
    i = torch.arange(n, device=logits.device)
    positives = logits[i, i + offset]
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[i, i + offset] = True
    negatives = torch.logsumexp(logits.masked_fill(mask, -math.inf), dim=1)
    return (negatives - positives).mean() / inv_tau


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: float | torch.Tensor,
    local: LocalRows | None = None,
) -> torch.Tensor:
    """½ [CE(τ⁻¹ X Yᵀ, I) + CE(τ⁻¹ Y Xᵀ, I)]; Y Xᵀ is the transpose of X Yᵀ (one matmul, not
    two)."""
    x, y = image_features, text_features
    if local is not None:
        r = local.rows
        return 0.5 * (
            _infonce_logits((inv_tau * x[r]) @ y.t(), local.start)
            + _infonce_logits((inv_tau * y[r]) @ x.t(), local.start)
        )
    logits = (inv_tau * x) @ y.t()  # scale N×d, not N×N
    return 0.5 * (_infonce_logits(logits) + _infonce_logits(logits.t()))


def infoloob_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: float | torch.Tensor,
    local: LocalRows | None = None,
) -> torch.Tensor:
    """L_LOOB(x, y) + L_LOOB(y, x): InfoLOOB without the Hopfield retrieval (one matmul)."""
    x, y = image_features, text_features
    if local is not None:
        r = local.rows
        return _infoloob_logits((inv_tau * x[r]) @ y.t(), inv_tau, local.start) + _infoloob_logits(
            (inv_tau * y[r]) @ x.t(), inv_tau, local.start
        )
    logits = (inv_tau * x) @ y.t()  # scale N×d, not N×N
    return _infoloob_logits(logits, inv_tau) + _infoloob_logits(logits.t(), inv_tau)


def _retrieved_pairs(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    beta: float | torch.Tensor,
    local: LocalRows | None,
):
    """((U_xx, U_xy), (U_yy, U_yx)) as (anchors, candidates): with `local`, this rank's anchors
    against every rank's candidates (gathered with gradient)."""
    if local is None:
        u_xx, u_xy, u_yy, u_yx = cloob_retrievals(image_features, text_features, beta)
        return (u_xx, u_xy), (u_yy, u_yx), 0
    u_xx, u_xy, u_yy, u_yx = cloob_retrievals(image_features, text_features, beta, local.rows)
    return (u_xx, local.gather(u_xy)), (u_yy, local.gather(u_yx)), local.start


def cloob_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: float | torch.Tensor,
    beta: float | torch.Tensor,
    local: LocalRows | None = None,
) -> torch.Tensor:
    """L_LOOB(U_xx, U_xy) + L_LOOB(U_yy, U_yx)."""
    (u_xx, u_xy), (u_yy, u_yx), off = _retrieved_pairs(image_features, text_features, beta, local)
    return (
        _contrast(u_xx, u_xy, inv_tau, off, leave_one_out=True) / inv_tau
        + _contrast(u_yy, u_yx, inv_tau, off, leave_one_out=True) / inv_tau
    )


def hopfield_infonce_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: float | torch.Tensor,
    beta: float | torch.Tensor,
    local: LocalRows | None = None,
) -> torch.Tensor:
    """CE(τ⁻¹ U_xx U_xyᵀ, I) + CE(τ⁻¹ U_yy U_yxᵀ, I): CLOOB's retrievals with InfoNCE instead."""
    (u_xx, u_xy), (u_yy, u_yx), off = _retrieved_pairs(image_features, text_features, beta, local)
    return _contrast(u_xx, u_xy, inv_tau, off, leave_one_out=False) + _contrast(
        u_yy, u_yx, inv_tau, off, leave_one_out=False
    )


def _contrast(
    a: torch.Tensor,
    b: torch.Tensor,
    inv_tau: float | torch.Tensor,
    offset: int,
    *,
    leave_one_out: bool,
) -> torch.Tensor:
    """mean_i [log Σ_j exp(τ⁻¹⟨a_i, b_j⟩) − τ⁻¹⟨a_i, b_{offset+i}⟩], the positive left out of the
    sum for InfoLOOB. Up to CHUNK logits autograd keeps them (fastest); beyond, _RowLogSumExp
    recomputes them in backward so that the n×N matrix is never held whole."""
    scaled = inv_tau * a
    positives = (scaled * b[offset : offset + a.shape[0]]).sum(dim=-1)
    skip = offset if leave_one_out else None
    if a.shape[0] * b.shape[0] > _RowLogSumExp.CHUNK:
        lse = _RowLogSumExp.apply(scaled, b, skip)
    else:
        ((_, logits),) = _RowLogSumExp._chunks(scaled, b, skip, step=a.shape[0])
        lse = torch.logsumexp(logits, dim=1)
    return (lse - positives).mean()


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: float | torch.Tensor,
    bias: float | torch.Tensor,
    local: LocalRows | None = None,
) -> torch.Tensor:
    """−(1/N) Σ_ij log σ(z_ij (τ⁻¹⟨x_i, y_j⟩ + b)), z_ii = +1 and z_ij = −1 off the diagonal.

    A sum over all N² pairs divided by the number of images (as in SigLIP and OpenCLIP), so it is
    not symmetrised: each pair is counted once. With `local`, this rank's image rows against all
    texts, divided by its own row count: the mean over ranks is the objective, per-rank memory
    O(n·N)."""
    x, y = image_features, text_features
    offset = 0
    if local is not None:
        x, offset = x[local.rows], local.start
    signed = -(
        (inv_tau * x) @ y.t() + bias
    )  # z_ij · logit_ij for the negatives; scale N×d, not N×N
    i = torch.arange(signed.shape[0], device=signed.device)
    # flip the positives back in place (not log σ(−s) + s, which cancels in fp32 for large s)
    signed[i, i + offset] = -signed[i, i + offset]
    return -F.logsigmoid(signed).sum() / signed.shape[0]


class _RowLogSumExp(torch.autograd.Function):
    """logsumexp_j ⟨a_i, b_j⟩ for every row i (entry (i, skip + i) excluded when `skip` is set),
    computed in row chunks of about CHUNK elements. Only the inputs and the (n,) result are kept
    for backward, which recomputes each chunk: O(chunk · N) memory instead of O(n · N), for one
    more matmul."""

    CHUNK = 1 << 24  # logits per chunk (64 MiB in fp32): N ≤ 4096 is one chunk

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, skip: int | None) -> torch.Tensor:
        out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
        for rows, logits in _RowLogSumExp._chunks(a, b, skip):
            out[rows] = torch.logsumexp(logits, dim=1)
        ctx.save_for_backward(a, b, out)
        ctx.skip = skip
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b, lse = ctx.saved_tensors
        grad_a, grad_b = torch.empty_like(a), torch.zeros_like(b)
        for rows, logits in _RowLogSumExp._chunks(a, b, ctx.skip):
            weights = torch.exp(logits - lse[rows, None]) * grad[rows, None]  # softmax · upstream
            grad_a[rows] = weights @ b
            grad_b.addmm_(weights.t(), a[rows])
        return grad_a, grad_b, None

    @staticmethod
    def _chunks(a: torch.Tensor, b: torch.Tensor, skip: int | None, step: int | None = None):
        step = step or max(1, _RowLogSumExp.CHUNK // max(1, b.shape[0]))
        for start in range(0, a.shape[0], step):
            rows = slice(start, min(start + step, a.shape[0]))
            logits = a[rows] @ b.t()
            if skip is not None:
                i = torch.arange(logits.shape[0], device=logits.device)
                logits[i, i + start + skip] = -math.inf
            yield rows, logits


class ContrastiveLoss(nn.Module):
    """Base for the training-loop wrappers. τ⁻¹ lives in the model (open_clip's `logit_scale`, so
    checkpoints load in open_clip); β lives here because the CLIP model has no slot for it.

    β is stored as ln β (like τ⁻¹) so a learnable β stays positive."""

    uses_hopfield = False

    def __init__(self, beta: float = 8.0, learnable_beta: bool = False, **_: object) -> None:
        super().__init__()
        self.logit_beta = nn.Parameter(
            torch.tensor(math.log(beta)),
            requires_grad=learnable_beta and self.uses_hopfield,
        )

    @property
    def beta(self) -> torch.Tensor:
        return self.logit_beta.exp()

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        inv_tau: torch.Tensor,
        local: LocalRows | None = None,
    ) -> torch.Tensor:
        """The objective on the gathered batch; with `local`, this rank's rows of it."""
        raise NotImplementedError


class ClipLoss(ContrastiveLoss):
    def forward(self, image_features, text_features, inv_tau, local=None):
        return clip_loss(image_features, text_features, inv_tau, local)


class InfoLOOBLoss(ContrastiveLoss):
    def forward(self, image_features, text_features, inv_tau, local=None):
        return infoloob_loss(image_features, text_features, inv_tau, local)


class CloobLoss(ContrastiveLoss):
    uses_hopfield = True

    def forward(self, image_features, text_features, inv_tau, local=None):
        return cloob_loss(image_features, text_features, inv_tau, self.beta, local)


class HopfieldInfoNCELoss(ContrastiveLoss):
    uses_hopfield = True

    def forward(self, image_features, text_features, inv_tau, local=None):
        return hopfield_infonce_loss(image_features, text_features, inv_tau, self.beta, local)


class SigLipLoss(ContrastiveLoss):
    """The sigmoid loss; its bias b lives here (like β), learnable together with τ⁻¹. SigLIP's
    initialisation: τ⁻¹ = 10 (logit scale ln 10), b = −10, so that at the start every pair looks
    negative, which N² − N of them are."""

    def __init__(
        self,
        beta: float = 8.0,
        learnable_beta: bool = False,
        *,
        init_bias: float = -10.0,
        learnable_bias: bool = True,
    ) -> None:
        super().__init__(beta, learnable_beta)
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learnable_bias)

    def forward(self, image_features, text_features, inv_tau, local=None):
        return siglip_loss(image_features, text_features, inv_tau, self.logit_bias, local)


_LOSSES: dict[str, type[ContrastiveLoss]] = {
    "cloob": CloobLoss,
    "clip": ClipLoss,
    "infoloob": InfoLOOBLoss,
    "hopfield_infonce": HopfieldInfoNCELoss,
    "siglip": SigLipLoss,
}
METHODS = methods.METHODS  # the --method choices
assert set(_LOSSES) == set(METHODS), "cloob.trainer.methods and _LOSSES must list the same methods"


def create_loss(
    method: str,
    beta: float = 8.0,
    learnable_beta: bool = False,
    *,
    init_bias: float = -10.0,
    learnable_bias: bool = True,
) -> ContrastiveLoss:
    if method not in _LOSSES:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "siglip":
        return SigLipLoss(beta, learnable_beta, init_bias=init_bias, learnable_bias=learnable_bias)
    return _LOSSES[method](beta, learnable_beta)
