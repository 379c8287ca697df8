"""`trainer export CKPT --out DIR`: a checkpoint as open_clip's hub layout, loadable without us.

DIR gets `open_clip_config.json` ({"model_cfg", "preprocess_cfg"} as open_clip's hub reader
expects, plus our scalars under "cloob"), `open_clip_model.safetensors` (the open_clip state dict,
no pickle; the same scalars as safetensors metadata) and a `README.md` model card. Then
`open_clip.create_model_and_transforms("local-dir:DIR")` builds and loads it in an interpreter that
has never heard of this toolkit, and `benchmarks zeroshot --ckpt DIR` reads it too.

What open_clip has no slot for is kept beside the weights, not in them: CLOOB's Hopfield β (a
training-time temperature) and the method. siglip's bias b does have a slot (`logit_bias`, built
when `model_cfg` has `init_logit_bias`), so it goes into the weights, as OpenCLIP's SigLIP models
do.

Written into a temp folder next to DIR and renamed at the end: a failure leaves nothing behind.
DIR may be an s3://bucket/prefix (the storage layer `--remote-sync` uses): the files are built
locally, then uploaded one whole object each, the config last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloob.common import checkpoint as ckpt_format
from cloob.common import storage
from cloob.common.cli import UsageError
from cloob.common.files import sha256_file
from cloob.common.torchload import safe_load
from cloob.trainer.methods import DESCRIPTIONS

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
CARD_NAME = "README.md"
SCALARS = ("method", "name", "step", "epoch", "inv_tau", "hopfield_beta", "logit_bias")


def export(ckpt_path: str | Path, out: str | Path) -> str | Path:
    """Write the hub layout of `ckpt_path` (a trainer checkpoint, local or s3://) to `out` (a
    local folder, or an s3://bucket/prefix through `cloob.common.storage`); returns `out`."""
    source, target = storage.location(str(ckpt_path)), storage.location(str(out))
    if isinstance(target, storage.RemotePath):
        storage.check_access(target)  # a missing bucket or refused key: one line, before any work
        _check_remote_target(target)
    else:
        _check_target(target)
    with _local_checkpoint(source) as local:
        ckpt = ckpt_format.check(safe_load(local), local)  # not ours → one UsageError
        state, model_cfg, scalars = _hub_parts(ckpt)
        zeroshot = {} if isinstance(source, storage.RemotePath) else _zeroshot_results(local)
        source_sha256 = sha256_file(local)
    if isinstance(target, storage.RemotePath):
        with tempfile.TemporaryDirectory(prefix="cloob-export-") as built:
            _write_folder(Path(built), ckpt, state, model_cfg, scalars, zeroshot, source_sha256)
            _upload(Path(built), target)
        return target.url
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_folder(tmp, ckpt, state, model_cfg, scalars, zeroshot, source_sha256)
        _shareable(tmp)
        if target.is_dir():
            target.rmdir()  # empty (checked above): the rename needs the name free
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def _local_checkpoint(source: Path | storage.RemotePath) -> Iterator[Path]:
    """The checkpoint as a local file (an s3:// one downloaded to a temp file); errors name what
    the user gave, never the temp file."""
    if not isinstance(source, storage.RemotePath):
        yield source
        return
    storage.check_access(source)
    with storage.translated(source.url):
        if not source.is_file():
            raise UsageError(f"{source}: no such checkpoint")
    with storage.local_copy(source) as local:
        try:
            yield local
        except UsageError as err:
            raise UsageError(str(err).replace(str(local), source.url)) from None


def _write_folder(
    folder: Path,
    ckpt: dict[str, Any],
    state: dict[str, Any],
    model_cfg: dict[str, Any],
    scalars: dict[str, Any],
    zeroshot: dict[str, float],
    source_sha256: str,
) -> None:
    _write_weights(folder / WEIGHTS_NAME, state, scalars)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess_cfg(model_cfg),
        "cloob": {
            **scalars,
            "model_name": ckpt["model_name"],
            "source_sha256": source_sha256,
            "format": ckpt_format.FORMAT,
        },
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / CARD_NAME).write_text(model_card(ckpt, scalars, zeroshot), encoding="utf-8")


def _upload(folder: Path, target: storage.RemotePath) -> None:
    """Each object appears whole when its upload completes; the config, which is what makes the
    prefix a loadable model, goes last, so a kill part-way leaves a prefix that no reader takes
    for a model. An upload that fails removes what it put."""
    try:
        for name in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME):
            storage.put_file(folder / name, target / name)
    except BaseException:
        for name in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME):
            with contextlib.suppress(Exception):
                (target / name).unlink(missing_ok=True)
        raise


