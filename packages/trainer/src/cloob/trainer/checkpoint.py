"""Checkpoints: self-describing, atomic on disk, and loadable with `torch.load(weights_only=True)`.

Layout (format "cloob-toolkit/1"): `state_dict` in open_clip's key layout (no `module.` prefix,
`logit_scale` = ln τ⁻¹) so `open_clip.create_model(name, pretrained=path)` loads it, plus the
model config, the method, τ⁻¹, β and everything a resume needs (optimizer, scheduler, scaler,
step, epoch, RNG states, data position, resolved config). Only plain containers and tensors go in.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloob.common import storage
from cloob.common.cli import UsageError
from cloob.common.files import atomic_path
from cloob.common.torchload import safe_load

FORMAT = "cloob-toolkit/1"
_NUMBERED = re.compile(r"^(epoch|step)_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Every RNG we touch, as tensors/ints/lists (numpy's state array becomes a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically (temp file, fsync, rename): a kill leaves the old file or the new one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def link_latest(path: Path, latest: Path) -> None:
    """Point `latest` at the file just written: a hard link renamed into place (atomic, no second
    copy of a large file); a plain atomic copy where the filesystem has no hard links."""
    tmp = latest.with_name(f".{latest.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        with atomic_path(latest) as target:
            shutil.copyfile(path, target)
        return
    os.replace(tmp, latest)


def load(path: str | Path) -> dict[str, Any]:
    """Load with weights_only=True; a pickle that wants to run code is refused with one line, and
    so is a file with the format marker but not the fields a resume reads."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not a {FORMAT} checkpoint")
    problem = _missing_field(ckpt)
    if problem:
        raise UsageError(f"{path} is not a complete {FORMAT} checkpoint: {problem}")
    return ckpt


# What a resume reads, and the type each must have (nested dicts are checked field by field).
_FIELDS: dict[str, Any] = {
    "model_name": str, "model_cfg": dict, "method": str, "step": int,
    "state_dict": "tensors", "loss_state": "tensors",
    "optimizer": {"state": dict, "param_groups": list},
    "data": {"ranks": list, "global_batch": int, "n_workers": int},
    "rng": {"torch": torch.Tensor, "numpy": dict, "python": dict},
}
_POSITION = ("epoch", "batch", "worker_pos", "next_worker", "skipped")


def _missing_field(ckpt: dict[str, Any], spec: dict[str, Any] = _FIELDS, where: str = "") -> str | None:
    for key, kind in spec.items():
        name = f"{where}{key}"
        if key not in ckpt:
            return f"no {name!r}"
        value = ckpt[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                return f"{name!r} is a {type(value).__name__}, not a dict"
            problem = _missing_field(value, kind, f"{name}.")
        elif kind == "tensors":
            ok = isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())
            problem = None if ok else f"{name!r} is not a mapping of names to tensors"
        else:
            problem = None if isinstance(value, kind) else \
                f"{name!r} is a {type(value).__name__}, not a {kind.__name__}"
        if problem:
            return problem
    ranks = ckpt.get("data", {}).get("ranks") if not where else None
    if ranks is not None and not all(isinstance(r, dict) and all(k in r for k in _POSITION)
                                     for r in ranks):
        return "'data.ranks' does not hold data positions"
    return None


def find_resume(spec: str, checkpoint_dir: Path, remote: str | None = None) -> Path:
    """The checkpoint to resume from; `latest` falls back to the remote copy (--remote-sync) when
    this machine has none (a new node, a lost disk), downloaded as the local latest.pt."""
    if spec == "latest":
        latest = checkpoint_dir / "latest.pt"
        if not latest.is_file() and remote:
            fetch_remote_latest(remote, latest)
        if not latest.is_file():
            raise UsageError(f"--resume latest: no {latest} yet"
                             + (f" (nor a committed one in {remote})" if remote else ""))
        return latest
    if storage.is_remote(spec):
        local = checkpoint_dir / f"resume-{Path(spec).name}"
        storage.check_access(spec)
        storage.location(spec).download(local)
        return local
    return Path(spec)


# --- --remote-sync: checkpoints in an object store ---------------------------------------------
# Each checkpoint is one object, whole or absent (an upload completes or leaves nothing); then
# latest.json, the commit marker, is rewritten to name it. A kill between the two leaves the
# marker on the previous checkpoint, so a reader never follows it to a partial upload.
COMMIT = "latest.json"


def upload(path: Path, remote: str, step: int) -> None:
    target = storage.location(remote)
    storage.put_file(path, target / path.name)
    storage.write_json(target / COMMIT, {"checkpoint": path.name, "step": step})


def fetch_remote_latest(remote: str, latest: Path) -> bool:
    """Download the committed checkpoint of `remote` to `latest`; False when none is committed."""
    storage.check_access(remote)
    marker = storage.location(remote) / COMMIT
    if not marker.exists():
        return False
    name = json.loads(marker.read_text())["checkpoint"]
    (storage.location(remote) / name).download(latest)
    return True


def prune(checkpoint_dir: Path, keep_last: int) -> None:
    """Keep the `keep_last` newest numbered checkpoints (epoch_N.pt / step_N.pt); latest.pt stays."""
    if keep_last <= 0:
        return
    numbered = [p for p in checkpoint_dir.glob("*.pt") if _NUMBERED.match(p.name)]
    numbered.sort(key=lambda p: p.stat().st_mtime_ns)
    for old in numbered[:-keep_last]:
        old.unlink(missing_ok=True)
