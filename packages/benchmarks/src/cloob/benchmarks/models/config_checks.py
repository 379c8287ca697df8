"""What a model config read from a file may ask for, checked before open_clip builds it.

A model folder or checkpoint is data someone else wrote. Building it must not hang on a size no
machine has (an `image_size` of 10**9 allocates a position table of that many rows), and must not
reach the network: a text tower that names a Hugging Face model makes transformers fetch its
config (and, by default, its weights) from the Hub, a pretrained timm tower fetches weights too.
The folder's own weights replace anything pretrained, so pretrained downloads are switched off
outright, and the rest (a Hugging Face config or tokenizer) is taken from the local cache only,
unless the user allows downloads with CLOOB_ALLOW_DOWNLOADS=1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from cloob.common.cli import UsageError, first_line

ALLOW_DOWNLOADS = "CLOOB_ALLOW_DOWNLOADS"

# Far above any released CLIP (ViT-bigG: width 1664, 48 layers, 224 px; ConvNeXt-XXL 256 px; SigLIP
# so400m 384 px), far below what would exhaust a machine before the error.
LIMITS = {
    "image_size": 4096,
    "patch_size": 4096,
    "width": 65536,
    "layers": 1024,
    "heads": 1024,
    "context_length": 65536,
    "vocab_size": 10_000_000,
    "embed_dim": 65536,
}


def check_sizes(cfg: dict[str, Any], where: str) -> None:
    """One line naming the first size that is not a whole number within LIMITS."""
    towers = {"": cfg, "vision_cfg.": cfg.get("vision_cfg"), "text_cfg.": cfg.get("text_cfg")}
    for prefix, tower in towers.items():
        if not isinstance(tower, dict):
            continue
        for key, limit in LIMITS.items():
            value = tower.get(key)
            if value is None or (prefix == "" and key != "embed_dim"):
                continue
            for n in value if isinstance(value, list | tuple) else [value]:
                if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
                    raise UsageError(
                        f"{where}: model config {prefix}{key} = {value!r} is not a whole number "
                        f"from 1 to {limit}"
                    )


def without_pretrained(cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with the towers' pretrained downloads off: the checkpoint's weights replace them."""
    cfg = dict(cfg)
    if isinstance(cfg.get("vision_cfg"), dict) and cfg["vision_cfg"].get("timm_model_pretrained"):
        cfg["vision_cfg"] = {**cfg["vision_cfg"], "timm_model_pretrained": False}
    if isinstance(cfg.get("text_cfg"), dict) and cfg["text_cfg"].get("hf_model_name"):
        cfg["text_cfg"] = {**cfg["text_cfg"], "hf_model_pretrained": False}
    return cfg


def hub_models(cfg: dict[str, Any]) -> list[str]:
    """The Hugging Face repositories building `cfg` reads (a text tower's model and tokenizer)."""
    text = cfg.get("text_cfg")
    if not isinstance(text, dict):
        return []
    names = [text.get("hf_model_name"), text.get("hf_tokenizer_name")]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def downloads_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOADS, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def offline_build(cfg: dict[str, Any], where: str) -> Iterator[None]:
    """Build `cfg` without network access unless the user allowed downloads: what it wants from
    the Hugging Face Hub must be in the local cache, or one line says what and how to allow it."""
    repos = hub_models(cfg)
    if not repos:
        yield
        return
    if downloads_allowed():
        try:
            yield
        except OSError as err:  # the Hub's answers (a 404, no connection) are OSErrors
            raise UsageError(
                f"{where}: its text tower's Hugging Face model {repos[0]!r} could not be "
                f"loaded: {first_line(err)}"
            ) from None
        return
    missing = [r for r in repos if not _cached(r)]
    if missing:
        raise UsageError(
            f"{where}: its text tower wants the Hugging Face model {missing[0]!r}, which is not "
            f"in the local cache; loading a model downloads nothing unless you allow it: set "
            f"{ALLOW_DOWNLOADS}=1"
        )
    from huggingface_hub import constants

    # huggingface_hub (and transformers through it) refuses every request while this is set; it
    # reads the environment only at import, so the module's switch is what counts here.
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo, name), str)
        for name in ("config.json", "tokenizer_config.json")
    )
