"""The training loop, readable top to bottom: `train(cfg) -> RunResult`.

One process per device (torchrun, srun or mpirun start them: see `launch`); rank 0 alone logs,
evaluates and writes. `train` is the table of contents; the steps follow it in the order they run:
`validate_config` (flags only) → `resolved` (defaults filled in) → `check_inputs` (what the flags
point at) → `load_resume_state` (on --resume) → `name_run` and the run folder's lock → `setup` →
`restore` → `wrap` (DDP, torch.compile) → `fit`, which repeats `optimizer_step` (K micro-batches
with `compute_gradients`), `log_window`, `save_checkpoint` and `run_evals`, and ends early at a
step boundary on SIGUSR1 or SIGTERM (`stop_requested`, `stop_here`).
What the run reports lives in `reporting`, the optimizer and schedule in `optim`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from cloob.common import checkpoint as ckpt_format
from cloob.common import storage
from cloob.common.checkpoint import DataPosition, OptimizerState, TrainerCheckpoint
from cloob.common.cli import UsageError
from cloob.common.files import write_json
from cloob.common.precision import Precision
from cloob.common.precision import resolve as resolve_precision
from cloob.common.progress import ProgressBar
from cloob.common.text import trim_padding
from cloob.trainer import (
    checkpoint,
    data,
    distributed,
    evaluate,
    losses,
    methods,
    models,
    optim,
    preemption,
    reporting,
    runfolder,
    transforms,
)
from cloob.trainer.config import (
    DATASET_TYPES,
    DEFAULT_INV_TAU,
    PRECISIONS,
    SCHEDULERS,
    RunConfig,
    TrainConfig,
    resolve_optim_defaults,
)
from cloob.trainer.data_wait import DataWait
from cloob.trainer.openclip_compat import report_targets
from cloob.trainer.reporting import Logger

log = logging.getLogger("cloob.trainer")


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path | None  # the final checkpoint
    metrics: dict[str, float] = field(
        default_factory=dict
    )  # last logged values (train, val, zero-shot)


@dataclass
class Trainer:
    """What the steps of one run share: built by `setup`, advanced by `optimizer_step`."""

    cfg: TrainConfig
    info: distributed.DistInfo
    precision: Precision
    bundle: models.ModelBundle
    model: nn.Module  # what the forward runs through: DDP and/or torch.compile around raw_model
    raw_model: nn.Module
    loss_fn: losses.ContrastiveLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    train_data: data.TrainData
    schedule: optim.Schedule
    total_steps: int
    run_dir: Path
    speedups: models.SpeedUps  # what the inputs must follow (channels-last images, trimmed text)
    step: int = 0
    lr: float = 0.0
    position: data.Position = field(default_factory=data.Position)
    # mean/std for uint8 image batches (normalised on the device); the data-wait meter
    image_norm: transforms.Normalisation | None = None
    data_wait: DataWait = field(default_factory=DataWait)
    ddp: DistributedDataParallel | None = None  # set by `wrap` on more than one process

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def samples_per_step(self) -> int:
        """The contrastive batch: micro-batch × ranks × accumulation."""
        return self.cfg.data.batch_size * self.info.world_size * self.cfg.optim.accum_freq


def train(cfg: TrainConfig) -> RunResult:
    """Train as configured; returns the run folder, the final checkpoint and the last metrics.
    SIGUSR1 or SIGTERM end it at the next step boundary with its checkpoint saved:
    `preemption.Stopped`."""
    cfg = TrainConfig.from_dict(cfg.to_dict())  # never mutate the caller's config
    validate_config(cfg)  # bad input fails here and in the next two, before any work
    cfg = resolved(cfg)  # the defaults that depend on other flags, filled in once
    check_inputs(cfg)
    with preemption.stop_signals() as stop:
        resume_ckpt = load_resume_state(cfg)
        info = distributed.init(
            cfg.run.device, cfg.run.dist_url, cfg.run.dist_backend, cfg.run.rendezvous_timeout
        )
        try:
            check_same_resume(resume_ckpt, info)
            name_run(cfg, info)
            with contextlib.ExitStack() as run, distributed.lost_ranks_reported(info):
                with runfolder.removed_on_bad_input(cfg.run):
                    run.enter_context(runfolder.locked(cfg.run, info))
                    t = setup(cfg, info)
                if resume_ckpt is not None:
                    restore(t, resume_ckpt)
                    del resume_ckpt  # free the memory
                elif cfg.run.resume == "latest":
                    log.info("--resume latest: no checkpoint in %s yet, starting", t.run_dir)
                wrap(t)
                return fit(t, stop)
        finally:
            distributed.shutdown()


# ----------------------------------------------------------------------------- bad input, resume


def validate_config(cfg: TrainConfig) -> None:
    """Check every flag a user can get wrong; changes nothing and looks at nothing outside the
    config (`resolved` fills the defaults afterwards)."""
    if cfg.model.method.replace("-", "_") not in losses.METHODS:
        raise UsageError(
            f"unknown method {cfg.model.method!r}: choose from {', '.join(losses.METHODS)}"
        )
    inv_tau = cfg.model.init_inv_tau
    for value, choices, flag in (
        (cfg.data.dataset_type, DATASET_TYPES, "--dataset-type"),
        (cfg.optim.lr_scheduler, SCHEDULERS, "--lr-scheduler"),
        (cfg.run.precision, PRECISIONS, "--precision"),
    ):
        if value not in choices:
            raise UsageError(f"{flag} {value!r}: choose from {', '.join(choices)}")
    _check_finite(cfg)
    positive: tuple[tuple[float, str], ...] = (
        (cfg.data.batch_size, "--batch-size"),
        (1.0 if inv_tau is None else inv_tau, "--init-inv-tau"),  # None: a positive default
        (cfg.model.init_scale_hopfield, "--init-scale-hopfield"),
        (cfg.optim.epochs, "--epochs"),
        (cfg.eval.batch_size_eval, "--batch-size-eval"),
        (cfg.run.rendezvous_timeout, "--rendezvous-timeout"),
    )
    for number, flag in positive:
        if number <= 0:
            raise UsageError(f"{flag} must be positive, got {number}")
    if cfg.data.workers < 0 or cfg.optim.warmup < 0 or cfg.optim.restart_cycles < 1:
        raise UsageError("--workers and --warmup must be >= 0, --restart-cycles >= 1")
    if cfg.optim.max_steps is not None and cfg.optim.max_steps <= 0:
        raise UsageError(f"--max-steps must be positive, got {cfg.optim.max_steps}")
    if cfg.optim.accum_freq < 1:
        raise UsageError(f"--accum-freq must be >= 1, got {cfg.optim.accum_freq}")
    if cfg.run.remote_sync and not storage.is_remote(cfg.run.remote_sync):
        raise UsageError(
            f"--remote-sync wants an object-store URL (s3://bucket/prefix), "
            f"got {cfg.run.remote_sync}"
        )
    if cfg.run.resume == "latest" and not cfg.run.name:
        raise UsageError("--resume latest needs --name (the run folder under --logs)")


def resolved(cfg: TrainConfig) -> TrainConfig:
    """A valid config with the defaults that depend on other flags filled in, as config.json and
    the checkpoints record them: the method spelt with `_`, and without --init-inv-tau the
    method's own start (siglip: 10), else the paper's 30."""
    method = cfg.model.method.replace("-", "_")
    inv_tau = cfg.model.init_inv_tau
    if inv_tau is None:
        inv_tau = methods.default_inv_tau(method) or DEFAULT_INV_TAU
    return replace(cfg, model=replace(cfg.model, method=method, init_inv_tau=inv_tau))


def _check_finite(cfg: TrainConfig) -> None:
    """click reads "nan" and "inf" as floats, and nan passes every comparison check (nan <= 0 is
    False): a run would start and train on NaN losses."""
    floats = {
        "--init-inv-tau": cfg.model.init_inv_tau,
        "--init-scale-hopfield": cfg.model.init_scale_hopfield,
        "--init-logit-bias": cfg.model.init_logit_bias,
        "--lr": cfg.optim.lr,
        "--wd": cfg.optim.wd,
        "--beta1": cfg.optim.beta1,
        "--beta2": cfg.optim.beta2,
        "--eps": cfg.optim.eps,
        "--grad-clip-norm": cfg.optim.grad_clip_norm,
        "--rendezvous-timeout": cfg.run.rendezvous_timeout,
    }
    for flag, number in floats.items():
        if number is not None and not math.isfinite(number):
            raise UsageError(f"{flag} must be a finite number, got {number}")


def check_inputs(cfg: TrainConfig) -> None:
    """What the flags point at exists and can be read: the model name or config file, the data,
    the zero-shot folders, wandb when asked for, the --remote-sync bucket."""
    models.resolve_model_name(cfg.model.model)
    data.resolve_source(cfg.data.train_data, cfg.data.dataset_type)
    if cfg.data.val_data and cfg.data.val_data != "synthetic":
        data.resolve_source(cfg.data.val_data, "auto")
    evaluate.check_zeroshot(cfg.eval)
    if "wandb" in report_targets(cfg.run.report_to):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError(
                "--report-to wandb needs wandb installed (pip install wandb)"
            ) from None
    if cfg.run.remote_sync:
        storage.check_access(cfg.run.remote_sync)  # a bad bucket fails now, not at step N
    if cfg.run.requeue:
        preemption.check_requeue()


def load_resume_state(cfg: TrainConfig) -> TrainerCheckpoint | None:
    """With --resume: the checkpoint to continue from (local, or the --remote-sync copy), read,
    checked, and matching this run's model and method; None for `latest` before the first one."""
    if not cfg.run.resume:
        return None
    run_dir = Path(cfg.run.logs) / (cfg.run.name or "")
    remote = remote_checkpoints(cfg.run, cfg.run.name) if cfg.run.name else None
    ckpt = checkpoint.load_resume(cfg.run.resume, run_dir / "checkpoints", remote)
    if ckpt is None:
        return None
    resolved = models.resolve_model_name(cfg.model.model)
    if ckpt["model_name"] != resolved or ckpt["model_cfg"] != models.model_config(resolved):
        raise UsageError(
            f"cannot resume: the checkpoint is a {ckpt['model_name']} model, "
            f"this run asks for {resolved}"
        )
    if ckpt["method"] != cfg.model.method:
        raise UsageError(
            f"cannot resume: the checkpoint was trained with --method {ckpt['method']}"
        )
    return ckpt


