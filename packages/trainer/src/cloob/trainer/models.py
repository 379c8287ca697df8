"""open_clip models for training: name resolution, the package's tiny configs, τ⁻¹ handling.

τ⁻¹ is open_clip's `logit_scale` (= ln τ⁻¹), so our state_dict loads directly into
`open_clip.create_model(name, pretrained=checkpoint)`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn as nn

from cloob.common.cli import UsageError
from cloob.common.files import write_json
from cloob.common.last_block import install_image_shortcut
from cloob.common.text import install as install_text_trim

CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_configs() -> list[str]:
    """Make the bundled configs (micro-rn, micro-vit, tiny-rn, tiny-vit) open_clip model names, so
    `open_clip.create_model_and_transforms("tiny-vit", pretrained=checkpoint)` builds the
    architecture and loads the weights. (open_clip's `local-dir:DIR` would ignore `pretrained=`
    and, without weights in DIR, return a randomly initialised model with only a log warning.)"""
    open_clip.add_model_config(CONFIG_DIR)
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


register_configs()  # the trainer resolves these names itself

# The paper's architectures are OpenAI CLIP's, i.e. with QuickGELU.
ALIASES = {
    name: f"{name}-quickgelu" for name in ("RN50", "RN101", "RN50x4", "ViT-B-32", "ViT-B-16")
}
MAX_LOGIT_SCALE = math.log(100.0)


def resolve_model_name(name: str) -> str:
    """`RN50` → `RN50-quickgelu`, `ViT-B/32` → `ViT-B-32-quickgelu`; a path to an open_clip JSON
    config registers it (name = stem)."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"model config {name} not found")
        cfg = json.loads(path.read_text())
        if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise UsageError(
                f"{name} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
            )
        open_clip.add_model_config(path)
        return path.stem
    name = name.replace("/", "-")  # the reference's and OpenAI's spelling: ViT-B/32
    resolved = ALIASES.get(name, name)
    if resolved not in open_clip.list_models():
        choices = ", ".join([*ALIASES, *sorted(p.stem for p in CONFIG_DIR.glob("*.json"))])
        raise UsageError(
            f"unknown model {name!r}: use one of {choices}, another open_clip model "
            "name, or a path to an open_clip config .json"
        )
    return resolved


def model_config(name: str) -> dict[str, Any]:
    """The dict open_clip's factory passes to CLIP(**cfg) (stored in checkpoints)."""
    cfg = open_clip.get_model_config(resolve_model_name(name))
    if cfg is None:
        raise UsageError(f"no open_clip config for model {name!r}")
    return cfg


def is_vit(cfg: dict[str, Any]) -> bool:
    return not isinstance(cfg["vision_cfg"].get("layers"), list | tuple)


@dataclass
class ModelBundle:
    model: nn.Module
    name: str  # resolved open_clip name
    cfg: dict[str, Any]
    preprocess_train: Any
    preprocess_val: Any
    tokenizer: Any


def create(
    name: str,
    *,
    init_inv_tau: float,
    learnable_inv_tau: bool,
    device: torch.device,
    grad_checkpointing: bool = False,
    precision: str = "fp32",
) -> ModelBundle:
    """`precision` is open_clip's name for the weights (`Precision.open_clip`): fp32, fp16
    (OpenAI-style half weights, fp32 norms) or pure_bf16."""
    resolved = resolve_model_name(name)
    root = logging.getLogger()
    level = root.level
    root.setLevel(
        logging.ERROR
    )  # open_clip warns "no pretrained weights" for every from-scratch model
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            resolved, device=device, init_logit_scale=math.log(init_inv_tau), precision=precision
        )
    finally:
        root.setLevel(level)
    model.logit_scale.requires_grad_(learnable_inv_tau)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    return ModelBundle(
        model,
        resolved,
        copy.deepcopy(model_config(resolved)),
        preprocess_train,
        preprocess_val,
        open_clip.get_tokenizer(resolved),
    )


def export_open_clip_dir(name: str, out_dir: str | Path) -> Path:
    """Write `out_dir/open_clip_config.json` for a model config, so OpenCLIP's own trainer can
    build the same architecture with `--model local-dir:out_dir` (side-by-side benchmarks).

    For evaluating our checkpoints use `register_configs()` instead: open_clip ignores
    `pretrained=` for `local-dir:` models, so weights given that way are silently not loaded."""
    resolved = resolve_model_name(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = model_config(resolved)["vision_cfg"]["image_size"]
    preprocess = {
        "size": size,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    write_json(
        out / "open_clip_config.json",
        {"model_cfg": model_config(resolved), "preprocess_cfg": preprocess},
    )
    return out


@dataclass(frozen=True)
class SpeedUps:
    """What `speed_up` did to a model that its inputs must follow."""

    channels_last: bool  # image batches go channels-last too (`transforms.to_device`)
    trim_text: bool  # text batches may be cut to their longest caption (`common.text.trim_padding`)


def uses_channels_last(device: torch.device, cfg: dict[str, Any]) -> bool:
    """ResNet towers: channels-last convolutions, on tensor cores and in oneDNN on the CPU
    (micro-rn's image tower forward+backward 1.21× faster on 2 CPU threads)."""
    return device.type in ("cuda", "cpu") and not is_vit(cfg)


def speed_up(bundle: ModelBundle, device: torch.device, *, compiled: bool) -> SpeedUps:
    """The training shortcuts, all exact (same features, faster): channels-last ResNet weights;
    ViT towers that pool the class token run their last block at that token only
    (`cloob.common.last_block`); the text tower accepts tokens trimmed to the batch's longest
    caption (`cloob.common.text`), but not under torch.compile (`compiled`), where every caption
    length would be a new graph. Patches `bundle.model` in place."""
    channels_last = uses_channels_last(device, bundle.cfg)
    if channels_last:
        bundle.model = bundle.model.to(memory_format=torch.channels_last)
    install_image_shortcut(bundle.model)
    trim_text = not compiled and install_text_trim(bundle.model)
    return SpeedUps(channels_last=channels_last, trim_text=trim_text)


def logit_scale(model: nn.Module) -> torch.Tensor:
    """open_clip's ln τ⁻¹ parameter (typed: nn.Module's attribute lookup is not)."""
    scale = model.logit_scale
    assert isinstance(scale, torch.Tensor)
    return scale


@torch.no_grad()
def clamp_logit_scale(model: nn.Module) -> None:
    """Keep τ⁻¹ in [1, 100] (ln τ⁻¹ in [0, ln 100]) after every step, as the reference does."""
    logit_scale(model).clamp_(0.0, MAX_LOGIT_SCALE)
