"""The `trainer` command line: typer options that fill the config dataclasses, then `train()`."""

from __future__ import annotations

import sys

import typer

from cloob.common.cli import UsageError, make_app, run_app
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

_D, _M, _O, _E, _R = DataConfig(), ModelConfig(), OptimConfig(), EvalConfig(), RunConfig()
DATA, MODEL, OPTIM, EVAL, RUN = "Data", "Model and objective", "Optimisation", "Evaluation", "Run"


def _opt(default, *names: str, help: str, panel: str, **kw):  # click's word
    return typer.Option(default, *names, help=help, rich_help_panel=panel, **kw)


@app.command()
def run(
    ctx: typer.Context,
    # data
    train_data: str = _opt(
        _D.train_data,
        "--train-data",
        panel=DATA,
        help="A dataprep output folder (reads sizes.json), shards with brace expansion "
        "('shards/{00000..00099}.tar'), or a CSV; join several sources with '::'.",
    ),
    val_data: str = _opt(
        _D.val_data,
        "--val-data",
        panel=DATA,
        help="Validation data (same forms, or 'synthetic'): loss and image↔text retrieval.",
    ),
    dataset_type: str = _opt(
        _D.dataset_type, "--dataset-type", panel=DATA, help="webdataset | csv | synthetic | auto."
    ),
    path_data: str = _opt(
        _D.path_data,
        "--path-data",
        panel=DATA,
        help="csv: root folder the image paths are relative to (default: the CSV's folder).",
    ),
    csv_separator: str = _opt(
        _D.csv_separator,
        "--csv-separator",
        panel=DATA,
        help="csv: column separator ('\\t' accepted).",
        show_default="\\t",
    ),
    csv_img_key: str = _opt(
        _D.csv_img_key, "--csv-img-key", panel=DATA, help="csv: image path column."
    ),
    csv_caption_key: str = _opt(
        _D.csv_caption_key, "--csv-caption-key", panel=DATA, help="csv: caption column."
    ),
    dataset_resampled: bool = _opt(
        _D.dataset_resampled,
        "--dataset-resampled",
        panel=DATA,
        help="webdataset: sample shards with replacement (any shard count works).",
    ),
    train_num_samples: int = _opt(
        _D.train_num_samples,
        "--train-num-samples",
        panel=DATA,
        help="Samples per epoch (webdataset default: sum of sizes.json; synthetic: 10000).",
    ),
    val_num_samples: int = _opt(
        _D.val_num_samples, "--val-num-samples", panel=DATA, help="Cap on validation samples."
    ),
    batch_size: int = _opt(
        _D.batch_size,
        "--batch-size",
        panel=DATA,
        help="Batch size per process (global = this × ranks).",
    ),
    workers: int = _opt(
        _D.workers, "--workers", panel=DATA, help="Data loader workers per process."
    ),
    shuffle_buffer: int = _opt(
        _D.shuffle_buffer,
        "--shuffle-buffer",
        panel=DATA,
        help="webdataset: sample shuffle buffer per worker.",
    ),
    decode_on_device: bool = _opt(
        _D.decode_on_device,
        "--decode-on-device",
        panel=DATA,
        help="webdataset: workers ship JPEG bytes and crop boxes; the training device decodes "
        "(nvJPEG on CUDA), crops and resizes. Off by default: not yet measured on a GPU "
        "(docs/data-loading.md).",
    ),
    # model
    model: str = _opt(
        _M.model,
        "--model",
        panel=MODEL,
        help="RN50 | RN101 | RN50x4 | ViT-B-32 | ViT-B-16 (OpenAI/CLOOB QuickGELU architectures), "
        "micro-vit | micro-rn | tiny-vit | tiny-rn (64 px, for CPU), any open_clip name, or an "
        "open_clip config .json.",
    ),
    method: str = _opt(_M.method, "--method", panel=MODEL, help=METHOD_HELP + "."),
    init_inv_tau: float = _opt(
        _M.init_inv_tau,
        "--init-inv-tau",
        panel=MODEL,
        help="Initial inverse temperature τ⁻¹ \\[default: 30; siglip: 10].",
    ),
    learnable_inv_tau: bool = _opt(
        _M.learnable_inv_tau,
        "--learnable-inv-tau",
        panel=MODEL,
        help="Learn τ⁻¹ (clamped to [1, 100] after each step).",
    ),
    init_scale_hopfield: float = _opt(
        _M.init_scale_hopfield,
        "--init-scale-hopfield",
        "--scale-hopfield",
        panel=MODEL,
        help="Hopfield inverse temperature β.",
    ),
    learnable_scale_hopfield: bool = _opt(
        _M.learnable_scale_hopfield,
        "--learnable-scale-hopfield",
        panel=MODEL,
        help="Learn β (as ln β; logged).",
    ),
    init_logit_bias: float = _opt(
        _M.init_logit_bias,
        "--init-logit-bias",
        panel=MODEL,
        help="siglip: initial bias b of the sigmoid logits.",
    ),
    learnable_logit_bias: bool = _opt(
        _M.learnable_logit_bias,
        "--learnable-logit-bias/--fixed-logit-bias",
        panel=MODEL,
        help="siglip: learn b (logged).",
    ),
    grad_checkpointing: bool = _opt(
        _M.grad_checkpointing,
        "--grad-checkpointing",
        panel=MODEL,
        help="Recompute activations in backward to save memory.",
    ),
    torchcompile: bool = _opt(
        _M.torchcompile, "--torchcompile", panel=MODEL, help="torch.compile the model."
    ),
    local_loss: bool = _opt(
        _M.local_loss,
        "--local-loss",
        panel=MODEL,
        help="Each rank computes only its rows of the objective against the gathered batch: the "
        "same objective, per-rank cost O(b·N) instead of O(N²).",
    ),
    gather_with_grad: bool = _opt(
        _M.gather_with_grad,
        "--gather-with-grad",
        panel=MODEL,
        help="Accepted for OpenCLIP launch lines: features are always gathered with their "
        "gradient here.",
    ),
    # optimisation
    lr: float = _opt(_O.lr, "--lr", panel=OPTIM, help="Peak learning rate \\[default: 5e-4]."),
    wd: float = _opt(
        _O.wd, "--wd", panel=OPTIM, help="AdamW weight decay (not on bn/ln/bias/logit_scale/β)."
    ),
    beta1: float = _opt(_O.beta1, "--beta1", panel=OPTIM, help="Adam β1."),
    beta2: float = _opt(
        _O.beta2, "--beta2", panel=OPTIM, help="Adam β2 \\[default: 0.999 ResNet, 0.98 ViT]."
    ),
    eps: float = _opt(
        _O.eps, "--eps", panel=OPTIM, help="Adam ε \\[default: 1e-8 ResNet, 1e-6 ViT]."
    ),
    warmup: int = _opt(_O.warmup, "--warmup", panel=OPTIM, help="Linear warmup steps."),
    lr_scheduler: str = _opt(
        _O.lr_scheduler,
        "--lr-scheduler",
        panel=OPTIM,
        help="cosine | cosine-restarts | const (stepped per batch).",
    ),
    restart_cycles: int = _opt(
        _O.restart_cycles,
        "--restart-cycles",
        panel=OPTIM,
        help="cosine-restarts: number of cycles.",
    ),
    grad_clip_norm: float = _opt(
        _O.grad_clip_norm, "--grad-clip-norm", panel=OPTIM, help="Clip the global gradient norm."
    ),
    epochs: int = _opt(_O.epochs, "--epochs", panel=OPTIM, help="Epochs."),
    max_steps: int = _opt(
        _O.max_steps,
        "--max-steps",
        panel=OPTIM,
        help="Stop after this many steps (the schedule spans min(epochs, max-steps)).",
    ),
    accum_freq: int = _opt(
        _O.accum_freq,
        "--accum-freq",
        panel=OPTIM,
        help="Micro-batches per optimizer step: the gradient of one contrastive batch of "
        "accum-freq × batch-size, in the memory of one (features cached, each micro-batch "
        "recomputed).",
    ),
    # evaluation
    imagenet_val: str = _opt(
        _E.imagenet_val,
        "--imagenet-val",
        panel=EVAL,
        help="ImageNet val/ folder (val/<wnid>/...) for zero-shot.",
    ),
    imagenet_v2: str = _opt(
        _E.imagenet_v2,
        "--imagenet-v2",
        panel=EVAL,
        help="ImageNetV2 matched-frequency folder for zero-shot.",
    ),
    zeroshot_tasks: list[str] = _opt(
        [],
        "--zeroshot-task",
        panel=EVAL,
        help="Repeatable: a folder with images/ (ImageFolder), classnames.txt, templates.txt.",
    ),
    zeroshot_frequency: int = _opt(
        _E.zeroshot_frequency,
        "--zeroshot-frequency",
        panel=EVAL,
        help="Zero-shot every N epochs (and at the end).",
    ),
    batch_size_eval: int = _opt(
        _E.batch_size_eval,
        "--batch-size-eval",
        panel=EVAL,
        help="Batch size for validation and zero-shot.",
    ),
    val_frequency: int = _opt(
        _E.val_frequency,
        "--val-frequency",
        panel=EVAL,
        help="Validate every N epochs (and at the end).",
    ),
    # run
    logs: str = _opt(_R.logs, "--logs", panel=RUN, help="Parent folder of runs."),
    name: str = _opt(
        _R.name,
        "--name",
        panel=RUN,
        help="Run folder name under --logs \\[default: method-model-time].",
    ),
    resume: str = _opt(
        _R.resume,
        "--resume",
        panel=RUN,
        help="'latest' (this run's latest.pt; none yet: start) or a checkpoint path; continues at "
        "the exact step.",
    ),
    save_frequency: int = _opt(
        _R.save_frequency, "--save-frequency", panel=RUN, help="Checkpoint every N epochs (0: off)."
    ),
    save_every_n_steps: int = _opt(
        _R.save_every_n_steps,
        "--save-every-n-steps",
        panel=RUN,
        help="Checkpoint every N steps (0: off).",
    ),
    remote_sync: str = _opt(
        _R.remote_sync,
        "--remote-sync",
        panel=RUN,
        help="s3://bucket/prefix: upload each checkpoint to PREFIX/NAME/checkpoints/ (then a "
        "latest.json commit marker); --resume latest falls back to it. Credentials: the AWS_* "
        "variables.",
    ),
    keep_last: int = _opt(
        _R.keep_last,
        "--keep-last",
        panel=RUN,
        help="Keep the K newest numbered checkpoints (0: all); latest.pt always.",
    ),
    log_every_n_steps: int = _opt(
        _R.log_every_n_steps,
        "--log-every-n-steps",
        panel=RUN,
        help="Log (and sync with the device) every N steps.",
    ),
    report_to: str = _opt(
        _R.report_to,
        "--report-to",
        panel=RUN,
        help="all | tensorboard | wandb | a comma list | none (metrics.jsonl always); OpenCLIP's "
        "tags.",
    ),
    precision: str = _opt(
        _R.precision,
        "--precision",
        panel=RUN,
        help="fp32 | amp (fp16 autocast + loss scaling) | amp_bf16 (= amp_bfloat16) | pure_bf16 | "
        "pure_fp16 | fp16 / bf16 (model in half, norms fp32, as the reference) | auto (amp on "
        "GPU, fp32 on CPU).",
    ),
    seed: int = _opt(_R.seed, "--seed", panel=RUN, help="Seed for initialisation and data order."),
    device: str = _opt(_R.device, "--device", panel=RUN, help="auto | cpu | cuda."),
    dist_url: str = _opt(
        _R.dist_url,
        "--dist-url",
        panel=RUN,
        help="Where the ranks meet when MASTER_ADDR/MASTER_PORT are not set: tcp://HOST:PORT "
        "(rank 0's host) or file:///shared/path. Ranks come from torchrun, mpirun (OMPI_*, PMI_*) "
        "or srun (SLURM_*); under srun the default is the step's first node, port 15000 + job "
        "id % 20000.",
    ),
    dist_backend: str = _opt(
        _R.dist_backend,
        "--dist-backend",
        panel=RUN,
        help="nccl | gloo \\[default: nccl on GPU, gloo on CPU].",
    ),
    rendezvous_timeout: float = _opt(
        _R.rendezvous_timeout,
        "--rendezvous-timeout",
        panel=RUN,
        help="Seconds every rank waits for the others to join; then one error line.",
    ),
    requeue: bool = _opt(
        _R.requeue,
        "--requeue",
        panel=RUN,
        help="Slurm: after a stop signal's checkpoint, put the job back in the queue (scontrol "
        "requeue $SLURM_JOB_ID; submit with sbatch --requeue).",
    ),
    progress: bool = _opt(
        _R.progress, "--progress/--no-progress", panel=RUN, help="Show the progress bar."
    ),
    demo_samples: int = _opt(
        DEMO_SAMPLES,
        "--demo-samples",
        panel=DATA,
        help="Without --train-data: size of the generated demo dataset (cached under "
        "$CLOOB_CACHE, default ~/.cache/cloob).",
    ),
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

    # Every parameter above is named as its config field: the configs are filled by name from
    # ctx.params (tests/trainer/test_cli.py::test_every_option_reaches_its_field checks it).
    cfg = TrainConfig.from_flat(ctx.params)
    # typer vendors click: compare the source by name rather than importing its enum
    explicit = {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
    if wants_demo(cfg):
        if demo_samples <= 0:
            raise UsageError(f"--demo-samples must be positive, got {demo_samples}")
        cfg = demo_config(cfg, explicit, demo_samples)
    try:
        train(cfg)
    except Stopped:
        raise typer.Exit(EXIT_STOPPED) from None


@app.command()
def export(
    ckpt: str = typer.Argument(..., help="A checkpoint written by `trainer run` (.pt)."),
    out: str = typer.Option(..., "--out", help="A new (or empty) folder for the hub layout."),
) -> None:
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
