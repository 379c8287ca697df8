"""The trainer's side of checkpointing: RNG states in and out, latest.pt, pruning, --resume.

The file format itself (marker, payload, atomic writer, validating reader) lives in
`cloob.common.checkpoint`, shared with benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.common import storage
from cloob.common.checkpoint import RngState, TrainerCheckpoint
from cloob.common.cli import UsageError
from cloob.common.files import atomic_path

_NUMBERED = re.compile(r"^(epoch|step)_(\d+)\.pt$")


def rng_state() -> RngState:
    """Every RNG we touch, as tensors/ints/lists (numpy's state array becomes a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    return cast(RngState, state)  # RngState names torch tensors without importing torch


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
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


def load_resume(
    spec: str, checkpoint_dir: Path, remote: str | None = None
) -> TrainerCheckpoint | None:
    """The checkpoint to resume from, read and checked; None for `latest` when there is none yet
    (a first start: one command line serves the first run and every restart). `latest` falls back
    to the committed remote copy (--remote-sync) when this machine has none (a new node, a lost
    disk); a remote checkpoint is downloaded under a temporary name and checked before it takes
    its place, so a broken object never becomes the local copy that a later resume would pick
    over a repaired bucket."""
    if spec == "latest":
        latest = checkpoint_dir / "latest.pt"
        if latest.is_file():
            return ckpt_format.read(latest)
        committed = remote_latest(remote) if remote else None
        return None if committed is None else download_checked(committed, latest)
    if storage.is_remote(spec):
        storage.check_access(spec)
        obj = _object(spec)
        if not obj.is_file():
            raise UsageError(f"{spec}: no such checkpoint")
        return download_checked(obj, checkpoint_dir / f"resume-{obj.name}")
    return ckpt_format.read(spec)


def download_checked(obj: storage.RemotePath, local: Path) -> TrainerCheckpoint:
    """Copy `obj` to `local` only once it reads as a complete checkpoint; else one error line
    that names the object, and nothing left behind (not even the folders made for it)."""
    new_dirs = [p for p in (local.parent, *local.parent.parents) if not p.exists()]
    try:
        with atomic_path(local) as tmp:
            obj.download(tmp)
            try:
                ckpt = ckpt_format.read(tmp)
            except UsageError as err:  # report the object, not the temporary file
                raise UsageError(str(err).replace(str(tmp), str(obj))) from None
    except BaseException:
        for d in new_dirs:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return ckpt


# --- --remote-sync: checkpoints in an object store ---------------------------------------------
# Each checkpoint is one object, whole or absent (an upload completes or leaves nothing); then
# latest.json, the commit marker, is rewritten to name it. A kill between the two leaves the
# marker on the previous checkpoint, so a reader never follows it to a partial upload.
# The marker also lists the checkpoints this run committed, oldest first (`history`): --keep-last
# prunes from that list only after the marker has moved on, so it never deletes the checkpoint the
# marker names, nor an object this run did not write. (A kill between the marker and the deletes
# leaves those few objects behind, unlisted: a leak, never a loss.)
COMMIT = "latest.json"


def upload(path: Path, remote: str, step: int, keep_last: int = 0) -> None:
    """Upload `path`, commit it in latest.json, then prune committed numbered checkpoints beyond
    the `keep_last` newest (0 keeps all), as `prune` does locally."""
    target = _object(remote)
    storage.put_file(path, target / path.name)
    history = [n for n in _committed_history(target / COMMIT) if n != path.name] + [path.name]
    numbered = [n for n in history if _NUMBERED.match(n)]
    stale = set(numbered[:-keep_last]) if keep_last > 0 else set()
    storage.write_json(
        target / COMMIT,
        {"checkpoint": path.name, "step": step, "history": [n for n in history if n not in stale]},
    )
    for name in sorted(stale):
        (target / name).unlink(missing_ok=True)


def _object(url: str) -> storage.RemotePath:
    """`url` in the object store (callers pass only URLs that `storage.is_remote` accepted)."""
    obj = storage.location(url)
    if not isinstance(obj, storage.RemotePath):
        raise UsageError(f"{url}: not an object-store URL (s3://bucket/prefix)")
    return obj


def _committed_history(marker: storage.RemotePath) -> list[str]:
    """The names a latest.json committed so far (a marker from before `history`: the one it
    names); nothing when there is no readable marker."""
    try:
        entry = json.loads(marker.read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return []
    if not isinstance(entry, dict):
        return []
    history = entry.get("history")
    if isinstance(history, list) and all(isinstance(n, str) and "/" not in n for n in history):
        return history
    name = entry.get("checkpoint")
    return [name] if isinstance(name, str) and name and "/" not in name else []


def remote_latest(remote: str) -> storage.RemotePath | None:
    """The checkpoint `remote`'s commit marker names; None when nothing is committed yet."""
    storage.check_access(remote)
    marker = _object(remote) / COMMIT
    if not marker.exists():
        return None
    name = committed_name(marker)
    target = _object(remote) / name
    if not target.is_file():
        raise UsageError(f"{marker} names {name}, which is not in {remote}")
    return target


def committed_name(marker: storage.RemotePath) -> str:
    """The `checkpoint` field of a latest.json, or one error line saying what is wrong with it."""
    try:
        entry = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{marker} is not valid JSON ({err})") from None
    name = entry.get("checkpoint") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name or "/" in name:
        raise UsageError(
            f"{marker} names no checkpoint (its 'checkpoint' field should be a file "
            "name like epoch_3.pt)"
        )
    return name


def prune(checkpoint_dir: Path, keep_last: int) -> None:
    """Keep the `keep_last` newest numbered checkpoints (epoch_N.pt / step_N.pt); latest.pt
    stays."""
    if keep_last <= 0:
        return
    numbered = [p for p in checkpoint_dir.glob("*.pt") if _NUMBERED.match(p.name)]
    numbered.sort(key=lambda p: p.stat().st_mtime_ns)
    for old in numbered[:-keep_last]:
        old.unlink(missing_ok=True)
