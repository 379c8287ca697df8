"""Contrastive objectives on L2-normalised features (N, d), each returning a scalar tensor.

`inv_tau` and `hopfield_beta` may be Python floats or 0-d tensors (learnable parameters).
The four methods: `clip` (InfoNCE), `cloob` (Hopfield + InfoLOOB), and the paper's two ablations
`infoloob` (InfoLOOB without Hopfield) and `hopfield_infonce` (Hopfield + InfoNCE).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cloob.trainer.hopfield import cloob_retrievals

METHODS = ("cloob", "clip", "infoloob", "hopfield_infonce")


def _targets(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def infonce(a: torch.Tensor, b: torch.Tensor, inv_tau: float | torch.Tensor) -> torch.Tensor:
    """One-directional InfoNCE: mean_i −log softmax_j(τ⁻¹⟨a_i, b_j⟩)_i."""
    return _infonce_logits(inv_tau * (a @ b.t()))


def _infonce_logits(logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, _targets(logits.shape[0], logits.device))


def infoloob(a: torch.Tensor, b: torch.Tensor, inv_tau: float | torch.Tensor) -> torch.Tensor:
    """L_LOOB(a, b) = τ · mean_i [−k_ii + log Σ_{j≠i} exp k_ij],  k = τ⁻¹ a bᵀ.

    The positive is excluded exactly (diagonal set to −inf before logsumexp) rather than with the
    reference's −1000 offset, which leaks exp(−1000 + k_ii)≈0 only for moderate τ⁻¹. The factor τ
    keeps gradient magnitudes independent of the temperature, as in the reference."""
    return _infoloob_logits(inv_tau * (a @ b.t()), inv_tau)


def _infoloob_logits(logits: torch.Tensor, inv_tau: float | torch.Tensor) -> torch.Tensor:
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    positives = logits.diagonal()
    negatives = torch.logsumexp(logits.masked_fill(eye, -math.inf), dim=1)
    return (negatives - positives).mean() / inv_tau


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              inv_tau: float | torch.Tensor) -> torch.Tensor:
    """½ [CE(τ⁻¹ X Yᵀ, I) + CE(τ⁻¹ Y Xᵀ, I)]; Y Xᵀ is the transpose of X Yᵀ (one matmul, not two)."""
    logits = (inv_tau * image_features) @ text_features.t()  # scale N×d, not N×N
    return 0.5 * (_infonce_logits(logits) + _infonce_logits(logits.t()))


def infoloob_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                  inv_tau: float | torch.Tensor) -> torch.Tensor:
    """L_LOOB(x, y) + L_LOOB(y, x): InfoLOOB without the Hopfield retrieval (one matmul)."""
    logits = (inv_tau * image_features) @ text_features.t()  # scale N×d, not N×N
    return _infoloob_logits(logits, inv_tau) + _infoloob_logits(logits.t(), inv_tau)


def cloob_loss(image_features: torch.Tensor, text_features: torch.Tensor,
               inv_tau: float | torch.Tensor, hopfield_beta: float | torch.Tensor) -> torch.Tensor:
    """L_LOOB(U_xx, U_xy) + L_LOOB(U_yy, U_yx)."""
    u_xx, u_xy, u_yy, u_yx = cloob_retrievals(image_features, text_features, hopfield_beta)
    return infoloob(u_xx, u_xy, inv_tau) + infoloob(u_yy, u_yx, inv_tau)


def hopfield_infonce_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          inv_tau: float | torch.Tensor,
                          hopfield_beta: float | torch.Tensor) -> torch.Tensor:
    """CE(τ⁻¹ U_xx U_xyᵀ, I) + CE(τ⁻¹ U_yy U_yxᵀ, I): CLOOB's retrievals with InfoNCE instead."""
    u_xx, u_xy, u_yy, u_yx = cloob_retrievals(image_features, text_features, hopfield_beta)
    return infonce(u_xx, u_xy, inv_tau) + infonce(u_yy, u_yx, inv_tau)


class ContrastiveLoss(nn.Module):
    """Base for the training-loop wrappers. τ⁻¹ lives in the model (open_clip's `logit_scale`, so
    checkpoints load in open_clip); β lives here because the CLIP model has no slot for it.

    β is stored as ln β (like τ⁻¹) so a learnable β stays positive."""

    uses_hopfield = False

    def __init__(self, hopfield_beta: float = 8.0, learnable_beta: bool = False) -> None:
        super().__init__()
        self.logit_beta = nn.Parameter(torch.tensor(math.log(hopfield_beta)),
                                       requires_grad=learnable_beta and self.uses_hopfield)

    @property
    def beta(self) -> torch.Tensor:
        return self.logit_beta.exp()

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                inv_tau: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClipLoss(ContrastiveLoss):
    def forward(self, image_features, text_features, inv_tau):
        return clip_loss(image_features, text_features, inv_tau)


class InfoLOOBLoss(ContrastiveLoss):
    def forward(self, image_features, text_features, inv_tau):
        return infoloob_loss(image_features, text_features, inv_tau)


class CloobLoss(ContrastiveLoss):
    uses_hopfield = True

    def forward(self, image_features, text_features, inv_tau):
        return cloob_loss(image_features, text_features, inv_tau, self.beta)


class HopfieldInfoNCELoss(ContrastiveLoss):
    uses_hopfield = True

    def forward(self, image_features, text_features, inv_tau):
        return hopfield_infonce_loss(image_features, text_features, inv_tau, self.beta)


_LOSSES: dict[str, type[ContrastiveLoss]] = {
    "cloob": CloobLoss, "clip": ClipLoss, "infoloob": InfoLOOBLoss,
    "hopfield_infonce": HopfieldInfoNCELoss,
}


def create_loss(method: str, hopfield_beta: float = 8.0,
                learnable_beta: bool = False) -> ContrastiveLoss:
    if method not in _LOSSES:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return _LOSSES[method](hopfield_beta, learnable_beta)
