"""One writer per folder: a second one is refused in one line that names the holder, and a holder
that dies (SIGKILL, no cleanup) frees the folder at once; with `children_hold=False` even while a
child it forked lives on."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloob.common import folder_lock
from cloob.common.cli import UsageError

# a holder in its own process: takes the lock, forks a child that sleeps, says both pids once the
# child runs (its at-fork hooks have run by then), waits
HOLDER = """
import os, sys, time
from pathlib import Path
from cloob.common import folder_lock
with folder_lock.held(Path(sys.argv[1]), "x", children_hold=sys.argv[2] == "1"):
    running, says = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(says, b"1")
        time.sleep(120)
        os._exit(0)
    os.read(running, 1)
    print(os.getpid(), child, flush=True)
    time.sleep(120)
"""


def start_holder(folder: Path, children_hold: bool) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), "1" if children_hold else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    _, child = map(int, proc.stdout.readline().split())
    return proc, child


def try_lock(folder: Path) -> None:
    with folder_lock.held(folder, "another training", "choose another --name") as locked:
        assert locked


def test_a_second_writer_is_refused_with_the_holder_named_and_nothing_changed(tmp_path):
    with folder_lock.held(tmp_path / "run", "another training"):
        before = (tmp_path / "run" / ".lock").read_bytes()
        with pytest.raises(UsageError) as refused:
            try_lock(tmp_path / "run")
        assert (tmp_path / "run" / ".lock").read_bytes() == before
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'run'} is in use by another training (host ")
    assert f"pid {os.getpid()}" in message and message.endswith(": choose another --name")
    try_lock(tmp_path / "run")  # released with the `with`


@pytest.mark.parametrize("children_hold", [False, True])
def test_a_killed_holder_frees_the_folder_unless_its_children_hold_it(tmp_path, children_hold):
    holder, child = start_holder(tmp_path / "run", children_hold)
    try:
        with pytest.raises(UsageError, match=f"pid {holder.pid}"):
            try_lock(tmp_path / "run")
        holder.kill()  # SIGKILL: no cleanup runs; its forked child lives on
        holder.wait()
        if children_hold:  # the child's copy of the open file keeps the lock (dataprep's case)
            with pytest.raises(UsageError, match="in use"):
                try_lock(tmp_path / "run")
        else:  # the trainer's case: loader workers must not keep a dead run's folder
            try_lock(tmp_path / "run")
    finally:
        os.kill(child, signal.SIGKILL)
    free_soon(tmp_path / "run")  # gone with the last process that held it


def free_soon(folder: Path, within: float = 30) -> None:
    """A killed process's files close when the kernel has finished it: soon, not at once."""
    deadline = time.monotonic() + within
    while True:
        try:
            return try_lock(folder)
        except UsageError:
            assert time.monotonic() < deadline, "the lock outlived its last holder"
            time.sleep(0.05)


def test_a_filesystem_without_locks_is_said_not_fatal(tmp_path, monkeypatch):
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_lock.fcntl, "flock", no_locks)
    with folder_lock.held(tmp_path / "run", "another training") as locked:
        assert locked is False
