"""Any supported checkpoint → open_clip model + eval preprocess + tokenizer, architecture included.

Formats (all loaded with `torch.load(weights_only=True)`):
- this toolkit's trainer: `cloob.common.checkpoint` (format "cloob-toolkit/1": `state_dict`,
  `model_cfg`, `model_name`, `method`, ...);
- the CLOOB reference release: `module.` prefix, text tower nested under `transformer.`,
  `logit_inv_tau` for `logit_scale`, `model_config_file` naming the architecture;
- plain open_clip checkpoints (`{"state_dict": ...}` or a bare state dict, e.g. what OpenCLIP's
  trainer writes to `logs/<run>/checkpoints/`): the architecture is the `model:` (and `force_*`)
  lines of the run's `params.txt` (beside `checkpoints/`), or the user's `--model NAME`, or an
  `open_clip_config.json` beside the file. Tensor shapes cannot tell GELU from QuickGELU, so a
  checkpoint with none of these is refused rather than guessed.
- open_clip's hub layout, a folder with `open_clip_config.json` + `open_clip_model.safetensors`
  (what `trainer export` writes; our scalars under "cloob" in the config).
"""

from __future__ import annotations

import ast
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cloob.benchmarks.models.config_checks import check_sizes, offline_build, without_pretrained
from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError, first_line
from cloob.common.files import sha256_file
from cloob.common.precision import resolve
from cloob.common.torchload import safe_load


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str  # architecture name (open_clip config name, or the trainer's name for it)
    format: str  # "cloob-toolkit/1" | "cloob-reference" | "open_clip" | "open_clip-pretrained"
    method: str | None = (
        None  # clip | cloob | infoloob | hopfield_infonce | siglip, when the checkpoint says so
    )
    path: str | None = None
    sha256: str | None = None
    info: dict = field(default_factory=dict)  # epoch, step, inv_tau, ... when present

    @property
    def label(self) -> str:
        return Path(self.path).stem if self.path else self.name


def labels_for(models: list[LoadedModel]) -> list[str]:
    """Short unique labels: the file stem, with as many parent folders as it takes to tell
    checkpoints apart (`checkpoints/` folders say nothing: trainer runs are
    `<run>/checkpoints/`)."""

    def parts(m: LoadedModel) -> list[str]:
        if not m.path:
            return [m.label]
        p = Path(m.path)
        return [d for d in p.parent.parts if d not in ("checkpoints", "/")] + [p.stem]

    def least(m: LoadedModel) -> int:  # a trainer run's checkpoint is named with its run always:
        # separate evaluations of two runs' latest.pt must not both say "latest" (clip_benchmark's
        # `pretrained` column, report tables)
        return 2 if m.path and Path(m.path).parent.name == "checkpoints" else 1

    split, floors = [parts(m) for m in models], [least(m) for m in models]
    for depth in range(1, max(len(p) for p in split) + 1):
        labels = ["/".join(p[-max(depth, floor) :]) for p, floor in zip(split, floors, strict=True)]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label} #{i + 1}" for i, label in enumerate(labels)]


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
    model: str | None = None,
) -> LoadedModel:
    """Load a trainer, CLOOB-reference or plain open_clip checkpoint; see the module docstring.

    `model` (the user's `--model NAME`) names the open_clip architecture of a plain open_clip
    checkpoint; checkpoints that carry their own architecture ignore it.
    `precision` builds the weights as `cloob.common.precision` defines (fp16/pure_bf16 cast them).
    An s3:// checkpoint is downloaded to a temp file first (torch.load needs to seek)."""
    from cloob.common import storage

    if storage.is_remote(path):
        return _load_remote(str(path), device, precision, model)
    path = Path(path)
    return _load_local(
        path, device, precision, model, None if path.is_dir() else read_run_params(path)
    )


