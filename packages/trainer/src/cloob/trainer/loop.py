"""The training loop, readable top to bottom: `train(cfg) -> RunResult`.

One process per device (torchrun sets RANK/WORLD_SIZE); rank 0 alone logs, evaluates and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from cloob.common.cli import UsageError
from cloob.common.files import write_json
from cloob.trainer import checkpoint, data, distributed, evaluate, losses, models
from cloob.trainer.config import (
    DATASET_TYPES,
    PRECISIONS,
    SCHEDULERS,
    TrainConfig,
    resolve_optim_defaults,
)

log = logging.getLogger("cloob.trainer")


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path | None  # the final checkpoint
    metrics: dict[str, float] = field(default_factory=dict)  # last logged values (train, val, zero-shot)


# ----------------------------------------------------------------------------- small pieces


def learning_rate(step: int, *, base_lr: float, warmup: int, total: int, kind: str,
                  cycles: int = 1) -> float:
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


def param_groups(model: nn.Module, loss_fn: nn.Module, wd: float) -> list[dict[str, Any]]:
    """The reference's two AdamW groups: no weight decay for bn / ln / bias / logit_scale (and β)."""
    decay, no_decay = [], []
    named = [*model.named_parameters(), *(("loss." + n, p) for n, p in loss_fn.named_parameters())]
    for name, p in named:
        if not p.requires_grad:
            continue
        skip = any(s in name for s in ("bn", "ln", "bias", "logit_scale", "logit_beta"))
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def make_optimizer(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float],
                   eps: float) -> torch.optim.Optimizer:
    # fused AdamW runs one kernel per step on CPU and GPU in current torch; foreach otherwise.
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "amp" if device.type == "cuda" else "fp32"
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    # fp16 autocast on CPU is slow and unscaled; `amp` means bf16 there.
    dtype = torch.float16 if precision == "amp" and device.type == "cuda" else torch.bfloat16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_name(cfg: TrainConfig) -> str:
    model = cfg.model.model.replace("/", "-")
    if model.endswith(".json"):
        model = Path(model).stem
    return f"{cfg.model.method}-{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- validation


def validate_config(cfg: TrainConfig) -> dict[str, Any] | None:
    """Check everything a user can get wrong, before any work; returns a resume checkpoint if any."""
    method = cfg.model.method.replace("-", "_")
    if method not in losses.METHODS:
        raise UsageError(f"unknown method {cfg.model.method!r}: choose from {', '.join(losses.METHODS)}")
    cfg.model.method = method
    for value, choices, flag in ((cfg.data.dataset_type, DATASET_TYPES, "--dataset-type"),
                                 (cfg.optim.lr_scheduler, SCHEDULERS, "--lr-scheduler"),
                                 (cfg.run.precision, PRECISIONS, "--precision")):
        if value not in choices:
            raise UsageError(f"{flag} {value!r}: choose from {', '.join(choices)}")
    for value, flag in ((cfg.data.batch_size, "--batch-size"), (cfg.model.init_inv_tau, "--init-inv-tau"),
                        (cfg.model.init_scale_hopfield, "--init-scale-hopfield"),
                        (cfg.optim.epochs, "--epochs"), (cfg.eval.batch_size_eval, "--batch-size-eval")):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if cfg.data.workers < 0 or cfg.optim.warmup < 0 or cfg.optim.restart_cycles < 1:
        raise UsageError("--workers and --warmup must be >= 0, --restart-cycles >= 1")
    if cfg.optim.max_steps is not None and cfg.optim.max_steps <= 0:
        raise UsageError(f"--max-steps must be positive, got {cfg.optim.max_steps}")
    resolved = models.resolve_model_name(cfg.model.model)
    data.resolve_source(cfg.data.train_data, cfg.data.dataset_type)
    if cfg.data.val_data and cfg.data.val_data != "synthetic":
        data.resolve_source(cfg.data.val_data, "auto")
    evaluate.check_zeroshot(cfg.eval)
    if cfg.run.report_to and "wandb" in cfg.run.report_to:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--report-to wandb needs wandb installed (pip install wandb)") from None
    if not cfg.run.resume:
        return None
    run_dir = Path(cfg.run.logs) / (cfg.run.name or "")
    if cfg.run.resume == "latest" and not cfg.run.name:
        raise UsageError("--resume latest needs --name (the run folder under --logs)")
    ckpt = checkpoint.load(checkpoint.find_resume(cfg.run.resume, run_dir / "checkpoints"))
    if ckpt["model_name"] != resolved or ckpt["model_cfg"] != models.model_config(resolved):
        raise UsageError(f"cannot resume: the checkpoint is a {ckpt['model_name']} model, "
                         f"this run asks for {resolved}")
    if ckpt["method"] != method:
        raise UsageError(f"cannot resume: the checkpoint was trained with --method {ckpt['method']}")
    return ckpt


