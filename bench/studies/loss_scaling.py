"""Per-rank cost of each objective with and without --local-loss, at a fixed global batch.

Two parts, one table each:
1. measured: W = 1, 2, 4 gloo ranks on CPU (forked here, one thread each), global batch N split
   W ways; per-rank forward+backward time of the objective including its all-gathers (median,
   rank 0) and the peak bytes of tensors the objective allocates on rank 0;
2. computed: the same objective traced on meta tensors (nothing is computed or allocated) for
   one rank of W = 64 × b = 256 (N = 16,384) and of the paper's 4 × 128: FLOPs (torch's
   FlopCounterMode) and peak live tensor bytes, the gathers replaced by a local stand-in of the
   same shapes.

Goal: with --local-loss the per-rank cost falls about W-fold.
Run: `uv run python -m bench.studies.loss_scaling` (`--quick`: N = 512).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench._common import PeakBytes, fused_attention_on_meta, report, time_call
from cloob.trainer import losses
from cloob.trainer.loop import objective

D, INV_TAU, BETA = 512, 30.0, 8.0


def _features(n: int, device: str = "cpu", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    y = F.normalize(x + 0.5 * torch.randn(n, D, generator=g), dim=-1)
    return x.to(device).requires_grad_(), y.to(device).requires_grad_()


# ----------------------------------------------------------------------------- measured


def _rank(rank: int, world: int, init: str, n_global: int, repeat: int, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    rows = {}
    for method in losses.METHODS:
        loss_fn = losses.create_loss(method, BETA)
        for local in (False, True) if world > 1 else (False,):
            x, y = _features(n_global // world, seed=rank)

            def step(x=x, y=y, loss_fn=loss_fn, local=local):
                objective(loss_fn, x, y, torch.tensor(INV_TAU), local_loss=local).backward()

            seconds = time_call(step, warmup=1, repeat=repeat)
            with PeakBytes() as mem:
                step()
            rows[(method, local)] = (seconds, mem.peak)
    if rank == 0:
        torch.save(rows, out)
    if world > 1:
        dist.destroy_process_group()


def measured(n_global: int, repeat: int) -> list[list[object]]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2, 4):
            out = os.path.join(tmp, f"{world}.pt")
            mp.start_processes(
                _rank,
                args=(world, os.path.join(tmp, f"init{world}"), n_global, repeat, out),
                nprocs=world,
                start_method="fork",
            )
            results[world] = torch.load(out, weights_only=False)
    rows = []
    for method in losses.METHODS:
        base_s, base_b = results[1][(method, False)]
        for world in (1, 2, 4):
            for local in (False, True) if world > 1 else (False,):
                s, b = results[world][(method, local)]
                rows.append(
                    [
                        method,
                        world,
                        n_global // world,
                        "yes" if local else "no",
                        s * 1e3,
                        b / 2**20,
                        base_s / s,
                        base_b / b,
                    ]
                )
    return rows


# ----------------------------------------------------------------------------- computed


class _StandInGather(torch.autograd.Function):
    """all_gather's shapes without a process group: my rows first, then W-1 stand-ins; backward
    hands back my slice (the real one all-reduces the N×d gradient in place)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, world: int) -> torch.Tensor:
        ctx.n = t.shape[0]
        return torch.cat([t, t.detach().new_empty((world - 1) * t.shape[0], *t.shape[1:])])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[: ctx.n], None


def _one_rank(method: str, world: int, b: int, local: bool) -> tuple[float, int]:
    """FLOPs and peak bytes of rank 0's objective (forward + backward), traced on meta tensors."""
    loss_fn = losses.create_loss(method, BETA).to("meta")
    x, y = _features(b, "meta")
    gather = (lambda t: _StandInGather.apply(t, world)) if world > 1 else (lambda t: t)
    with fused_attention_on_meta(), FlopCounterMode(display=False) as flops, PeakBytes() as mem:
        both = gather(torch.cat([x, y], dim=1))
        rows = losses.LocalRows(0, b, gather) if local and world > 1 else None
        loss = loss_fn(both[:, :D], both[:, D:], torch.tensor(INV_TAU, device="meta"), rows)
        loss.backward()
    return float(flops.get_total_flops()), mem.peak


def computed() -> list[list[object]]:
    rows = []
    for world, b in ((4, 128), (64, 256)):
        for method in losses.METHODS:
            whole_f, whole_b = _one_rank(method, world, b, local=False)
            local_f, local_b = _one_rank(method, world, b, local=True)
            rows.append(
                [
                    method,
                    f"{world} × {b}",
                    world * b,
                    whole_f / 1e9,
                    local_f / 1e9,
                    whole_f / local_f,
                    whole_b / 2**30,
                    local_b / 2**30,
                    whole_b / local_b,
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 512 global, 2 repeats")
    args = parser.parse_args()
    n_global, repeat = (512, 2) if args.quick else (2048, 3)
    rows = measured(n_global, repeat)
    report(
        "loss_scaling",
        f"Objective fwd+bwd per rank, global batch {n_global}, d = {D}, gloo "
        "ranks on CPU (÷ = one process / this)",
        [
            "objective",
            "ranks",
            "rows/rank",
            "local loss",
            "ms/rank",
            "peak MiB/rank",
            "time ÷",
            "memory ÷",
        ],
        rows,
    )
    report(
        "loss_scaling_computed",
        f"Computed per rank (meta tensors, d = {D}): GFLOP and peak "
        "GiB of the objective, whole vs --local-loss",
        [
            "objective",
            "W × b",
            "N",
            "GFLOP whole",
            "GFLOP local",
            "FLOP ÷",
            "GiB whole",
            "GiB local",
            "memory ÷",
        ],
        computed(),
    )


if __name__ == "__main__":
    main()
