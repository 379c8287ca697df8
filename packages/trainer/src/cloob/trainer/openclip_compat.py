"""What lets an `open_clip_train.main` launch line run unchanged as `trainer run`.

Most of OpenCLIP's flags are ours under the same name (see docs/openclip-compat.md). Here: its
`--report-to` values, and the flags we do not implement, each refused in one line that says what to
use instead (click alone would say only "No such option").
"""

from __future__ import annotations

from cloob.common.cli import UsageError

REPORT_TARGETS = ("tensorboard", "wandb")

# OpenCLIP flag -> what to do here instead. Checked before click parses, so `--flag value` and
# `--flag=value` are both caught whatever their value.
UNSUPPORTED: dict[str, str] = {
    "--train-data-upsampling-factors": (
        "join sources with '::' in --train-data; weighting by factors is not implemented"
    ),
    "--cache-dir": "set $CLOOB_CACHE (demo data) or $HF_HOME (pretrained weights)",
    "--log-local": "every rank logs to stderr; rank 0 writes out.log",
    "--epochs-cooldown": "use --lr-scheduler cosine or cosine-restarts",
    "--lr-cooldown-end": "use --lr-scheduler cosine or cosine-restarts",
    "--lr-cooldown-power": "use --lr-scheduler cosine or cosine-restarts",
    "--momentum": "the optimizer is AdamW (--beta1, --beta2, --eps)",
    "--opt": "the optimizer is AdamW (--beta1, --beta2, --eps)",
    "--use-bn-sync": "not implemented (BatchNorm statistics stay per rank)",
    "--skip-scheduler": "use --lr-scheduler const",
    "--save-most-recent": "drop it: latest.pt is always written",
    "--delete-previous-checkpoint": "use --keep-last 1",
    "--pretrained": (
        "training starts from scratch here; evaluate pretrained weights with `benchmarks zeroshot`"
    ),
    "--pretrained-image": "training starts from scratch here",
    "--lock-image": "both towers always train",
    "--lock-image-unlocked-groups": "both towers always train",
    "--lock-image-freeze-bn-stats": "both towers always train",
    "--lock-text": "both towers always train",
    "--lock-text-unlocked-layers": "both towers always train",
    "--lock-text-freeze-layer-norm": "both towers always train",
    "--force-quick-gelu": (
        "use a -quickgelu model name (RN50, RN101, ViT-B-32 here are QuickGELU already)"
    ),
    "--force-patch-dropout": "use an open_clip config .json with patch_dropout as --model",
    "--force-custom-text": "use an open_clip config .json as --model",
    "--torchscript": "use --torchcompile",
    "--trace": "use --torchcompile",
    "--wandb-notes": "set $WANDB_NOTES",
    "--wandb-project-name": "set $WANDB_PROJECT",
    "--debug": "drop it: the log is always at INFO",
    "--copy-codebase": "drop it: checkpoints record the config and versions",
    "--horovod": "use torchrun",
    "--ddp-static-graph": "drop it",
    "--no-set-device-rank": "set CUDA_VISIBLE_DEVICES per process",
    "--coca-caption-loss-weight": (
        "CoCa is not implemented (--method cloob | clip | siglip | infoloob | hopfield_infonce)"
    ),
    "--coca-contrastive-loss-weight": (
        "CoCa is not implemented (--method cloob | clip | siglip | infoloob | hopfield_infonce)"
    ),
    "--remote-sync-frequency": "--remote-sync uploads each checkpoint as it is written",
    "--remote-sync-protocol": "--remote-sync takes an s3:// URL",
    "--distill-model": "distillation is not implemented",
    "--distill-pretrained": "distillation is not implemented",
    "--use-bnb-linear": "not implemented",
    "--siglip": "use --method siglip",
    "--loss-dist-impl": "the gather is fixed (all-gather with gradient; --local-loss for O(b·N))",
}


def check_argv(argv: list[str]) -> None:
    """Refuse the first OpenCLIP-only flag in `argv` with what to use instead."""
    for arg in argv:
        if arg == "--":
            return
        flag = arg.split("=", 1)[0]
        if flag in UNSUPPORTED:
            raise UsageError(
                f"{flag} (an open_clip_train flag) is not supported: {UNSUPPORTED[flag]}"
            )


def report_targets(value: str | None) -> frozenset[str]:
    """OpenCLIP's `--report-to`: 'all', 'tensorboard', 'wandb' or a comma list of them ('none' or
    empty: neither). Anything else is refused, so a typo never silently turns logging off."""
    names = {part.strip().lower() for part in (value or "").split(",")} - {"", "none"}
    unknown = sorted(names - {"all", *REPORT_TARGETS})
    if unknown:
        raise UsageError(
            f"--report-to {value!r}: unknown {', '.join(map(repr, unknown))}; use "
            f"all, tensorboard, wandb, a comma list of them, or none"
        )
    return frozenset(REPORT_TARGETS) if "all" in names else frozenset(names)


# Our metric names (metrics.jsonl keeps them) -> OpenCLIP's tensorboard/wandb tags for the same
# quantity, so both tools' runs overlay on one dashboard. What OpenCLIP lacks (β, skipped samples,
# retrieval extras, zero-shot recall) keeps our name under train/, val/ or zeroshot/.
_TRAIN_TAGS = {"inv_tau": "scale", "samples_per_s": "samples_per_second"}
_VAL_TAGS = {"val/loss": "val/clip_val_loss", "val/n_samples": "val/num_samples"}
_ZEROSHOT_TAGS = {"acc1": "top1", "acc5": "top5"}


def dashboard_tag(key: str) -> str:
    """The tensorboard/wandb tag for a metric: OpenCLIP's where it logs the same quantity."""
    if "/" not in key:
        return f"train/{_TRAIN_TAGS.get(key, key)}"
    if key in _VAL_TAGS:
        return _VAL_TAGS[key]
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "zeroshot" and parts[2] in _ZEROSHOT_TAGS:
        return f"val/{parts[1]}-zeroshot-val-{_ZEROSHOT_TAGS[parts[2]]}"
    return key
