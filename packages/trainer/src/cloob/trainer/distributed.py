"""The process group (whichever launcher started the ranks, see `launch`) and the feature gather
that makes N×b equal one batch of N·b."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cloob.common.cli import UsageError, first_line
from cloob.trainer.launch import Launch, from_env

# How long a collective may wait: rank 0 evaluates (zero-shot on ImageNet: minutes) while the other
# ranks wait at a barrier. The rendezvous has its own, shorter bound (--rendezvous-timeout).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)

T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    launch: Launch = field(default_factory=Launch)
    # a gloo group for small host-side agreements (the stop flag) when the default group is NCCL;
    # None: the default group
    host_group: Any = None

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


def init(
    device: str = "auto",
    dist_url: str = "env://",
    backend: str | None = None,
    rendezvous_timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> DistInfo:
    """Join the process group the launcher describes (torchrun, srun, mpirun; see `launch`);
    alone otherwise. Every rank must arrive within `rendezvous_timeout` seconds, else one error
    line says who is missing."""
    launch = from_env(os.environ if env is None else env, dist_url)
    dev = pick_device(device, launch.local_rank)
    host_group = None
    if launch.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        _join(launch, backend, rendezvous_timeout)
        if backend != "gloo":  # the stop flag is read on the host: no device sync per step
            host_group = dist.new_group(backend="gloo")
    return DistInfo(launch.rank, launch.local_rank, launch.world_size, dev, launch, host_group)


def _join(launch: Launch, backend: str, timeout: float) -> None:
    if launch.init_method is not None:  # torchrun's agent store, or a shared file
        dist.init_process_group(
            backend,
            init_method=launch.init_method,
            world_size=launch.world_size,
            rank=launch.rank,
            timeout=COLLECTIVE_TIMEOUT,
        )
        return
    store = rendezvous(launch, timeout)
    store.set_timeout(COLLECTIVE_TIMEOUT)  # from here on the store serves the collectives
    dist.init_process_group(
        backend,
        store=store,
        world_size=launch.world_size,
        rank=launch.rank,
        timeout=COLLECTIVE_TIMEOUT,
    )


def rendezvous(launch: Launch, timeout: float) -> dist.TCPStore:
    """The ranks' TCP store at launch.addr:port, served by rank 0, every rank in within `timeout`
    seconds (torch's env:// would wait for the collective timeout, 30 minutes, in silence)."""
    where = f"rendezvous at {launch.endpoint} ({launch.via})"
    if launch.rank == 0:
        return _serve(launch, timeout, where)
    deadline = time.monotonic() + timeout
    addr, port = _wait_for_rank0(launch, deadline, where, timeout)
    try:
        return dist.TCPStore(
            addr,
            port,
            launch.world_size,
            is_master=False,
            timeout=datetime.timedelta(seconds=max(deadline - time.monotonic(), 1.0)),
        )
    except dist.DistError as err:
        raise UsageError(f"{where}: {first_line(err)}") from None


def _serve(launch: Launch, timeout: float, where: str) -> dist.TCPStore:
    assert launch.addr is not None and launch.port is not None  # a TCP rendezvous
    try:
        return dist.TCPStore(
            launch.addr,
            launch.port,
            launch.world_size,
            is_master=True,
            timeout=datetime.timedelta(seconds=timeout),
            wait_for_workers=True,
        )
    except dist.DistError as err:
        text = first_line(err)
        if "EADDRINUSE" in text:
            raise UsageError(
                f"{where}: port {launch.port} is already in use on this host (another job or "
                "a run still ending): export MASTER_PORT with a free port for every rank"
            ) from None
        joined = re.search(r"(\d+)/\d+ clients joined", text)
        if joined is None:
            raise UsageError(f"{where}: {text}") from None
        raise UsageError(
            f"{where}: only {joined[1]} of {launch.world_size} ranks arrived within "
            f"{timeout:g} s: start every rank (one per task), or raise --rendezvous-timeout"
        ) from None


def _wait_for_rank0(launch: Launch, deadline: float, where: str, timeout: float) -> tuple[str, int]:
    """Until rank 0's store accepts connections (torch's client would log a line per retry)."""
    assert launch.addr is not None and launch.port is not None  # a TCP rendezvous
    while True:
        try:
            with socket.create_connection((launch.addr, launch.port), timeout=1.0):
                return launch.addr, launch.port
        except socket.gaierror as err:
            raise UsageError(f"{where}: cannot resolve {launch.addr} ({err.strerror})") from None
        except OSError:
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"{where}: rank 0 did not answer within {timeout:g} s: start every rank, "
                    f"check that rank 0 runs on {launch.addr}, or raise --rendezvous-timeout"
                ) from None
            time.sleep(0.2)


# how gloo (and torch's store) say that a peer process is gone
_PEER_GONE = re.compile(r"Connection (closed|reset) by peer|Broken pipe|Socket Timeout")


@contextlib.contextmanager
def lost_ranks_reported(info: DistInfo) -> Iterator[None]:
    """A rank that dies (killed, out of memory) fails the others inside their next collective;
    each of them then ends with one error line instead of a traceback."""
    try:
        yield
    except RuntimeError as err:
        text = first_line(err, 400)
        if not info.enabled or not (isinstance(err, dist.DistError) or _PEER_GONE.search(text)):
            raise
        reason = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]  # no source location
        raise UsageError(
            f"rank {info.rank}: another rank is gone ({reason}); its own log says why. The same "
            "command with --resume latest continues from the last checkpoint"
        ) from None


def on_rank0(info: DistInfo, work: Callable[[], T]) -> T | None:
    """`work()` on rank 0 only (None elsewhere); bad input it finds stops every rank with the same
    error line, where the others would otherwise wait in their next collective."""
    result: T | None = None
    error: list[str | None] = [None]
    if info.is_main:
        try:
            result = work()
        except UsageError as err:
            error = [str(err)]
    if info.enabled:
        dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise UsageError(error[0])
    return result


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
