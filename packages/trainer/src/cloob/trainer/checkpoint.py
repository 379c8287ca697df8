"""The trainer's side of checkpointing: RNG states in and out, latest.pt, pruning, --resume.

The file format itself (marker, payload, atomic writer, validating reader) lives in
`cloob.common.checkpoint`, shared with benchmarks.
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
