"""torchrun (env://) process groups and the feature gather that makes N×b equal one batch of N·b."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cloob.common.cli import UsageError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int) -> torch.device:
    """`--device auto | cpu | cuda`; asking for a GPU this machine lacks is one error line."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {requested!r}: choose from auto, cpu, cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: no CUDA GPU is visible here (torch.cuda.is_available() "
            "is False); use --device cpu or auto"
        )
    if local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"--device cuda: local rank {local_rank} needs GPU {local_rank}, but only "
            f"{torch.cuda.device_count()} are visible"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init(device: str = "auto", dist_url: str = "env://", backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK); alone otherwise.

    `dist_url` is accepted for the reference command (`--dist-url`); with torchrun it is env://."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if "MASTER_ADDR" in os.environ:
            # Under torchrun the rendezvous is in the environment; a reference-style
            # `--dist-url tcp://127.0.0.1:...` would point other nodes at themselves.
            dist_url = "env://"
        dist.init_process_group(
            backend,
            init_method=dist_url,
            world_size=world,
            rank=rank,
            timeout=datetime.timedelta(minutes=30),
        )
    return DistInfo(rank, local_rank, world, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands every rank the summed gradient of its own slice.

    Every rank computes the loss on the full gathered batch, so the gradient of the *sum* of those
    N identical losses w.r.t. my features is N·∂L/∂mine; DDP then averages parameter gradients
    over the N ranks, which gives exactly ∂L/∂θ of one process on the concatenated batch. Under
    --local-loss rank r computes N·L_r (its rows, averaged over its own rows) with Σ_r L_r = L:
    the same sum, so the same gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows in rank order, differentiable (identity on one process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over ranks, in place (unchanged on one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate all ranks' features in rank order, keeping the gradient path to every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return image_features, text_features
    both = gather_with_grad(torch.cat([image_features, text_features], dim=1))
    d = image_features.shape[1]
    return both[:, :d], both[:, d:]
