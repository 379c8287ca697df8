"""Run a toolkit CLI's `main()` in-process, as a user's shell would (argv in, exit code out)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_main(main: Callable[[], None], prog: str, *args: object) -> int:
    """The exit code of `prog args…` (0 when main returns normally)."""
    argv = sys.argv
    sys.argv = [prog, *map(str, args)]
    try:
        main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return 0


def kill_dataprep_when(args: list[object], ready: Callable[[], bool], *, timeout: float) -> None:
    """Start `dataprep ARGS` in its own session, wait until `ready()`, then SIGKILL the whole group
    (the CLI, img2dataset and its workers), as a crash or an OOM kill would."""
    import os
    import signal
    import subprocess
    import time

    cmd = [sys.executable, "-c", "from cloob.dataprep.cli import main; main()", *map(str, args)]
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the fetch finished before it could be killed"
            assert time.monotonic() < deadline, f"not ready within {timeout} s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
