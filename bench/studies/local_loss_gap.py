"""How far a --local-loss run's loss curve departs from the global run's, and why.

Two gloo ranks on the CPU run the trainer's own steps (setup, DDP, `optimizer_step`) on the
command line `run --dataset-type synthetic --model micro-rn --method clip --batch-size 16
--lr 1e-3 --warmup 1 --precision fp32`, four steps, with and without --local-loss, for several
seeds. Per step: the relative gap between the two mean losses. Then the same in float64 (model and
objective; the trainer's objective is always fp32, so the study swaps in a float64 features
function), and how far the fp32 global run is from the float64 one. For the first seed: at step 1
(same weights, same batch), each parameter's largest gradient difference relative to its largest
gradient, and the weights whose first AdamW update differs by more than 1% of lr. Writes
bench/results/local_loss_gap.json.

    uv run python -m bench.studies.local_loss_gap [--seeds 7,1,2,3] [--fp64-seeds 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from bench._common import report

STEPS = 4
LR = 1e-3
EPS = 1e-8  # AdamW's eps for ResNets (config.resolve_optim_defaults)
MEASURES = (
    "packages/trainer/src/cloob/trainer/loop.py",
    "packages/trainer/src/cloob/trainer/losses.py",
    "packages/trainer/src/cloob/trainer/distributed.py",
    "packages/trainer/src/cloob/trainer/optim.py",
)


def run_config(logs: str, seed: int, local_loss: bool, batch_size: int) -> Any:
    from cloob.trainer import loop
    from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

    # resolved as `trainer run` resolves it (the method's τ⁻¹ filled in)
    return loop.resolved(
        TrainConfig(
            data=DataConfig(
                dataset_type="synthetic", train_num_samples=256, batch_size=batch_size, workers=0
            ),
            model=ModelConfig(model="micro-rn", method="clip", local_loss=local_loss),
            optim=OptimConfig(lr=LR, warmup=1, max_steps=STEPS),
            run=RunConfig(
                logs=logs,
                name=f"seed{seed}-{local_loss}",
                report_to="none",
                progress=False,
                precision="fp32",
                seed=seed,
            ),
        )
    )


def float64_features(t: Any, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The trainer's `_features` without its cast to fp32 (the model is float64 here)."""
    image_features, text_features, inv_tau = t.model(images.double(), texts)
    return image_features, text_features, inv_tau


def one_run(cfg: Any, info: Any, float64: bool) -> dict[str, Any]:
    """STEPS optimizer steps: the mean loss over ranks per step, and step 1's gradients."""
    from cloob.trainer import distributed, loop

    t = loop.setup(cfg, info)
    if float64:
        t.raw_model.double()  # in place: the optimizer keeps the same parameters
        t.loss_fn.double()
    loop.wrap(t)
    loader = iter(t.train_data.make_loader(t.position))
    first_grads: dict[str, torch.Tensor] = {}
    step = t.optimizer.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        named = t.raw_model.named_parameters()
        first_grads.update({n: p.grad.double() for n, p in named if p.grad is not None})
        t.optimizer.step = step  # type: ignore[method-assign]  # step 1 only
        return step(*args, **kwargs)

    t.optimizer.step = recording_step  # type: ignore[method-assign]  # on this instance
    losses = []
    for _ in range(STEPS):
        loss = loop.optimizer_step(t, [next(loader)]).double()
        losses.append(float(distributed.all_reduce_mean(loss)))
    return {"losses": losses, "grads": first_grads}


def rank_main(rank: int, init: str, out: str, seeds: list[int], fp64: list[int], b: int) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from cloob.trainer import distributed, loop

    info = distributed.init("cpu", f"file://{init}", "gloo")
    logs = tempfile.mkdtemp(prefix=f"local-loss-gap-{rank}-")
    runs: dict[tuple[int, str, bool], dict[str, Any]] = {}
    fp32_features = loop._features
    for precision, chosen in (("fp32", seeds), ("fp64", fp64)):
        # the study's float64 variant of the trainer's features function, swapped in here only
        loop._features = float64_features if precision == "fp64" else fp32_features  # type: ignore[assignment]
        for seed in chosen:
            for local in (False, True):
                cfg = run_config(logs, seed, local, b)
                runs[(seed, precision, local)] = one_run(cfg, info, precision == "fp64")
    if rank == 0:
        torch.save(runs, out)
    distributed.shutdown()


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def gradient_table(whole: dict[str, torch.Tensor], local: dict[str, torch.Tensor]) -> list[dict]:
    """Per parameter: max |Δg| / max |g|, max |g|, and the weights whose first AdamW update
    (lr·g/(|g| + eps): m̂ = g, v̂ = g² at step 1) differs by more than 1% of lr."""
    rows = []
    for name, g in whole.items():
        h = local[name]
        first_update = (g / (g.abs() + EPS) - h / (h.abs() + EPS)).abs()
        rows.append(
            {
                "parameter": name,
                "max_rel_diff": float((g - h).abs().max() / g.abs().max().clamp_min(1e-300)),
                "max_abs_grad": float(g.abs().max()),
                "updates_apart": int((first_update > 0.01).sum()),
            }
        )
    return sorted(rows, key=lambda r: -r["max_rel_diff"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="7,1,2,3", help="fp32 seeds (the first gets the gradients)")
    p.add_argument("--fp64-seeds", default="7", help="seeds also run in float64")
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fp64 = [int(s) for s in args.fp64_seeds.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="local-loss-gap-"))
    out = work / "runs.pt"
    mp.start_processes(
        rank_main,
        args=(str(work / "init"), str(out), seeds, fp64, args.batch_size),
        nprocs=2,
        start_method="fork",
    )
    runs = torch.load(out, weights_only=False)
    rows: list[list[object]] = []
    for (seed, precision, local), run in runs.items():
        if local:
            whole = runs[(seed, precision, False)]["losses"]
            gaps = [relative(x, y) for x, y in zip(run["losses"], whole, strict=True)]
            rows.append([f"local vs global, {precision}, seed {seed}", *gaps])
    for seed in fp64:
        exact = runs[(seed, "fp64", False)]["losses"]
        fp32 = runs[(seed, "fp32", False)]["losses"]
        rows.append([f"fp32 vs fp64, global, seed {seed}", *map(relative, fp32, exact)])
    table = gradient_table(
        runs[(seeds[0], "fp32", False)]["grads"], runs[(seeds[0], "fp32", True)]["grads"]
    )
    report(
        "local_loss_gap",
        "--local-loss vs the global run: relative loss gap per step (2 gloo ranks, micro-rn, "
        f"clip, {args.batch_size} per rank, lr {LR})",
        ["comparison", *(f"step {s}" for s in range(1, STEPS + 1))],
        rows,
        extra={
            "step1_gradients_seed": seeds[0],
            "step1_gradients": table,
            "step1_updates_apart": sum(r["updates_apart"] for r in table),
            "step1_median_max_rel_diff": sorted(r["max_rel_diff"] for r in table)[len(table) // 2],
        },
        measures=MEASURES,
    )


if __name__ == "__main__":
    main()