def _check_remote_target(out: storage.RemotePath) -> None:
    if any(True for _ in out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty: choose a new prefix")


def _shareable(folder: Path) -> None:
    """mkdtemp makes the folder private (0700) and safetensors its file 0600: give both the
    permissions a plain mkdir / open would (the umask's), since the folder is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty: choose a new folder")
    # The folder is built beside `out` and renamed: say so when that is not allowed, rather than
    # quote the temp folder's name from a PermissionError.
    parent = next(p for p in (out.parent.absolute(), *out.parent.absolute().parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")


def _hub_parts(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(open_clip state dict, model_cfg, our scalars). siglip's b becomes the model's logit_bias."""
    import torch

    state = {
        k.removeprefix("module."): v.detach().cpu().contiguous()
        for k, v in ckpt["state_dict"].items()
    }
    model_cfg = dict(ckpt["model_cfg"])
    scalars = {k: ckpt[k] for k in SCALARS if isinstance(ckpt.get(k), int | float | str)}
    bias = _bias(ckpt)
    if bias is not None:
        scalars["logit_bias"] = float(bias)
        model_cfg["init_logit_bias"] = float(bias)
        state["logit_bias"] = bias.reshape(state["logit_scale"].shape).to(state["logit_scale"])
    beta = ckpt.get("loss_state", {}).get("logit_beta")
    if isinstance(beta, torch.Tensor) and "hopfield_beta" in scalars:
        scalars["hopfield_beta"] = math.exp(float(beta))  # exact ln β, not the rounded readout
    return state, model_cfg, scalars


def _bias(ckpt: dict[str, Any]):
    """siglip's bias as a tensor (exact, from the loss state), or None for the other methods."""
    import torch

    exact = ckpt.get("loss_state", {}).get("logit_bias")
    if isinstance(exact, torch.Tensor):
        return exact.detach().float().cpu()
    if isinstance(ckpt.get("logit_bias"), int | float):
        return torch.tensor(float(ckpt["logit_bias"]))
    return None


def _write_weights(path: Path, state: dict[str, Any], scalars: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    # safetensors refuses tensors that share memory (tied weights): give each its own storage
    seen: set[int] = set()
    owned = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr()
        owned[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    save_file(owned, str(path), metadata={k: str(v) for k, v in scalars.items()})


def preprocess_cfg(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What our evaluation uses (open_clip's defaults: OpenAI mean/std, bicubic, shortest side)."""
    import open_clip

    return {
        "size": model_cfg["vision_cfg"]["image_size"],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }


def _zeroshot_results(ckpt_path: Path) -> dict[str, float]:
    """The last zero-shot numbers of the run the checkpoint came from (its metrics.jsonl), if
    any."""
    metrics = ckpt_path.resolve().parent.parent / "metrics.jsonl"
    found: dict[str, float] = {}
    if not metrics.is_file():
        return found
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the others still count
        found.update(
            {
                k: v
                for k, v in record.items()
                if k.startswith("zeroshot")
                and not k.endswith("n_classes")
                and isinstance(v, int | float)
            }
        )
    return found


def model_card(ckpt: dict[str, Any], scalars: dict[str, Any], zeroshot: dict[str, float]) -> str:
    method = scalars.get("method", "unknown")
    config = ckpt.get("config") or {}
    data = (config.get("data") or {}).get("train_data") or "not recorded"
    lines = [
        "---",
        "library_name: open_clip",
        "tags:",
        "- clip",
        f"- {method}",
        "---",
        "",
        f"# {scalars.get('name') or ckpt['model_name']}",
        "",
        f"A {ckpt['model_name']} image–text model trained with the CLOOB toolkit's "
        f"`--method {method}` ({DESCRIPTIONS.get(method, 'not a known method')}).",
        "",
        "| | |",
        "|---|---|",
        f"| method | {method} |",
        f"| architecture | {ckpt['model_name']} |",
        f"| training data | `{data}` |",
        f"| steps | {scalars.get('step', 'not recorded')} |",
        f"| epochs completed | {scalars.get('epoch', 'not recorded')} |",
    ]
    if "inv_tau" in scalars:
        lines.append(f"| τ⁻¹ (exp logit_scale) | {scalars['inv_tau']:.6g} |")
    if "hopfield_beta" in scalars and method in ("cloob", "hopfield_infonce"):
        lines.append(f"| Hopfield β | {scalars['hopfield_beta']:.6g} |")
    if "logit_bias" in scalars:
        lines.append(f"| sigmoid bias b (logit_bias) | {scalars['logit_bias']:.6g} |")
    lines += ["", "## Zero-shot results", ""]
    if zeroshot:
        lines += ["| task | value |", "|---|---:|"]
        lines += [
            f"| {k.removeprefix('zeroshot/')} | {v:.4g} |" for k, v in sorted(zeroshot.items())
        ]
    else:
        lines.append(
            "None recorded with this checkpoint (evaluate with `benchmarks zeroshot --ckpt DIR`)."
        )
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "import open_clip",
        "",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:THIS_FOLDER")',
        'tokenizer = open_clip.get_tokenizer("local-dir:THIS_FOLDER")',
        "```",
        "",
        'The toolkit\'s own scalars (method, β, step, …) are under `"cloob"` in '
        f"`{CONFIG_NAME}` and in the safetensors metadata.",
        "",
    ]
    return "\n".join(lines)
