"""--local-loss and --accum-freq compute the same objective as one process on the whole batch:
the gradients after the loop's own `compute_gradients` (DDP over gloo ranks on CPU, fp32) equal
the single-process gradients to ≤1e-5 relative, for every method, τ⁻¹ and β learnable or not."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cloob.trainer import distributed, losses
from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from cloob.trainer.loop import compute_gradients, optimizer_step, resolved, setup, wrap
from cloob.trainer.losses import METHODS

from .conftest import MICRO

B = 4  # samples per rank and micro-batch
CASES = list(itertools.product(METHODS, (True, False)))  # (method, τ⁻¹ and β learnable)


def config(
    logs, method: str, learnable: bool, *, local_loss: bool = False, accum_freq: int = 1
) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(dataset_type="synthetic", train_num_samples=64, batch_size=B, workers=0),
        model=ModelConfig(
            model=MICRO,
            method=method,
            init_inv_tau=20.0,
            init_scale_hopfield=5.0,
            learnable_inv_tau=learnable,
            learnable_scale_hopfield=learnable,
            learnable_logit_bias=learnable,
            local_loss=local_loss,
        ),
        optim=OptimConfig(accum_freq=accum_freq),
        run=RunConfig(
            logs=str(logs), name=f"{method}-{learnable}", report_to="none", progress=False
        ),
    )


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(1, 49000, (n, 16), generator=g)


def gradients(cfg: TrainConfig, info: distributed.DistInfo, inputs) -> dict[str, torch.Tensor]:
    """The loop's setup and gradient computation; the loss under the key 'loss'."""
    t = setup(cfg, info)
    wrap(t)
    loss = compute_gradients(t, inputs)
    grads = {n: p.grad.clone() for n, p in t.raw_model.named_parameters() if p.grad is not None}
    if t.loss_fn.logit_beta.grad is not None:
        grads["beta"] = t.loss_fn.logit_beta.grad.clone()
    if isinstance(t.loss_fn, losses.SigLipLoss) and t.loss_fn.logit_bias.grad is not None:
        grads["bias"] = t.loss_fn.logit_bias.grad.clone()  # siglip's b
    grads["loss"] = distributed.all_reduce_mean(loss.clone())
    return grads


def _rank(rank, world, init_file, logs, out, local_loss, accum_freq, cases):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init("cpu", f"file://{init_file}", "gloo")
    images, texts = batch(world * B * accum_freq)
    # rank r's micro-batch j holds samples (j·world + r)·B … : the loop's own data layout
    mine = [
        (images[s : s + B], texts[s : s + B])
        for s in ((j * world + rank) * B for j in range(accum_freq))
    ]
    results = {}
    for method, learnable in cases:
        cfg = config(
            f"{logs}/rank{rank}", method, learnable, local_loss=local_loss, accum_freq=accum_freq
        )
        results[(method, learnable)] = gradients(cfg, info, mine)
    if rank == 0:
        torch.save(results, out)
    distributed.shutdown()


def run_ranks(tmp_path, world: int, *, local_loss: bool, accum_freq: int = 1, cases=CASES):
    out = tmp_path / f"w{world}.pt"
    mp.start_processes(
        _rank,
        args=(
            world,
            str(tmp_path / f"init{world}"),
            str(tmp_path),
            str(out),
            local_loss,
            accum_freq,
            cases,
        ),
        nprocs=world,
        start_method="fork",
    )
    return torch.load(out, weights_only=False)


def reference(tmp_path, method: str, learnable: bool, n: int) -> dict[str, torch.Tensor]:
    """One process, the whole batch of n in one pass."""
    images, texts = batch(n)
    cfg = config(tmp_path / "single", method, learnable)
    cfg.data.batch_size = n
    return gradients(cfg, distributed.DistInfo(), [(images, texts)])


def assert_same(got: dict, expected: dict, case) -> None:
    """≤3e-5 relative over the whole gradient (and the loss), ≤3e-4 for each tensor alone: float32
    rounding. Each micro-batch trims its captions to its own longest one and runs the last blocks
    at its pooled tokens only (exact in real arithmetic), so features of the same sample differ by
    a few ulps between a batch of 8 and one of 16 (≤7e-7 on unit vectors); through the contrastive
    gradient that shows most in the smallest gradients (a LayerNorm bias ~1e-5, the learnable
    τ⁻¹'s scalar, a sum with cancellation, 1.0e-4). The mutations this test is for (a missing
    all-reduce, a missing 1/K) give 5e-2 and more."""
    assert set(got) == set(expected), case
    flat = torch.cat([expected[n].flatten() for n in sorted(expected)])
    diff = torch.cat([(got[n] - expected[n]).flatten() for n in sorted(expected)])
    assert diff.norm() / flat.norm() <= 3e-5, (case, float(diff.norm() / flat.norm()))
    for name, value in expected.items():
        err = (got[name] - value).norm() / value.norm().clamp_min(1e-12)
        assert err <= 3e-4, (case, name, float(err))


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_local_loss_equals_one_process(tmp_path, world):
    got = run_ranks(tmp_path, world, local_loss=True)
    for case in CASES:
        expected = reference(tmp_path, *case, world * B)
        assert_same(got[case], expected, case)
        method, learnable = case
        assert ("logit_scale" in expected) == learnable
        assert ("beta" in expected) == (learnable and method in ("cloob", "hopfield_infonce"))
        assert ("bias" in expected) == (learnable and method == "siglip")