def remote_checkpoints(run: RunConfig, name: str) -> str | None:
    """Where --remote-sync keeps this run's checkpoints: PREFIX/NAME/checkpoints."""
    return f"{run.remote_sync.rstrip('/')}/{name}/checkpoints" if run.remote_sync else None


def check_same_resume(ckpt: TrainerCheckpoint | None, info: distributed.DistInfo) -> None:
    """Every rank continues from the same step: a checkpoint that only some nodes can see (--logs
    on a node-local disk) would split the run into ranks that disagree."""
    if not info.enabled:
        return
    steps: list[Any] = [None] * info.world_size
    dist.all_gather_object(steps, None if ckpt is None else int(ckpt["step"]))
    if len(set(steps)) > 1:
        seen = ", ".join(
            f"rank {r}: {'none' if s is None else f'step {s}'}" for r, s in enumerate(steps)
        )
        raise UsageError(
            f"the ranks found different checkpoints to resume from ({seen}): put --logs on a "
            "filesystem every node shares, or use --remote-sync"
        )


def name_run(cfg: TrainConfig, info: distributed.DistInfo) -> None:
    """Rank 0's run name on every rank: a default name holds its process's start time, and two
    ranks must never write into two folders (or one rank's into another's)."""
    cfg.run.name = cfg.run.name or default_name(cfg)
    if info.enabled:
        names = [cfg.run.name]
        dist.broadcast_object_list(names, src=0)
        cfg.run.name = names[0]


