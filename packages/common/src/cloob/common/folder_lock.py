"""One writer per folder: an OS lock on `FOLDER/.lock`, held for as long as the writer runs.

`fcntl.flock` belongs to the open file, so the kernel releases it when the holder exits however it
exits (an error, SIGKILL, an out-of-memory kill): a crashed job never leaves a folder locked. The
file also names its holder (host, pid, Slurm job, since when) for the message a second writer gets.
That text is written into the locked file in place, never by rename: the lock is on the file's
inode, and a renamed-in file would be a second, unlocked one.

A forked child shares the open file, so by default it holds the lock too, until it exits (a tool
whose children write into the folder wants that). `children_hold=False` closes the child's copy
right after the fork: then the lock ends with the process that took it, even while children it
forked (data-loader workers, which write nothing) take a few seconds to notice it is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from cloob.common.cli import UsageError

LOCK_FILE = ".lock"
# what flock answers on a filesystem that offers no locks (Lustre mounted without -o flock, ...)
NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}
_NOT_FOR_CHILDREN: set[int] = set()  # lock descriptors a forked child closes at once


def _close_in_child() -> None:
    # only close: a LOCK_UN here would release the parent's lock (the open file is shared)
    for fd in _NOT_FOR_CHILDREN:
        with contextlib.suppress(OSError):
            os.close(fd)
    _NOT_FOR_CHILDREN.clear()


os.register_at_fork(after_in_child=_close_in_child)


@contextlib.contextmanager
def held(
    folder: Path, user: str, hint: str = "", record: bool = True, children_hold: bool = True
) -> Iterator[bool]:
    """Hold `folder`/.lock (making `folder` if needed) inside the `with`; yields False where the
    filesystem has no locks (the caller may warn). With `record`, the lock file names this
    process (a tool whose no-op run must leave every file's mtime alone passes False);
    `children_hold`: see above. A folder another process holds is a UsageError naming `user`
    ("another dataprep process") and the holder, then `hint`; then nothing is changed, not even
    the lock file."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(fd, folder, user, hint)
        if locked and record:
            _write(fd, holder_record())
        if not children_hold:
            _NOT_FOR_CHILDREN.add(fd)
        yield locked
    finally:
        _NOT_FOR_CHILDREN.discard(fd)
        os.close(fd)


def _lock(fd: int, folder: Path, user: str, hint: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = describe(_read(fd))
        raise UsageError(
            f"{folder} is in use by {user}{f' ({holder})' if holder else ''}"
            + (f": {hint}" if hint else "")
        ) from None
    except OSError as err:
        if err.errno not in NO_LOCKS:
            raise
        return False
    return True


def holder_record() -> dict[str, str | int]:
    record: dict[str, str | int] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now().isoformat(timespec="seconds"),
    }
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return record


def describe(record: dict) -> str:
    """'host n1, pid 4242, Slurm job 17, since 2026-12-03T10:00:00' (what is known of it)."""
    parts = [
        f"{label} {record[key]}"
        for key, label in (
            ("host", "host"),
            ("pid", "pid"),
            ("slurm_job", "Slurm job"),
            ("since", "since"),
        )
        if key in record
    ]
    return ", ".join(parts)


def _read(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write(fd: int, record: dict) -> None:
    data = json.dumps(record).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
