"""The `trainer` command line: the options of each config section, declared once, then `train()`."""

from __future__ import annotations

import sys
from typing import Any

import typer

from cloob.common.cli import Options, UsageError, arg, given, make_app, opt, run_app
from cloob.trainer.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from cloob.trainer.demo import DEMO_SAMPLES, demo_config, wants_demo
from cloob.trainer.methods import METHOD_HELP
from cloob.trainer.openclip_compat import check_argv

app = make_app(
    "trainer",
    "Train CLIP and CLOOB from webdataset shards, on CPU or with torchrun on GPUs.",
    "cloob-trainer",
)

# One group per TrainConfig section, each option named as its field (the flag is the field's name
# with dashes unless given): `run` below lists them, `build` fills the section by name.
DATA = Options(
    "Data",
    DataConfig,
    train_data=opt(
        "A dataprep output folder (reads sizes.json), shards with brace expansion "
        "('shards/{00000..00099}.tar'), or a CSV; join several sources with '::'.",
        place="storage",
    ),
    val_data=opt(
        "Validation data (same forms, or 'synthetic'): loss and image↔text retrieval.",
        place="storage",
    ),
    dataset_type=opt("webdataset | csv | synthetic | auto."),
    path_data=opt(
        "csv: root folder the image paths are relative to (default: the CSV's folder).",
        place="local",
    ),
    csv_separator=opt("csv: column separator ('\\t' accepted).", show_default="\\t"),
    csv_img_key=opt("csv: image path column."),
    csv_caption_key=opt("csv: caption column."),
    dataset_resampled=opt("webdataset: sample shards with replacement (any shard count works)."),
    train_num_samples=opt(
        "Samples per epoch (webdataset default: sum of sizes.json; synthetic: 10000)."
    ),
    val_num_samples=opt("Cap on validation samples."),
    batch_size=opt("Batch size per process (global = this × ranks)."),
    workers=opt("Data loader workers per process."),
    shuffle_buffer=opt("webdataset: sample shuffle buffer per worker."),
    decode_on_device=opt(
        "webdataset: workers ship JPEG bytes and crop boxes; the training device decodes "
        "(nvJPEG on CUDA), crops and resizes. Off by default: not yet measured on a GPU "
        "(docs/data-loading.md)."
    ),
)
MODEL = Options(
    "Model and objective",
    ModelConfig,
    model=opt(
        "RN50 | RN101 | RN50x4 | ViT-B-32 | ViT-B-16 (OpenAI/CLOOB QuickGELU architectures), "
        "micro-vit | micro-rn | tiny-vit | tiny-rn (64 px, for CPU), any open_clip name, or an "
        "open_clip config .json."
    ),
    method=opt(METHOD_HELP + "."),
    init_inv_tau=opt("Initial inverse temperature τ⁻¹ \\[default: 30; siglip: 10]."),
    learnable_inv_tau=opt("Learn τ⁻¹ (clamped to [1, 100] after each step)."),
    init_scale_hopfield=opt(
        "Hopfield inverse temperature β.", "--init-scale-hopfield", "--scale-hopfield"
    ),
    learnable_scale_hopfield=opt("Learn β (as ln β; logged)."),
    init_logit_bias=opt("siglip: initial bias b of the sigmoid logits."),
    learnable_logit_bias=opt(
        "siglip: learn b (logged).", "--learnable-logit-bias/--fixed-logit-bias"
    ),
    grad_checkpointing=opt("Recompute activations in backward to save memory."),
    torchcompile=opt("torch.compile the model."),
    local_loss=opt(
        "Each rank computes only its rows of the objective against the gathered batch: the "
        "same objective, per-rank cost O(b·N) instead of O(N²)."
    ),
    gather_with_grad=opt(
        "Accepted for OpenCLIP launch lines: features are always gathered with their gradient here."
    ),
)
OPTIM = Options(
    "Optimisation",
    OptimConfig,
    lr=opt("Peak learning rate \\[default: 5e-4]."),
    wd=opt("AdamW weight decay (not on bn/ln/bias/logit_scale/β)."),
    beta1=opt("Adam β1."),
    beta2=opt("Adam β2 \\[default: 0.999 ResNet, 0.98 ViT]."),
    eps=opt("Adam ε \\[default: 1e-8 ResNet, 1e-6 ViT]."),
    warmup=opt("Linear warmup steps."),
    lr_scheduler=opt("cosine | cosine-restarts | const (stepped per batch)."),
    restart_cycles=opt("cosine-restarts: number of cycles."),
    grad_clip_norm=opt("Clip the global gradient norm."),
    epochs=opt("Epochs."),
    max_steps=opt("Stop after this many steps (the schedule spans min(epochs, max-steps))."),
    accum_freq=opt(
        "Micro-batches per optimizer step: the gradient of one contrastive batch of "
        "accum-freq × batch-size, in the memory of one (features cached, each micro-batch "
        "recomputed)."
    ),
)
EVAL = Options(
    "Evaluation",
    EvalConfig,
    imagenet_val=opt("ImageNet val/ folder (val/<wnid>/...) for zero-shot.", place="local"),
    imagenet_v2=opt("ImageNetV2 matched-frequency folder for zero-shot.", place="local"),
    zeroshot_tasks=opt(
        "Repeatable: a folder with images/ (ImageFolder), classnames.txt, templates.txt.",
        "--zeroshot-task",
        place="local",
    ),
    zeroshot_frequency=opt("Zero-shot every N epochs (and at the end)."),
    batch_size_eval=opt("Batch size for validation and zero-shot."),
    val_frequency=opt("Validate every N epochs (and at the end)."),
)
RUN = Options(
    "Run",
    RunConfig,
    logs=opt(
        "Parent folder of runs (local; --remote-sync copies checkpoints to a bucket).",
        place="local",
    ),
    name=opt("Run folder name under --logs \\[default: method-model-time]."),
    resume=opt(
        "'latest' (this run's latest.pt; none yet: start) or a checkpoint path; continues at "
        "the exact step.",
        place="storage",
    ),
    save_frequency=opt("Checkpoint every N epochs (0: off)."),
    save_every_n_steps=opt("Checkpoint every N steps (0: off)."),
    remote_sync=opt(
        "s3://bucket/prefix: upload each checkpoint to PREFIX/NAME/checkpoints/ (then a "
        "latest.json commit marker); --resume latest falls back to it. Credentials: the AWS_* "
        "variables.",
        place="storage",
    ),
    keep_last=opt("Keep the K newest numbered checkpoints (0: all); latest.pt always."),
    log_every_n_steps=opt("Log (and sync with the device) every N steps."),
    report_to=opt(
        "all | tensorboard | wandb | a comma list | none (metrics.jsonl always); OpenCLIP's tags."
    ),
    precision=opt(
        "fp32 | amp (fp16 autocast + loss scaling) | amp_bf16 (= amp_bfloat16) | pure_bf16 | "
        "pure_fp16 | fp16 / bf16 (model in half, norms fp32, as the reference) | auto (amp on "
        "GPU, fp32 on CPU)."
    ),
    seed=opt("Seed for initialisation and data order."),
    device=opt("auto | cpu | cuda."),
    dist_url=opt(
        "Where the ranks meet when MASTER_ADDR/MASTER_PORT are not set: tcp://HOST:PORT "
        "(rank 0's host) or file:///shared/path. Ranks come from torchrun, mpirun (OMPI_*, PMI_*) "
        "or srun (SLURM_*); under srun the default is the step's first node, port 15000 + job "
        "id % 20000."
    ),
    dist_backend=opt("nccl | gloo \\[default: nccl on GPU, gloo on CPU]."),
    rendezvous_timeout=opt("Seconds every rank waits for the others to join; then one error line."),
    requeue=opt(
        "Slurm: after a stop signal's checkpoint, put the job back in the queue (scontrol "
        "requeue $SLURM_JOB_ID; submit with sbatch --requeue)."
    ),
    progress=opt("Show the progress bar.", "--progress/--no-progress"),
)
DEMO = Options(
    "Data",
    demo_samples=opt(
        "Without --train-data: size of the generated demo dataset (cached under "
        "$CLOOB_CACHE, default ~/.cache/cloob).",
        default=DEMO_SAMPLES,
    ),
)
GROUPS: dict[str, Options[Any]] = {
    "data": DATA,
    "model": MODEL,
    "optim": OPTIM,
    "eval": EVAL,
    "run": RUN,
}
EXPORT = Options(
    ckpt=arg(
        "A checkpoint written by `trainer run` (.pt), a path or s3://bucket/key.", place="storage"
    ),
    out=opt(
        "A new (or empty) folder for the hub layout, or s3://bucket/prefix (credentials: the "
        "AWS_* variables).",
        place="storage",
    ),
)


