"""Typed run configuration: the one place for defaults. The CLI only fills these dataclasses.

`None` means "resolved later": lr/beta2/eps take the reference's per-architecture defaults
(ResNet: 5e-4, 0.999, 1e-8; ViT: 5e-4, 0.98, 1e-6); precision `auto` is amp on CUDA, fp32 on CPU
(the precisions themselves are defined once, in `cloob.common.precision`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cloob.common.precision import CHOICES

DATASET_TYPES = ("auto", "webdataset", "csv", "synthetic")
PRECISIONS = CHOICES  # what --precision accepts
SCHEDULERS = ("cosine", "cosine-restarts", "const")
DEFAULT_INV_TAU = 30.0  # the paper's τ⁻¹ (methods without their own start)


@dataclass
class DataConfig:
    train_data: str | None = (
        None  # dataprep dir, shard pattern ({00000..00009}.tar), CSV; '::' joins
    )
    val_data: str | None = None
    dataset_type: str = "auto"
    path_data: str | None = None  # csv: root that image paths are relative to
    csv_separator: str = "\t"
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    dataset_resampled: bool = False
    train_num_samples: int | None = None  # webdataset: default sum of sizes.json; synthetic: 10000
    val_num_samples: int | None = None
    batch_size: int = 64  # per process
    workers: int = 2
    shuffle_buffer: int = 1000  # webdataset sample shuffle buffer (per worker)
    decode_on_device: bool = (
        False  # webdataset JPEGs decoded by to_device (nvJPEG on CUDA); unmeasured
    )


@dataclass
class ModelConfig:
    model: str = "RN50"
    method: str = "cloob"
    init_inv_tau: float | None = None  # None: the method's own (siglip 10), else 30 (the paper's)
    learnable_inv_tau: bool = False
    init_scale_hopfield: float = 8.0
    learnable_scale_hopfield: bool = False
    init_logit_bias: float = -10.0  # siglip's bias b (SigLIP's initialisation)
    learnable_logit_bias: bool = True
    grad_checkpointing: bool = False
    torchcompile: bool = False
    local_loss: bool = False  # each rank computes its rows of the objective (OpenCLIP's name)
    gather_with_grad: bool = False  # OpenCLIP's flag, accepted: we always gather with gradient


@dataclass
class OptimConfig:
    lr: float | None = None
    wd: float = 0.1
    beta1: float = 0.9
    beta2: float | None = None
    eps: float | None = None
    warmup: int = 10000
    lr_scheduler: str = "cosine"
    restart_cycles: int = 1
    grad_clip_norm: float | None = None
    epochs: int = 32
    max_steps: int | None = None
    accum_freq: int = (
        1  # micro-batches per optimizer step (one contrastive batch of accum_freq × b)
    )


@dataclass
class EvalConfig:
    imagenet_val: str | None = None
    imagenet_v2: str | None = None
    zeroshot_tasks: list[str] = field(
        default_factory=list
    )  # dirs: images/, classnames.txt, templates.txt
    zeroshot_frequency: int = 1  # epochs; also run once at the end
    batch_size_eval: int = 64
    val_frequency: int = 1  # epochs


@dataclass
class RunConfig:
    logs: str = "./logs"
    name: str | None = None  # default: <method>-<model>-<timestamp>
    resume: str | None = None  # 'latest' or a checkpoint path
    save_frequency: int = 1  # epochs (0 = off)
    save_every_n_steps: int = 0  # 0 = off
    keep_last: int = 0  # numbered checkpoints kept (0 = all)
    remote_sync: str | None = None  # s3://bucket/prefix: each checkpoint is also uploaded there
    log_every_n_steps: int = 10
    report_to: str = "tensorboard"  # all | tensorboard | wandb | comma list | none (OpenCLIP's)
    precision: str = "auto"
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    dist_url: str = "env://"
    dist_backend: str | None = None  # default nccl on GPU, gloo on CPU
    rendezvous_timeout: float = 600.0  # seconds every rank waits for the others to join
    requeue: bool = False  # on a stop signal, after the checkpoint: scontrol requeue (Slurm)
    progress: bool = True


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: kind(**d.get(k, {})) for k, kind in SECTIONS.items()})


SECTIONS: dict[str, Any] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "run": RunConfig,
}  # TrainConfig's fields


def resolve_optim_defaults(optim: OptimConfig, vit: bool) -> OptimConfig:
    """Fill the reference's per-architecture Adam defaults."""
    return dataclasses.replace(
        optim,
        lr=optim.lr if optim.lr is not None else 5e-4,
        beta2=optim.beta2 if optim.beta2 is not None else (0.98 if vit else 0.999),
        eps=optim.eps if optim.eps is not None else (1e-6 if vit else 1e-8),
    )