# ----------------------------------------------------------------------------- set up


def setup(cfg: TrainConfig, info: distributed.DistInfo) -> Trainer:
    """Run folder, model, objective, optimizer and data, as configured by a `resolved` config
    (nothing restored yet)."""
    if cfg.run.name is None:  # `train` names the run first; direct callers (tests) may not
        name_run(cfg, info)
    assert cfg.run.name is not None
    inv_tau = cfg.model.init_inv_tau
    if inv_tau is None:
        raise ValueError("setup needs a resolved config: pass it through loop.resolved first")
    run_dir = Path(cfg.run.logs) / cfg.run.name
    if info.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    reporting.setup_logging(run_dir if info.is_main else None, info.is_main)
    seed_everything(cfg.run.seed)
    precision = resolve_precision(cfg.run.precision, info.device)

    bundle = models.create(
        cfg.model.model,
        init_inv_tau=inv_tau,
        learnable_inv_tau=cfg.model.learnable_inv_tau,
        device=info.device,
        grad_checkpointing=cfg.model.grad_checkpointing,
        precision=precision.open_clip,
    )
    speedups = models.speed_up(bundle, info.device, compiled=cfg.model.torchcompile)
    loss_fn = losses.create_loss(
        cfg.model.method,
        cfg.model.init_scale_hopfield,
        cfg.model.learnable_scale_hopfield,
        init_bias=cfg.model.init_logit_bias,
        learnable_bias=cfg.model.learnable_logit_bias,
    ).to(info.device)
    cfg.optim = resolve_optim_defaults(cfg.optim, models.is_vit(bundle.cfg))
    optimizer = optim.for_config(bundle.model, loss_fn, cfg.optim)
    scaler = torch.amp.GradScaler(info.device.type) if precision.grad_scaler else None

    # workers return uint8 crops (same recipe); float + normalise happen on the device
    train_transform = (
        transforms.uint8_train_transform(bundle.preprocess_train) or bundle.preprocess_train
    )
    train_data = data.build_train_data(
        cfg.data,
        transform=train_transform,
        tokenizer=bundle.tokenizer,
        image_size=bundle.cfg["vision_cfg"]["image_size"],
        seed=cfg.run.seed,
        rank=info.rank,
        world_size=info.world_size,
        accum_freq=cfg.optim.accum_freq,
        pin_memory=info.device.type == "cuda",
    )
    total_steps = cfg.optim.epochs * train_data.steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)
    if cfg.model.local_loss and not info.enabled:
        log.info("--local-loss does nothing on one process: the objective is computed whole")
    return Trainer(
        cfg=cfg,
        info=info,
        precision=precision,
        bundle=bundle,
        model=bundle.model,
        raw_model=bundle.model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scaler=scaler,
        train_data=train_data,
        schedule=optim.Schedule.of(cfg.optim, total_steps),
        total_steps=total_steps,
        run_dir=run_dir,
        speedups=speedups,
        image_norm=transforms.normalisation(train_transform),
    )