def _load_remote(
    url: str, device: str | torch.device, precision: str, model: str | None
) -> LoadedModel:
    """Download to a temp file and load that; errors name the URL, never the temp file."""
    from cloob.common import storage

    if not url.split("://", 1)[1].split("/", 1)[0]:
        raise UsageError(f"{url}: no bucket named (expected s3://BUCKET/KEY)")
    storage.check_access(url)
    remote = storage.location(url)
    with storage.translated(url):
        if not remote.is_file():  # the local case's words (torchload.safe_load), not botocore's
            raise FileNotFoundError(f"{url}: no such checkpoint")
        params = _read_params_text(_params_candidates(remote))
    with storage.local_copy(remote) as local:
        try:
            loaded = _load_local(local, device, precision, model, params)
        except (UsageError, FileNotFoundError) as err:
            raise type(err)(str(err).replace(str(local), url)) from None
    loaded.path = url
    return loaded


def _load_local(
    path: Path, device: str | torch.device, precision: str, model: str | None, params: dict | None
) -> LoadedModel:
    if path.is_dir():  # open_clip's hub layout (`trainer export`)
        sd, cfg, name, fmt, meta, weights = read_hub_dir(path)
    else:
        weights = path
        sd, cfg, name, fmt, meta = _interpret(safe_load(path), path, model, params)
    prec = resolve(precision, device)
    if fmt == OPEN_CLIP_RUN:
        built, preprocess, tokenizer = _build_open_clip_run(cfg, name)
        fmt = "open_clip"
    else:
        built, preprocess, tokenizer = _build(cfg, name, prec.open_clip, str(path)), None, None
    ignored = _load_weights(built, sd, path, name)
    if ignored:
        meta["ignored_keys"] = ignored
    loaded = _finish(prec.cast_model(built), name, fmt, device, preprocess, tokenizer)
    loaded.method, loaded.path, loaded.sha256, loaded.info = (
        meta.pop("method", None),
        str(path),
        sha256_file(weights),
        meta,
    )
    return loaded


HUB_CONFIG, HUB_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