@pytest.mark.parametrize("method", METHODS)
def test_accumulation_equals_one_big_batch(tmp_path, method):
    k = 3
    images, texts = batch(k * B)
    for learnable in (True, False):
        cfg = config(tmp_path / "acc", method, learnable, accum_freq=k)
        micro = [(images[j * B : (j + 1) * B], texts[j * B : (j + 1) * B]) for j in range(k)]
        got = gradients(cfg, distributed.DistInfo(), micro)
        assert_same(got, reference(tmp_path, method, learnable, k * B), (method, learnable))


def test_accumulation_with_local_loss_over_two_ranks(tmp_path):
    cases = [("cloob", True), ("clip", True), ("siglip", True)]
    got = run_ranks(tmp_path, 2, local_loss=True, accum_freq=2, cases=cases)
    for case in cases:
        assert_same(got[case], reference(tmp_path, *case, 2 * 2 * B), case)


def test_local_loss_on_one_process_says_it_does_nothing(tmp_path):
    from cloob.trainer.loop import train

    cfg = config(tmp_path, "cloob", True, local_loss=True)
    cfg.optim.max_steps = 1
    result = train(cfg)
    log = (result.run_dir / "out.log").read_text()
    assert log.count("--local-loss does nothing on one process") == 1


# ----------------------------------------------------------------------------- a few steps


STEPS = 4


def trajectory_config(logs, local_loss: bool) -> TrainConfig:
    """The CLI's `run --model micro-rn --method clip --lr 1e-3 --warmup 1 --precision fp32` on
    synthetic data, 8 samples per rank: a ResNet, so BatchNorm buffers travel between steps;
    resolved as `trainer run` resolves it."""
    return resolved(
        TrainConfig(
            data=DataConfig(
                dataset_type="synthetic", train_num_samples=64, batch_size=8, workers=0
            ),
            model=ModelConfig(model="micro-rn", method="clip", local_loss=local_loss),
            optim=OptimConfig(lr=1e-3, warmup=1, max_steps=STEPS),
            run=RunConfig(
                logs=str(logs),
                name=f"trajectory-{local_loss}",
                report_to="none",
                progress=False,
                precision="fp32",
                seed=1,
            ),
        )
    )


def _trajectory(t) -> tuple[list[float], bool]:
    """The mean loss over ranks at each of STEPS optimizer steps, and whether every rank ends
    with the same weights."""
    wrap(t)
    loader = iter(t.train_data.make_loader(t.position))
    per_step = []
    for _ in range(STEPS):
        loss = optimizer_step(t, [next(loader)])
        per_step.append(float(distributed.all_reduce_mean(loss.clone())))
    weights = torch.cat([p.detach().flatten() for p in t.raw_model.parameters()])
    everyone = [torch.empty_like(weights) for _ in range(t.info.world_size)]
    dist.all_gather(everyone, weights)
    return per_step, all(torch.equal(w, weights) for w in everyone)


def _trajectory_rank(rank, world, init_file, logs, out):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init("cpu", f"file://{init_file}", "gloo")
    runs = {local: _trajectory(setup(trajectory_config(logs, local), info)) for local in (0, 1)}
    if rank == 0:
        torch.save(runs, out)
    distributed.shutdown()


def test_local_loss_follows_the_global_run_for_a_few_steps(tmp_path):
    """Two gloo ranks, four AdamW steps at lr 1e-3, with and without --local-loss.

    Step 1 starts from the same weights: the two losses are one fp32 objective computed two ways
    (≤ 1e-6 relative, a few float32 ulps). Afterwards the runs part as two fp32 roundings of one
    run do, not because either objective is wrong: AdamW's first update is lr·g/(|g| + eps), ±lr
    for every weight with |g| ≫ eps = 1e-8, so the ~1.4k weights whose gradient lies within float32
    rounding of zero (mostly attention key biases, whose exact gradient is 0) move by up to ±lr
    in a direction rounding decides, and lr 1e-3 amplifies that from step to step. In float64
    the same comparison agrees to 2e-14 at step 4; in float32 each run departs from the float64
    run by ~1e-3 by step 3, while --local-loss departs from the fp32 global run by 1e-6 to 1e-4
    depending on the seed, before and after the 2026-12-03 changes alike. Hence 1e-3 for steps
    2-4. A wrong gradient (the gather's all-reduce missing) moves the loss by 0.2-0.4 at steps
    2-4; a gradient off by a constant factor AdamW cannot see (the step-1 gradient test above
    catches it). Every rank must also end with the same weights."""
    out = tmp_path / "trajectory.pt"
    mp.start_processes(
        _trajectory_rank,
        args=(2, str(tmp_path / "init"), str(tmp_path), str(out)),
        nprocs=2,
        start_method="fork",
    )
    runs = torch.load(out, weights_only=False)
    (whole, whole_same), (local, local_same) = runs[0], runs[1]
    assert whole_same and local_same  # no rank drifted off
    gaps = [abs(a - b) / abs(a) for a, b in zip(whole, local, strict=True)]
    assert gaps[0] <= 1e-6, gaps
    assert max(gaps[1:]) <= 1e-3, gaps