def restore(t: Trainer, ckpt: TrainerCheckpoint) -> None:
    """Continue from a checkpoint: weights, β, optimizer, scaler, step, data position, RNGs."""
    t.raw_model.load_state_dict(ckpt["state_dict"])
    t.loss_fn.load_state_dict(ckpt["loss_state"])
    t.optimizer.load_state_dict(cast(dict[str, Any], ckpt["optimizer"]))  # torch's own state dict
    if t.scaler is not None and ckpt.get("scaler"):
        t.scaler.load_state_dict(ckpt["scaler"])
    t.step = int(ckpt["step"])
    saved, d = ckpt["data"], t.cfg.data
    ranks = saved["ranks"]
    same = (
        len(ranks) == t.info.world_size
        and saved["global_batch"] == d.batch_size * t.info.world_size
        and saved.get("accum_freq", 1) == t.cfg.optim.accum_freq
        and saved["n_workers"] == t.train_data.n_workers
    )
    if same:
        t.position = data.Position.from_state(ranks[t.info.rank])
    else:  # exact data order needs the same world size, batch, accumulation and workers
        log.warning(
            "resuming with a different world size, batch size, --accum-freq or worker "
            "count: the data order from here on differs from the original run"
        )
        k = t.cfg.optim.accum_freq
        t.position = data.Position(epoch=ranks[0]["epoch"], batch=ranks[0]["batch"] // k * k)
        t.position.end_epoch_if_done(t.train_data.batches_per_epoch)
    checkpoint.set_rng_state(ckpt["rng"])
    log.info(
        "resumed from step %d (epoch %d, batch %d)", t.step, t.position.epoch, t.position.batch
    )


def wrap(t: Trainer) -> None:
    """DDP and torch.compile around the model; config.json and the run's first log line."""
    if t.info.enabled:
        device_ids = [t.device.index] if t.device.type == "cuda" else None
        t.model = t.ddp = DistributedDataParallel(t.model, device_ids=device_ids)
    if t.cfg.model.torchcompile:
        # typed as a plain callable; given a Module, torch.compile returns a Module
        # (OptimizedModule)
        t.model = cast(nn.Module, torch.compile(t.model))
    if t.info.is_main:
        write_json(t.run_dir / "config.json", t.cfg.to_dict())
        log.info(
            "run folder %s: %s/%s, %d steps (%d per epoch), %d samples per step (%d × %d "
            "rank(s) × %d accumulated), %s%s",
            t.run_dir,
            t.cfg.model.method,
            t.bundle.name,
            t.total_steps,
            t.train_data.steps_per_epoch,
            t.samples_per_step,
            t.cfg.data.batch_size,
            t.info.world_size,
            t.cfg.optim.accum_freq,
            t.precision.name,
            ", local loss" if t.cfg.model.local_loss and t.info.enabled else "",
        )
        if t.cfg.model.gather_with_grad:
            log.info("--gather-with-grad: features are always gathered with their gradient here")
        if t.info.enabled:
            launch = t.info.launch
            log.info(
                "%d ranks started by %s, rendezvous %s",
                t.info.world_size,
                launch.source,
                f"at {launch.endpoint} ({launch.via})" if launch.addr else f"by {launch.via}",
            )
        if t.info.launch.note:
            log.info("%s", t.info.launch.note)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_name(cfg: TrainConfig) -> str:
    model = cfg.model.model.replace("/", "-")
    if model.endswith(".json"):
        model = Path(model).stem
    return f"{cfg.model.method}-{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- the loop


def fit(t: Trainer, stop: preemption.StopRequest | None = None) -> RunResult:
    """Optimizer steps until total_steps; a log line every N steps; checkpoints and evaluations
    at epoch ends (and every N steps); a final checkpoint, table and curves. A stop signal ends
    it at the next step boundary instead (`stop_here`)."""
    cfg, main = t.cfg, t.info.is_main
    stop = stop or preemption.StopRequest()
    logger = Logger(t.run_dir, cfg, main)
    val_loader = None
    if cfg.data.val_data and main:
        val_loader = data.build_val_loader(
            cfg.data,
            batch_size=cfg.eval.batch_size_eval,
            transform=t.bundle.preprocess_val,
            tokenizer=t.bundle.tokenizer,
            image_size=t.bundle.cfg["vision_cfg"]["image_size"],
            seed=cfg.run.seed,
        )
    progress = reporting.progress(main and cfg.run.progress, t.total_steps, t.step)
    window = Window(torch.zeros((), device=t.device))
    last_ckpt, saved_at, start = None, -1, t.step
    signum = stop_requested(t, stop)  # a signal while the run was set up
    t.model.train()
    while not signum and t.step < t.total_steps:
        loader = t.train_data.make_loader(t.position)
        steps = _micro_batch_groups(loader, cfg.optim.accum_freq)
        epoch_end = False
        for micro_batches in t.data_wait.timed(steps):  # time blocked on the loader
            window.add(optimizer_step(t, micro_batches))
            progress.advance()
            if t.step % cfg.run.log_every_n_steps == 0 or t.step == t.total_steps:
                window = log_window(t, window, logger, progress)
            epoch_end = t.position.end_epoch_if_done(t.train_data.batches_per_epoch)
            if cfg.run.save_every_n_steps and t.step % cfg.run.save_every_n_steps == 0:
                last_ckpt, saved_at = save_checkpoint(t, f"step_{t.step}.pt"), t.step
            signum = stop_requested(t, stop)
            if signum or epoch_end or t.step >= t.total_steps:
                break
        del steps, loader  # stops the epoch's workers
        final = t.step >= t.total_steps
        if epoch_end:
            if cfg.run.save_frequency and (t.position.epoch % cfg.run.save_frequency == 0 or final):
                last_ckpt, saved_at = save_checkpoint(t, f"epoch_{t.position.epoch}.pt"), t.step
            if not signum:
                run_evals(t, logger, val_loader, final)
                signum = stop_requested(t, stop)  # a signal during the evaluations
        elif final:  # --max-steps ended the run mid-epoch
            run_evals(t, logger, val_loader, final=True)
    progress.stop()
    if signum:
        stop_here(t, logger, signum, last_ckpt if saved_at == t.step else None, saved_at, start)
    if saved_at != t.step:
        last_ckpt = save_checkpoint(t, f"step_{t.step}.pt")
    logger.close()
    if main:
        reporting.finish(t.run_dir, logger.last)
    return RunResult(t.run_dir, last_ckpt if main else None, dict(logger.last))


def stop_requested(t: Trainer, stop: preemption.StopRequest) -> int:
    """The stop signal any rank has received (0: none), agreed by all ranks: call it on every rank
    at the same points. After the last step there is nothing left to save for: 0, the run ends
    as usual (its final evaluations, checkpoint and table)."""
    signum = preemption.agreed(stop, t.info)
    return signum if t.step < t.total_steps else 0


def stop_here(
    t: Trainer, logger: Logger, signum: int, saved: Path | None, saved_at: int, start: int
) -> NoReturn:
    """End the run on a stop signal: the exact-resume checkpoint of this step (unless this step
    has one, or none was taken since `start`), written and uploaded before any rank exits; one
    log line saying how to continue; with --requeue the Slurm job back in the queue."""
    if saved_at != t.step and t.step != start:  # the same decision on every rank: a collective
        saved = save_checkpoint(t, f"step_{t.step}.pt")
    logger.close()
    if t.info.is_main:
        run = t.cfg.run
        latest = t.run_dir / "checkpoints" / "latest.pt"
        where = saved or (latest if latest.is_file() else None)
        log.warning(
            "stopped by %s at step %d of %d, %s: rerun with --logs %s --name %s --resume latest "
            "to continue (exit code %d)",
            signal.Signals(signum).name,
            t.step,
            t.total_steps,
            f"checkpoint {where}" if where else "nothing trained yet",
            run.logs,
            run.name,
            preemption.EXIT_STOPPED,
        )
        if run.requeue:
            preemption.requeue()
    distributed.barrier()  # no rank exits before the checkpoint is complete
    raise preemption.Stopped(signum, t.step, saved if t.info.is_main else None)


def _micro_batch_groups(loader: Any, k: int) -> Iterator[list[dict[str, Any]]]:
    """The loader's micro-batches, k at a time (one optimizer step each)."""
    group: list[dict[str, Any]] = []
    for batch in loader:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []


# ----------------------------------------------------------------------------- one optimizer step


def optimizer_step(t: Trainer, micro_batches: list[dict[str, Any]]) -> torch.Tensor:
    """One update from `accum_freq` micro-batches; returns this rank's loss (a device tensor)."""
    t.lr = t.schedule.lr(t.step)
    for group in t.optimizer.param_groups:
        group["lr"] = t.lr
    t.optimizer.zero_grad(set_to_none=True)
    loss = compute_gradients(t, [_inputs(t, b) for b in micro_batches])
    optim.apply_gradients(
        t.optimizer, t.scaler, t.raw_model.parameters(), t.cfg.optim.grad_clip_norm
    )
    models.clamp_logit_scale(t.raw_model)
    t.step += 1
    for batch in micro_batches:
        t.position.advance(batch, t.train_data.n_workers)
    return loss


def compute_gradients(t: Trainer, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Backward of the objective on one contrastive batch made of K micro-batches per rank.

    K = 1: forward, gather, objective, backward. K > 1 (OpenCLIP's scheme): the features of all
    micro-batches without gradient first; then each micro-batch again with gradient, its features
    put in place among the cached ones, and backward. The K passes sum to the gradient of the
    objective on the whole batch (each carries the part through its own features), except for
    τ⁻¹ and β, which enter every pass directly: their gradients are divided by K. DDP reduces
    once, on the last pass. BatchNorm sees micro-batches, so BN models are not exactly equal."""
    k = len(inputs)
    cached: list[tuple[torch.Tensor, torch.Tensor]] = []
    if k > 1:
        with torch.no_grad():
            cached = [_features(t, images, texts)[:2] for images, texts in inputs]
    for j, (images, texts) in enumerate(inputs):
        # DDP reduces on the last pass only
        with t.ddp.no_sync() if t.ddp is not None and j < k - 1 else contextlib.nullcontext():
            image_features, text_features, inv_tau = _features(t, images, texts)
            if cached:
                image_features = torch.cat(
                    [*(c[0] for c in cached[:j]), image_features, *(c[0] for c in cached[j + 1 :])]
                )
                text_features = torch.cat(
                    [*(c[1] for c in cached[:j]), text_features, *(c[1] for c in cached[j + 1 :])]
                )
            loss = _objective(t, image_features, text_features, inv_tau)
            (t.scaler.scale(loss) if t.scaler is not None else loss).backward()
    own = [p.grad for p in t.loss_fn.parameters() if p.grad is not None]  # β, siglip's bias
    scale_grad = models.logit_scale(t.raw_model).grad
    for grad in (*([scale_grad] if scale_grad is not None else []), *own):
        grad /= k  # in place: the parameter's .grad
    if t.cfg.model.local_loss:
        for grad in own:
            distributed.all_reduce_mean(grad)  # the objective's own scalars are outside DDP
    return loss.detach()


def _inputs(t: Trainer, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    # uint8 batches become normalised floats on the device (transforms.to_device)
    images = transforms.to_device(
        batch["image"], t.device, t.image_norm, channels_last=t.speedups.channels_last
    )
    texts = (
        trim_padding(batch["text"]) if t.speedups.trim_text else batch["text"]
    )  # on the host: no sync
    return t.precision.cast_input(images), texts.to(t.device, non_blocking=True)


def _features(
    t: Trainer, images: torch.Tensor, texts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image features, text features, τ⁻¹) in fp32: the objective always runs in fp32."""
    with t.precision.autocast(t.device):
        image_features, text_features, inv_tau = t.model(images, texts)
    return image_features.float(), text_features.float(), inv_tau.float()


def _objective(
    t: Trainer, image_features: torch.Tensor, text_features: torch.Tensor, inv_tau: torch.Tensor
) -> torch.Tensor:
    return objective(
        t.loss_fn, image_features, text_features, inv_tau, local_loss=t.cfg.model.local_loss
    )


def objective(
    loss_fn: losses.ContrastiveLoss,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inv_tau: torch.Tensor,
    *,
    local_loss: bool = False,
) -> torch.Tensor:
    """The loss on all ranks' features (gathered with gradient); with `local_loss`, this rank's
    rows of it (see `losses.LocalRows`)."""
    image_features, text_features = distributed.gather_features(image_features, text_features)
    local = None
    if local_loss and dist.is_initialized() and dist.get_world_size() > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        n = image_features.shape[0] // world
        local = losses.LocalRows(rank * n, (rank + 1) * n, distributed.gather_with_grad)
    return loss_fn(image_features, text_features, inv_tau, local)


# ----------------------------------------------------------------------------- log, save, evaluate


@dataclass
class Window:
    """The losses since the last log line (summed on the device: no host sync per step)."""

    loss_sum: torch.Tensor
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1


def log_window(t: Trainer, window: Window, logger: Logger, progress: ProgressBar) -> Window:
    """Log the window's mean loss (over ranks: with --local-loss each holds its rows' part) and
    rates; the loop's only host syncs happen here. Returns a fresh window."""
    totals = torch.stack(
        [window.loss_sum, torch.tensor(float(t.position.skipped), device=t.device)]
    )
    if t.info.enabled:
        dist.all_reduce(totals)
    loss, skipped = totals.tolist()
    elapsed = time.perf_counter() - window.started
    values = {
        "loss": loss / t.info.world_size / window.steps,
        "lr": t.lr,
        "inv_tau": _inv_tau(t),
        "beta": float(t.loss_fn.beta.detach()),
        **_logit_bias(t),
        "samples_per_s": window.steps * t.samples_per_step / max(elapsed, 1e-9),
        "epoch": t.position.epoch + t.position.batch / t.train_data.batches_per_epoch,
        "skipped_samples": skipped,
    }
    # data_time / batch_time / data_time_fraction (+ one data-bound warning)
    values.update(
        t.data_wait.window(
            elapsed=elapsed,
            steps=window.steps,
            samples_per_step=t.samples_per_step // t.info.world_size,
            workers=t.cfg.data.workers,
        )
    )
    logger.log(t.step, values)
    reporting.show_stats(progress, values)
    return Window(torch.zeros((), device=t.device))


def _inv_tau(t: Trainer) -> float:
    return float(models.logit_scale(t.raw_model).detach().float().exp())


def _logit_bias(t: Trainer) -> dict[str, float]:
    """siglip's bias b, for the log and the checkpoint's readers; {} for the other objectives."""
    bias = getattr(t.loss_fn, "logit_bias", None)
    return {} if bias is None else {"logit_bias": float(bias.detach())}


def checkpoint_payload(t: Trainer, positions: list[DataPosition]) -> TrainerCheckpoint:
    """Everything a reader (open_clip, benchmarks) or an exact resume needs, as
    `cloob.common.checkpoint` describes it: tensors and plain containers only."""
    assert t.cfg.run.name is not None  # `setup` names every run
    payload = TrainerCheckpoint(
        format=ckpt_format.FORMAT,
        name=t.cfg.run.name,
        state_dict=t.raw_model.state_dict(),
        model_name=t.bundle.name,
        model_cfg=t.bundle.cfg,
        method=t.cfg.model.method,
        inv_tau=_inv_tau(t),
        hopfield_beta=float(t.loss_fn.beta.detach()),
        epoch=t.position.epoch,
        step=t.step,
        loss_state=t.loss_fn.state_dict(),  # exact ln β (the float above is for readers)
        # torch's own state dict, which OptimizerState describes
        optimizer=cast(OptimizerState, t.optimizer.state_dict()),
        scheduler={**asdict(t.schedule), "step": t.step},
        scaler=t.scaler.state_dict() if t.scaler is not None else {},
        precision=t.precision.name,
        rng=checkpoint.rng_state(),
        data={
            "ranks": positions,
            "global_batch": t.cfg.data.batch_size * t.info.world_size,
            "accum_freq": t.cfg.optim.accum_freq,
            "n_workers": t.train_data.n_workers,
        },
        config=t.cfg.to_dict(),
    )
    if "logit_bias" in (bias := _logit_bias(t)):
        payload["logit_bias"] = bias["logit_bias"]
    return payload


def save_checkpoint(t: Trainer, filename: str | None) -> Path | None:
    """Write `filename` (and point latest.pt at it) on rank 0; every rank's data position goes
    in."""
    positions: list[Any] = [t.position.state_dict()]
    if t.info.enabled:  # every rank's data position, so each continues exactly
        positions = [None] * t.info.world_size
        dist.all_gather_object(positions, t.position.state_dict())
    if not t.info.is_main:
        return None
    ckpt_dir = t.run_dir / "checkpoints"
    ckpt = checkpoint_payload(t, positions)
    if filename:
        path = ckpt_format.write(ckpt_dir / filename, ckpt)
        checkpoint.link_latest(path, ckpt_dir / "latest.pt")
    else:
        path = ckpt_format.write(ckpt_dir / "latest.pt", ckpt)
    checkpoint.prune(ckpt_dir, t.cfg.run.keep_last)
    remote = remote_checkpoints(t.cfg.run, t.run_dir.name)
    if remote is not None:
        checkpoint.upload(path, remote, t.step, t.cfg.run.keep_last)
    return path


def run_evals(t: Trainer, logger: Logger, val_loader: Any, final: bool) -> None:
    """Validation and zero-shot on rank 0 when due (every N epochs, and at the end)."""
    epoch_done, ev = t.position.epoch, t.cfg.eval
    values: dict[str, float] = {}
    if t.info.is_main:
        if val_loader is not None and (
            final or (ev.val_frequency and epoch_done % ev.val_frequency == 0)
        ):
            values.update(
                evaluate.validate(
                    t.raw_model, t.loss_fn, val_loader, device=t.device, precision=t.precision
                )
            )
        if final or (ev.zeroshot_frequency and epoch_done % ev.zeroshot_frequency == 0):
            values.update(
                evaluate.run_zeroshot(
                    t.raw_model,
                    t.bundle.preprocess_val,
                    t.bundle.tokenizer,
                    ev,
                    device=t.device,
                    precision=t.precision.name,
                    workers=t.cfg.data.workers,
                )
            )
        if values:
            logger.log(t.step, {"epoch": float(epoch_done), **values})
            log.info(
                "eval at step %d: %s", t.step, ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            )
    distributed.barrier()