# ----------------------------------------------------------------------------- logging


class Logger:
    """metrics.jsonl + tensorboard (+ wandb) on rank 0; a no-op elsewhere."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, enabled: bool) -> None:
        self.enabled = enabled
        self.last: dict[str, float] = {}
        self.tb = self.wandb = None
        if not enabled:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        targets = cfg.run.report_to or ""
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in targets:
            import wandb

            self.wandb = wandb.init(project="cloob-toolkit", name=run_dir.name, config=cfg.to_dict(),
                                    dir=str(run_dir), resume="allow")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.last.update(values)
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
            if self.wandb is not None:
                self.wandb.finish()


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    logger = logging.getLogger("cloob.trainer")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.handlers.clear()
    logger.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(stream)
    if run_dir is not None:
        logfile = logging.FileHandler(run_dir / "out.log")
        logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(logfile)


# ----------------------------------------------------------------------------- train


def train(cfg: TrainConfig) -> RunResult:
    """Train as configured; returns the run folder, the final checkpoint and the last metrics."""
    cfg = TrainConfig.from_dict(cfg.to_dict())  # never mutate the caller's config
    resume_ckpt = validate_config(cfg)  # bad input fails here, before any work
    info = distributed.init(cfg.run.device, cfg.run.dist_url, cfg.run.dist_backend)
    try:
        return _train(cfg, info, resume_ckpt)
    finally:
        distributed.shutdown()


def _train(cfg: TrainConfig, info: distributed.DistInfo,
           resume_ckpt: dict[str, Any] | None) -> RunResult:
    device = info.device
    cfg.run.name = cfg.run.name or default_name(cfg)
    if info.enabled:  # every rank must agree on the run folder
        names = [cfg.run.name]
        dist.broadcast_object_list(names, src=0)
        cfg.run.name = names[0]
    run_dir = Path(cfg.run.logs) / cfg.run.name
    ckpt_dir = run_dir / "checkpoints"
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir if info.is_main else None, info.is_main)
    seed_everything(cfg.run.seed)
    precision = resolve_precision(cfg.run.precision, device)
    autocast = autocast_factory(precision, device)

    # --- model, objective, optimizer
    bundle = models.create(cfg.model.model, init_inv_tau=cfg.model.init_inv_tau,
                           learnable_inv_tau=cfg.model.learnable_inv_tau, device=device,
                           grad_checkpointing=cfg.model.grad_checkpointing)
    model = bundle.model
    if device.type == "cuda" and not models.is_vit(bundle.cfg):
        model = model.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores
    loss_fn = losses.create_loss(cfg.model.method, cfg.model.init_scale_hopfield,
                                 cfg.model.learnable_scale_hopfield).to(device)
    cfg.optim = resolve_optim_defaults(cfg.optim, models.is_vit(bundle.cfg))
    optimizer = make_optimizer(param_groups(model, loss_fn, cfg.optim.wd), cfg.optim.lr,
                               (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.eps)
    scaler = torch.amp.GradScaler("cuda") if precision == "amp" and device.type == "cuda" else None

    # --- data
    image_size = bundle.cfg["vision_cfg"]["image_size"]
    train_data = data.build_train_data(cfg.data, transform=bundle.preprocess_train,
                                       tokenizer=bundle.tokenizer, image_size=image_size,
                                       seed=cfg.run.seed, rank=info.rank, world_size=info.world_size)
    total_steps = cfg.optim.epochs * train_data.steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)
    schedule = dict(base_lr=cfg.optim.lr, warmup=cfg.optim.warmup, total=total_steps,
                    kind=cfg.optim.lr_scheduler, cycles=cfg.optim.restart_cycles)
    global_batch = cfg.data.batch_size * info.world_size

    # --- resume
    step, position = 0, data.Position()
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["state_dict"])
        loss_fn.load_state_dict(resume_ckpt["loss_state"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        if scaler is not None and resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        step = int(resume_ckpt["step"])
        saved = resume_ckpt["data"]
        ranks = saved["ranks"]
        if len(ranks) == info.world_size and saved["global_batch"] == global_batch \
                and saved["n_workers"] == train_data.n_workers:
            position = data.Position.from_state(ranks[info.rank])
        else:  # exact data order needs the same world size, batch and workers; stay close otherwise
            log.warning("resuming with a different world size, batch size or worker count: the data "
                        "order from here on differs from the original run")
            position = data.Position(epoch=ranks[0]["epoch"], batch=ranks[0]["batch"])
            if position.batch >= train_data.steps_per_epoch:
                position = data.Position(epoch=position.epoch + 1)
        checkpoint.set_rng_state(resume_ckpt["rng"])
        log.info("resumed from step %d (epoch %d, batch %d)", step, position.epoch, position.batch)
        resume_ckpt = None  # free the memory

    raw_model = model
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.model.torchcompile:
        model = torch.compile(model)

    logger = Logger(run_dir, cfg, info.is_main)
    if info.is_main:
        write_json(run_dir / "config.json", cfg.to_dict())
        log.info("run folder %s: %s/%s, %d steps (%d per epoch), global batch %d, %s, %d rank(s)",
                 run_dir, cfg.model.method, bundle.name, total_steps, train_data.steps_per_epoch,
                 global_batch, precision, info.world_size)
    val_loader = None
    if cfg.data.val_data and info.is_main:
        val_loader = data.build_val_loader(cfg.data, batch_size=cfg.eval.batch_size_eval,
                                           transform=bundle.preprocess_val, tokenizer=bundle.tokenizer,
                                           image_size=image_size, seed=cfg.run.seed)

    def save_checkpoint(filename: str | None) -> Path | None:
        positions = [position.state_dict()]
        if info.enabled:  # every rank's data position, so each continues exactly
            positions = [None] * info.world_size
            dist.all_gather_object(positions, position.state_dict())
        if not info.is_main:
            return None
        ckpt = {
            "format": checkpoint.FORMAT, "name": cfg.run.name,
            "state_dict": raw_model.state_dict(), "model_name": bundle.name, "model_cfg": bundle.cfg,
            "method": cfg.model.method, "inv_tau": float(raw_model.logit_scale.detach().exp()),
            "hopfield_beta": float(loss_fn.beta.detach()), "epoch": position.epoch, "step": step,
            "loss_state": loss_fn.state_dict(),  # exact ln β (the float above is for readers)
            "optimizer": optimizer.state_dict(), "scheduler": {**schedule, "step": step},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": checkpoint.rng_state(),
            "data": {"ranks": positions, "global_batch": global_batch,
                     "n_workers": train_data.n_workers},
            "config": cfg.to_dict(),
        }
        if filename:
            path = checkpoint.save(ckpt_dir / filename, ckpt)
            checkpoint.link_latest(path, ckpt_dir / "latest.pt")
        else:
            path = checkpoint.save(ckpt_dir / "latest.pt", ckpt)
        checkpoint.prune(ckpt_dir, cfg.run.keep_last)
        return path

    def run_evals(final: bool) -> None:
        epoch_done = position.epoch  # epochs completed
        values: dict[str, float] = {}
        if info.is_main:
            if val_loader is not None and (
                    final or (cfg.eval.val_frequency and epoch_done % cfg.eval.val_frequency == 0)):
                values.update(evaluate.validate(raw_model, loss_fn, val_loader, device=device,
                                                autocast=autocast))
            if final or (cfg.eval.zeroshot_frequency and epoch_done % cfg.eval.zeroshot_frequency == 0):
                raw_model.eval()
                values.update(evaluate.run_zeroshot(raw_model, bundle.preprocess_val, bundle.tokenizer,
                                                    cfg.eval, device=device, precision=precision,
                                                    workers=cfg.data.workers))
                raw_model.train()
            if values:
                logger.log(step, {"epoch": float(epoch_done), **values})
                log.info("eval at step %d: %s", step,
                         ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        distributed.barrier()

    # --- the loop
    progress = _progress(info.is_main and cfg.run.progress, total_steps, step)
    model.train()
    loss_sum = torch.zeros((), device=device)
    window_steps, window_start = 0, time.perf_counter()
    last_ckpt: Path | None = None
    saved_at = -1
    while step < total_steps:
        loader = train_data.make_loader(position)
        for batch in loader:
            lr = learning_rate(step, **schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["image"].to(device, non_blocking=True)
            texts = batch["text"].to(device, non_blocking=True)
            if device.type == "cuda" and not models.is_vit(bundle.cfg):
                images = images.to(memory_format=torch.channels_last)

            with autocast():
                image_features, text_features, inv_tau = model(images, texts)
            # The objective runs in fp32 on the features of all ranks (gathered with gradient).
            image_features, text_features = distributed.gather_features(image_features.float(),
                                                                        text_features.float())
            loss = loss_fn(image_features, text_features, inv_tau.float())

            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.optim.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if cfg.optim.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip_norm)
                optimizer.step()
            models.clamp_logit_scale(raw_model)

            step += 1
            position.advance(batch, train_data.n_workers)
            loss_sum += loss.detach()
            window_steps += 1
            progress.advance()

            if step % cfg.run.log_every_n_steps == 0 or step == total_steps:
                # The only host syncs of the loop happen here, every log_every_n_steps.
                skipped = torch.tensor(float(position.skipped))
                if info.enabled:
                    dist.all_reduce(skipped)
                elapsed = time.perf_counter() - window_start
                values = {"loss": loss_sum.item() / window_steps, "lr": lr,
                          "inv_tau": float(raw_model.logit_scale.detach().exp()), "beta": float(loss_fn.beta.detach()),
                          "samples_per_s": window_steps * global_batch / max(elapsed, 1e-9),
                          "epoch": position.epoch + position.batch / train_data.steps_per_epoch,
                          "skipped_samples": float(skipped)}
                logger.log(step, values)
                progress.show(values)
                loss_sum.zero_()
                window_steps, window_start = 0, time.perf_counter()

            epoch_end = position.batch == train_data.steps_per_epoch
            if epoch_end:
                position = data.Position(epoch=position.epoch + 1, skipped=position.skipped)
            if cfg.run.save_every_n_steps and step % cfg.run.save_every_n_steps == 0:
                last_ckpt, saved_at = save_checkpoint(f"step_{step}.pt"), step
            if epoch_end or step >= total_steps:
                break
        del loader  # stops the epoch's workers
        if position.batch == 0 and position.epoch > 0:  # an epoch just ended
            final = step >= total_steps
            if cfg.run.save_frequency and (position.epoch % cfg.run.save_frequency == 0 or final):
                last_ckpt, saved_at = save_checkpoint(f"epoch_{position.epoch}.pt"), step
            run_evals(final)
        elif step >= total_steps:  # --max-steps ended the run mid-epoch
            run_evals(final=True)
    progress.stop()
    if saved_at != step:
        last_ckpt = save_checkpoint(f"step_{step}.pt")
    logger.close()
    if info.is_main:
        _finish(run_dir, logger.last)
    return RunResult(run_dir, last_ckpt if info.is_main else None, dict(logger.last))


# ----------------------------------------------------------------------------- end of run


class _progress:  # noqa: N801 - used like a function
    """A rich progress bar on rank 0 showing loss, lr, τ⁻¹, β, samples/s; silent elsewhere."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"))
        self.task = self.bar.add_task("train", total=total, completed=done, stats="")
        self.bar.start()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def show(self, v: dict[str, float]) -> None:
        if self.bar is not None:
            stats = (f"loss {v['loss']:.4f}  lr {v['lr']:.2e}  τ⁻¹ {v['inv_tau']:.1f}  "
                     f"β {v['beta']:.2f}  {v['samples_per_s']:.1f} samples/s")
            self.bar.update(self.task, stats=stats)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def plot_curves(run_dir: Path) -> Path:
    """curves.png from metrics.jsonl: loss, learning rate and zero-shot accuracy against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in ((axes[0], "loss", "training loss"), (axes[1], "lr", "learning rate")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True))
        ax.set_title(title)
        ax.set_xlabel("step")
    zs = sorted({k for r in rows for k in r if k.startswith("zeroshot/") and k.endswith("/acc1")})
    for key in zs:
        pts = [(r["step"], 100 * r[key]) for r in rows if key in r]
        axes[2].plot(*zip(*pts, strict=True), marker="o", label=key.split("/")[1])
    if zs:
        axes[2].legend()
    axes[2].set_title("zero-shot top-1 (%)")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _finish(run_dir: Path, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    try:
        plot_curves(run_dir)
    except Exception as err:  # a plot must never fail a finished run
        log.warning("could not draw curves.png: %s", err)
    console = Console(stderr=False)
    tasks = sorted({k.split("/")[1] for k in metrics if k.startswith("zeroshot/")})
    if tasks:
        table = Table(title="zero-shot (final)")
        for col in ("task", "classes", "chance %", "acc1 %", "acc5 %", "mean per-class recall %"):
            table.add_column(col, justify="left" if col == "task" else "right")
        for t in tasks:
            n = metrics.get(f"zeroshot/{t}/n_classes", float("nan"))
            table.add_row(t, f"{n:.0f}", f"{100 / n:.2f}",
                          *(f"{100 * metrics.get(f'zeroshot/{t}/{k}', float('nan')):.2f}"
                            for k in ("acc1", "acc5", "mean_per_class_recall")))
        console.print(table)
    console.print(f"run folder: {run_dir}")