@app.command()
def run(
    ctx: typer.Context,
    train_data: str | None = DATA.train_data,
    val_data: str | None = DATA.val_data,
    dataset_type: str = DATA.dataset_type,
    path_data: str | None = DATA.path_data,
    csv_separator: str = DATA.csv_separator,
    csv_img_key: str = DATA.csv_img_key,
    csv_caption_key: str = DATA.csv_caption_key,
    dataset_resampled: bool = DATA.dataset_resampled,
    train_num_samples: int | None = DATA.train_num_samples,
    val_num_samples: int | None = DATA.val_num_samples,
    batch_size: int = DATA.batch_size,
    workers: int = DATA.workers,
    shuffle_buffer: int = DATA.shuffle_buffer,
    decode_on_device: bool = DATA.decode_on_device,
    model: str = MODEL.model,
    method: str = MODEL.method,
    init_inv_tau: float | None = MODEL.init_inv_tau,
    learnable_inv_tau: bool = MODEL.learnable_inv_tau,
    init_scale_hopfield: float = MODEL.init_scale_hopfield,
    learnable_scale_hopfield: bool = MODEL.learnable_scale_hopfield,
    init_logit_bias: float = MODEL.init_logit_bias,
    learnable_logit_bias: bool = MODEL.learnable_logit_bias,
    grad_checkpointing: bool = MODEL.grad_checkpointing,
    torchcompile: bool = MODEL.torchcompile,
    local_loss: bool = MODEL.local_loss,
    gather_with_grad: bool = MODEL.gather_with_grad,
    lr: float | None = OPTIM.lr,
    wd: float = OPTIM.wd,
    beta1: float = OPTIM.beta1,
    beta2: float | None = OPTIM.beta2,
    eps: float | None = OPTIM.eps,
    warmup: int = OPTIM.warmup,
    lr_scheduler: str = OPTIM.lr_scheduler,
    restart_cycles: int = OPTIM.restart_cycles,
    grad_clip_norm: float | None = OPTIM.grad_clip_norm,
    epochs: int = OPTIM.epochs,
    max_steps: int | None = OPTIM.max_steps,
    accum_freq: int = OPTIM.accum_freq,
    imagenet_val: str | None = EVAL.imagenet_val,
    imagenet_v2: str | None = EVAL.imagenet_v2,
    zeroshot_tasks: list[str] = EVAL.zeroshot_tasks,
    zeroshot_frequency: int = EVAL.zeroshot_frequency,
    batch_size_eval: int = EVAL.batch_size_eval,
    val_frequency: int = EVAL.val_frequency,
    logs: str = RUN.logs,
    name: str | None = RUN.name,
    resume: str | None = RUN.resume,
    save_frequency: int = RUN.save_frequency,
    save_every_n_steps: int = RUN.save_every_n_steps,
    remote_sync: str | None = RUN.remote_sync,
    keep_last: int = RUN.keep_last,
    log_every_n_steps: int = RUN.log_every_n_steps,
    report_to: str = RUN.report_to,
    precision: str = RUN.precision,
    seed: int = RUN.seed,
    device: str = RUN.device,
    dist_url: str = RUN.dist_url,
    dist_backend: str | None = RUN.dist_backend,
    rendezvous_timeout: float = RUN.rendezvous_timeout,
    requeue: bool = RUN.requeue,
    progress: bool = RUN.progress,
    demo_samples: int = DEMO.demo_samples,
) -> None:
    """Train CLIP or CLOOB. Single process: `trainer run ...`; several GPUs or nodes:
    `torchrun --nproc-per-node N -m cloob.trainer.cli run ...` (see the README).

    Without --train-data it trains the tiny model on a generated demo dataset and reports
    zero-shot accuracy on its held-out benchmark: a complete run in minutes on a CPU.

    SIGUSR1 or SIGTERM (Slurm's --signal=USR1@90, preemption, time limit) stop every rank at the
    next step boundary; rank 0 saves the exact-resume checkpoint and the run exits with code 75:
    rerun the same command with --name and --resume latest to continue (`--resume latest` with no
    checkpoint yet starts the run, so one command serves every start). Exit codes: 0 done, 2 bad
    input, 75 stopped with its checkpoint saved."""
    from cloob.trainer.loop import train
    from cloob.trainer.preemption import EXIT_STOPPED, Stopped

    args = locals()
    cfg = TrainConfig(**{section: group.build(args) for section, group in GROUPS.items()})
    if wants_demo(cfg):
        if demo_samples <= 0:
            raise UsageError(f"--demo-samples must be positive, got {demo_samples}")
        cfg = demo_config(cfg, given(ctx), demo_samples)
    try:
        train(cfg)
    except Stopped:
        raise typer.Exit(EXIT_STOPPED) from None


@app.command()
def export(ckpt: str = EXPORT.ckpt, out: str = EXPORT.out) -> None:
    """Write CKPT as open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors
    (no pickle) + a README.md model card. Load it with
    `open_clip.create_model_and_transforms("local-dir:OUT")`, or
    `benchmarks zeroshot --ckpt OUT`."""
    from cloob.trainer.export import export as write_hub

    typer.echo(f"wrote {write_hub(ckpt, out)}")


def main() -> None:
    if sys.argv[1:2] == ["run"]:  # an OpenCLIP-only flag: say what to use instead
        run_app(lambda: check_argv(sys.argv[2:]))
    run_app(app)  # click's usage errors become the toolkit's one `error:` line, exit 2


if __name__ == "__main__":  # `torchrun -m cloob.trainer.cli run ...`
    main()