def read_hub_dir(path: Path) -> tuple[dict, dict, str, str, dict, Path]:
    """open_clip's hub folder → (state dict, model config, name, format, metadata, weights file).
    safetensors holds tensors only: nothing in it can run code."""
    config_path, weights = path / HUB_CONFIG, path / HUB_WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise UsageError(
            f"{path}: a checkpoint folder needs {HUB_CONFIG} and {HUB_WEIGHTS} "
            f"(open_clip's hub layout, as `trainer export` writes)"
        )
    _inside(path, config_path, weights)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        cfg = config["model_cfg"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise UsageError(f"{config_path}: not an open_clip config ({first_line(err)})") from None
    if not isinstance(cfg, dict):
        raise UsageError(
            f"{config_path}: model_cfg must be the architecture's config (a JSON object), not "
            f"{json.dumps(cfg)[:80]} (open_clip's hub layout spells the config out)"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise UsageError(
            f"{weights}: not a readable safetensors file ({first_line(err)})"
        ) from None
    ours = config.get("cloob") if isinstance(config.get("cloob"), dict) else {}
    meta = {
        k: v
        for k, v in ours.items()
        if k in ("epoch", "step", "name", "inv_tau", "hopfield_beta", "logit_bias", "method")
    }
    return sd, cfg, ours.get("model_name") or path.name, "open_clip-hub", meta, weights


def _inside(folder: Path, *files: Path) -> None:
    """A model folder is read from inside itself: a link that leads out of it (to a file of the
    user's, or one another user planted) is refused."""
    root = folder.resolve()
    for file in files:
        if not file.resolve().is_relative_to(root):
            raise UsageError(f"{file}: a link out of the model folder (to {file.resolve()})")


def load_open_clip(
    model_name: str,
    pretrained: str | None,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
) -> LoadedModel:
    """`--model NAME --pretrained TAG_OR_PATH`: any open_clip model, weights by tag or file."""
    if pretrained is not None and Path(pretrained).is_file():
        _refuse_code(Path(pretrained))  # before seconds of importing open_clip and building
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            device=device,
            weights_only=True,
            precision=resolve(precision, device).open_clip,
        )
    except pickle.UnpicklingError as err:  # weights_only refused a pickle that would run code
        raise UsageError(
            f"{pretrained}: not a readable checkpoint: refusing to load objects other "
            f"than tensors and plain containers ({first_line(err)})"
        ) from None
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        raise UsageError(
            f"open_clip model {model_name!r} / {pretrained!r}: {first_line(err)}"
        ) from None
    path = pretrained if pretrained is not None and Path(pretrained).is_file() else None
    return LoadedModel(
        model.eval(),
        preprocess,
        open_clip.get_tokenizer(model_name),
        model_name,
        "open_clip-pretrained",
        path=path,
        sha256=sha256_file(path) if path is not None else None,
        info={"pretrained": pretrained},
    )


def _refuse_code(path: Path) -> None:
    """Refuse a torch.save file whose pickle names anything `weights_only` would not load."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        unsafe = get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError):  # not torch's zip format: open_clip decides
        return
    if unsafe:
        raise UsageError(
            f"{path}: not a readable checkpoint: refusing to load objects other than "
            f"tensors and plain containers, which could execute code "
            f"({', '.join(unsafe[:3])})"
        )


OPEN_CLIP_RUN = "open_clip-run"  # internal: built by open_clip's factory from a model name
PARAMS_FILE = "params.txt"  # what OpenCLIP's trainer writes in logs/<run>/, beside checkpoints/
# params.txt lines that change the architecture or the eval transform, as open_clip's factory names
# them
_FACTORY_PARAMS = (
    "force_quick_gelu",
    "force_custom_text",
    "force_image_size",
    "force_context_length",
    "image_mean",
    "image_std",
    "image_interpolation",
    "image_resize_mode",
)


def _interpret(
    ckpt: dict, path: Path, model: str | None = None, params: dict | None = None
) -> tuple[dict, dict, str, str, dict]:
    """→ (open_clip state dict, model config, architecture name, format, metadata).

    For an OpenCLIP run (format OPEN_CLIP_RUN) the "config" is open_clip factory keyword
    arguments."""
    meta = {
        k: ckpt[k]
        for k in ("epoch", "step", "name", "inv_tau", "hopfield_beta", "logit_bias", "method")
        if k in ckpt and isinstance(ckpt[k], int | float | str)
    }
    if ckpt_format.is_toolkit(ckpt):
        ckpt_format.check(ckpt, path, ckpt_format.ModelCheckpoint)
        sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
        return sd, dict(ckpt["model_cfg"]), ckpt["model_name"], ckpt_format.FORMAT, meta
    sd = ckpt.get("state_dict", ckpt)
    if (
        not isinstance(sd, dict)
        or not sd
        or not all(isinstance(v, torch.Tensor) for v in sd.values())
    ):
        raise UsageError(f"{path}: no state_dict of tensors found")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if "logit_inv_tau" in sd or any(k.startswith("transformer.transformer.") for k in sd):
        sd = reference_to_open_clip(sd)
        cfg, name = _reference_cfg(ckpt.get("model_config_file"), sd, path)
        meta.setdefault("method", "cloob")
        return sd, cfg, name, "cloob-reference", meta
    arch, factory, source = open_clip_architecture(path, model, params)
    if arch is not None:
        meta["architecture_from"] = source
        return sd, factory, arch, OPEN_CLIP_RUN, meta
    beside = path.parent / "open_clip_config.json"
    if beside.is_file():
        cfg = json.loads(beside.read_text(encoding="utf-8"))
        meta["architecture_from"] = beside.name
        return sd, cfg.get("model_cfg", cfg), "open_clip_config.json", "open_clip", meta
    raise UsageError(
        f"{path}: an open_clip checkpoint without its run's {PARAMS_FILE}, and its weights cannot "
        f"tell GELU from QuickGELU: add --model NAME (the open_clip model it was trained as, "
        f"e.g. RN50-quickgelu)"
    )


def open_clip_architecture(
    path: Path, model: str | None, params: dict | None
) -> tuple[str | None, dict, str]:
    """(open_clip model name, factory keyword arguments, where they came from) of a plain open_clip
    checkpoint: its run's params.txt, else `model`; (None, {}, "") when neither says."""
    import open_clip

    ran = params.get("model") if params else None
    if ran and model and ran != model:
        raise UsageError(
            f"{path}: its run's {PARAMS_FILE} says model {ran!r}, --model says {model!r}; "
            f"drop --model (or fix it)"
        )
    name = ran or model
    if not name:
        return None, {}, ""
    source = PARAMS_FILE if ran else "--model"
    if open_clip.get_model_config(name) is None:
        raise UsageError(
            f"{path}: open_clip has no model {name!r} (from {source}); see open_clip.list_models()"
        )
    factory = {
        k: params[k] for k in _FACTORY_PARAMS if params and params.get(k) not in (None, False, "")
    }
    if params and params.get("siglip"):  # OpenCLIP's trainer adds a logit bias for SigLIP
        factory["init_logit_bias"] = -10.0
    return name, factory, source


def read_run_params(path: Path) -> dict | None:
    """The `params.txt` OpenCLIP's trainer left for the run a checkpoint belongs to, parsed."""
    return _read_params_text(_params_candidates(path))


def _params_candidates(path) -> list:
    folder = path.parent  # Path or storage.RemotePath
    return (
        [folder.parent / PARAMS_FILE, folder / PARAMS_FILE]
        if folder.name == "checkpoints"
        else [folder / PARAMS_FILE]
    )


def _read_params_text(candidates: list) -> dict | None:
    for candidate in candidates:
        if candidate.is_file():
            return parse_params(candidate.read_text(encoding="utf-8"))
    return None


def parse_params(text: str) -> dict:
    """`name: value` lines (Python reprs: None, True, 0.5, [0.48, 0.45, 0.40], bare strings)."""
    out: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def reference_to_open_clip(sd: dict) -> dict:
    """CLOOB release keys → open_clip keys: un-nest the text tower, logit_inv_tau → logit_scale."""
    out = {}
    for key, value in sd.items():
        if key == "logit_scale_hopfield":  # the trained Hopfield β: a training-time scalar only
            continue
        if key == "logit_inv_tau":
            key = "logit_scale"
        elif key.startswith("transformer."):
            key = key.removeprefix("transformer.")
        out[key] = value
    return out


def _reference_cfg(config_file: object, sd: dict, path: Path) -> tuple[dict, str]:
    """The reference stores a path to its model JSON; use it if readable, else the same-named
    open_clip `-quickgelu` config, else read the architecture from the tensor shapes."""
    if isinstance(config_file, str) and config_file:
        for candidate in (Path(config_file), path.parent / Path(config_file).name):
            if candidate.is_file():
                return _from_json(json.loads(candidate.read_text(encoding="utf-8"))), candidate.stem
        import open_clip

        stem = Path(config_file).stem.replace("/", "-")
        builtin = open_clip.get_model_config(f"{stem}-quickgelu")
        if builtin is not None:
            return builtin, f"{stem}-quickgelu"
    return infer_cfg(sd, quick_gelu=True, path=path), "inferred-from-shapes"


def _from_json(cfg: dict) -> dict:
    """open_clip's config dict; the early OpenCLIP flat format (used by the reference) converted."""
    if "vision_cfg" in cfg:
        return cfg.get("model_cfg", cfg)
    vision = {
        "image_size": cfg["image_resolution"],
        "layers": cfg["vision_layers"],
        "width": cfg["vision_width"],
    }
    if cfg.get("vision_patch_size"):
        vision["patch_size"] = cfg["vision_patch_size"]
    text = {
        "context_length": cfg["context_length"],
        "vocab_size": cfg["vocab_size"],
        "width": cfg["transformer_width"],
        "heads": cfg["transformer_heads"],
        "layers": cfg["transformer_layers"],
    }
    return {
        "embed_dim": cfg["embed_dim"],
        "quick_gelu": True,
        "vision_cfg": vision,
        "text_cfg": text,
    }


def infer_cfg(sd: dict, quick_gelu: bool, path: Path | str = "checkpoint") -> dict:
    """An OpenAI-layout CLIP (ViT or ModifiedResNet) config from tensor shapes.

    Head counts are not stored in the weights; like OpenAI's loader we assume 64-wide heads."""
    need = ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise UsageError(
            f"{path}: cannot read the architecture from the weights (no {missing[0]}); "
            f"use --model NAME --pretrained {path}"
        )
    width = sd["ln_final.weight"].shape[0]
    text = {
        "context_length": sd["positional_embedding"].shape[0],
        "vocab_size": sd["token_embedding.weight"].shape[0],
        "width": width,
        "heads": max(1, width // 64),
        "layers": _count(sd, "transformer.resblocks."),
    }
    if "visual.proj" in sd:
        conv = sd["visual.conv1.weight"]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {
            "layers": _count(sd, "visual.transformer.resblocks."),
            "width": conv.shape[0],
            "patch_size": conv.shape[-1],
            "image_size": conv.shape[-1] * grid,
            "head_width": 64,
        }
    elif "visual.attnpool.positional_embedding" in sd:
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {
            "layers": [_count(sd, f"visual.layer{i}.") for i in range(1, 5)],
            "width": sd["visual.layer1.0.conv1.weight"].shape[0],
            "image_size": grid * 32,
        }
    else:
        raise UsageError(f"{path}: unknown image tower; use --model NAME --pretrained {path}")
    return {
        "embed_dim": sd["text_projection"].shape[1],
        "quick_gelu": quick_gelu,
        "vision_cfg": vision,
        "text_cfg": text,
    }


def _count(sd: dict, prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def _build(
    cfg: dict, name: str, precision: str = "fp32", where: str | None = None
) -> torch.nn.Module:
    """An fp32 model; for low-precision weights (open_clip's `precision`) with its fp32 norms.
    Sizes are checked and nothing is downloaded first (`config_checks`): the config is data."""
    import open_clip

    where = where or repr(name)
    check_sizes(cfg, where)
    cfg = without_pretrained(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in (cfg.get("text_cfg") or {})
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    try:
        with offline_build(cfg, where):
            return cls(**cfg, cast_dtype=open_clip.get_cast_dtype(precision))
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError, OSError) as err:
        # RuntimeError: timm's "Unknown model"; OSError: the Hub's answers (a 404 included)
        raise UsageError(
            f"{where}: model config for {name!r} is not an open_clip CLIP config: {first_line(err)}"
        ) from None


def _build_open_clip_run(factory: dict, name: str):
    """The model, eval transform and tokenizer exactly as open_clip's factory builds `name` with the
    run's `force_*` / `image_*` arguments (what OpenCLIP's trainer trained and clip_benchmark
    evaluates)."""
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, **factory
        )
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise UsageError(f"open_clip model {name!r} ({factory}): {first_line(err)}") from None
    context = factory.get("force_context_length")
    tokenizer = open_clip.get_tokenizer(name, **({"context_length": context} if context else {}))
    return model, preprocess, tokenizer


def _load_weights(model: torch.nn.Module, sd: dict, path: Path, name: str) -> list[str]:
    """Strict load; only extra scalars (training-time temperatures such as a Hopfield β, which
    evaluation does not use) are set aside and reported. Returns their names."""
    expected = model.state_dict()
    ignored = sorted(k for k, v in sd.items() if k not in expected and v.numel() <= 1)
    for key in ignored:
        sd.pop(key)
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise UsageError(
            f"{path}: weights do not fit the {name} architecture: {_mismatch(err)}"
        ) from None
    return ignored


def _mismatch(err: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[1] if len(lines) > 1 else lines[0]


def _finish(
    model: torch.nn.Module,
    name: str,
    fmt: str,
    device: str | torch.device,
    preprocess: object | None = None,
    tokenizer: object | None = None,
) -> LoadedModel:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if preprocess is not None:  # open_clip's factory made them
        return LoadedModel(model.to(device).eval(), preprocess, tokenizer, name, fmt)
    pp = asdict(PreprocessCfg())
    visual = model.visual
    assert isinstance(visual, torch.nn.Module)  # torch types any attribute as Tensor | Module
    pp["size"] = visual.image_size
    open_clip.set_model_preprocess_cfg(model, pp)
    tokenize_cfg = open_clip.get_model_tokenize_cfg(model)
    tokenizer = open_clip.SimpleTokenizer(context_length=tokenize_cfg.get("context_length", 77))
    return LoadedModel(
        model.to(device).eval(),
        image_transform_v2(PreprocessCfg(**pp), is_train=False),
        tokenizer,
        name,
        fmt,
    )
