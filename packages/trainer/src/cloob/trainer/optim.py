"""The optimizer side of a run: AdamW's two parameter groups, the learning-rate schedule, and one
update from accumulated gradients (clipping and loss scaling included)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from cloob.trainer.config import OptimConfig


def learning_rate(
    step: int, *, base_lr: float, warmup: int, total: int, kind: str, cycles: int = 1
) -> float:
    """Linear warmup over `warmup` steps, then cosine / cosine with hard restarts / constant."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if kind == "const":
        return base_lr
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * base_lr
    if progress >= 1.0:  # cosine-restarts, as in transformers' hard-restarts schedule
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))) * base_lr


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule of a run (stored in checkpoints as a dict, plus the step)."""

    base_lr: float
    warmup: int
    total: int  # optimizer steps in the run
    kind: str  # cosine | cosine-restarts | const
    cycles: int = 1  # cosine-restarts only

    @classmethod
    def of(cls, optim: OptimConfig, total_steps: int) -> Schedule:
        """`optim` with its defaults resolved (`config.resolve_optim_defaults`)."""
        assert optim.lr is not None, "resolve_optim_defaults first"
        return cls(
            base_lr=optim.lr,
            warmup=optim.warmup,
            total=total_steps,
            kind=optim.lr_scheduler,
            cycles=optim.restart_cycles,
        )

    def lr(self, step: int) -> float:
        return learning_rate(
            step,
            base_lr=self.base_lr,
            warmup=self.warmup,
            total=self.total,
            kind=self.kind,
            cycles=self.cycles,
        )


def param_groups(model: nn.Module, loss_fn: nn.Module, wd: float) -> list[dict[str, Any]]:
    """The reference's two AdamW groups: no weight decay for bn / ln / bias / logit_scale (and
    β)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    named = [*model.named_parameters(), *(("loss." + n, p) for n, p in loss_fn.named_parameters())]
    for name, p in named:
        if not p.requires_grad:
            continue
        skip = any(s in name for s in ("bn", "ln", "bias", "logit_scale", "logit_beta"))
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def make_optimizer(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float
) -> torch.optim.Optimizer:
    # fused AdamW runs one kernel per step on CPU and GPU in current torch; foreach otherwise.
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def for_config(model: nn.Module, loss_fn: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW as `optim` says (its defaults resolved: `config.resolve_optim_defaults`)."""
    assert optim.lr is not None and optim.beta2 is not None and optim.eps is not None, (
        "resolve_optim_defaults first"
    )
    return make_optimizer(
        param_groups(model, loss_fn, optim.wd), optim.lr, (optim.beta1, optim.beta2), optim.eps
    )


def apply_gradients(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    params: Any,
    clip_norm: float | None,
) -> None:
    """One optimizer step from the accumulated gradients: unscaled (with a grad scaler), clipped
    to `clip_norm` when set, then stepped (the scaler skips steps with inf/nan gradients)."""
    if clip_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
