"""Stopping on a signal without losing work: SIGUSR1 or SIGTERM → the ranks agree at the next step
boundary → rank 0 saves the exact-resume checkpoint → every rank exits with `EXIT_STOPPED`.

The signals are what a cluster sends before it takes the machine back: Slurm's `--signal=USR1@90`
and `scancel --signal=USR1`, SIGTERM at preemption and at the time limit (SIGKILL follows after
the cluster's grace time), torchrun forwarding SIGTERM to its workers. The handler only records
the signal; the training loop asks `agreed` after every optimizer step (and before the first step,
and after evaluations), one MAX all-reduce of a host scalar, so a signal that reaches one rank
first stops every rank at the same step, and none waits forever for the others in a collective.

Exit code 75 (EX_TEMPFAIL in sysexits.h: "try again later") means: stopped by a signal, checkpoint
saved, run the same command (with `--resume latest`) to continue. Under torchrun a worker's
non-zero exit fails its agent (which exits 1, or restarts the workers when --max-restarts allows,
and they resume from the checkpoint); Slurm records the code as the step's exit code (a site may
list it in slurm.conf's RequeueExit to requeue such jobs by itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from cloob.common.cli import UsageError

if TYPE_CHECKING:
    from cloob.trainer.distributed import DistInfo

log = logging.getLogger("cloob.trainer")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
EXIT_STOPPED = 75


class Stopped(Exception):
    """The run stopped at a step boundary on a signal, its checkpoint saved: run it again with
    `--resume latest` to continue. (The CLI turns it into exit code 75.)"""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")


class StopRequest:
    """The signal this process received (0: none). Set by the handler, read at step boundaries.

    Forked children (data-loader workers) inherit the handler with a copy of this object; the pid
    check keeps the signal's effect in the process that installed it."""

    def __init__(self) -> None:
        self.signum = 0
        self._pid = os.getpid()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() == self._pid:
            self.signum = signum


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """SIGUSR1 and SIGTERM recorded in the yielded StopRequest inside the `with`; the previous
    handlers are back after it. Off the main thread (where Python cannot install handlers) the
    request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request.handle) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():  # None: a handler set outside Python
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def agreed(request: StopRequest, info: DistInfo) -> int:
    """The stop signal any rank has received (0: none), the same answer on every rank. Every rank
    must call it at the same points: it is a collective."""
    if not info.enabled:
        return request.signum
    flag = torch.tensor([request.signum], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=info.host_group)
    return int(flag.item())


def worker_ignores_stop_signals(worker_id: int) -> None:
    """`worker_init_fn` of the data loaders. A cluster signals every process of the job, loader
    workers included; torch's workers die on a SIGTERM that does not come from their parent (and
    SIGUSR1's default action kills too), and a dead worker fails the main process wherever it
    stands. The main process alone decides when they end (it shuts them down in order)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def check_requeue() -> None:
    """--requeue needs a Slurm job and its `scontrol`; checked before any work."""
    if not os.environ.get("SLURM_JOB_ID"):
        raise UsageError(
            "--requeue needs a Slurm job: SLURM_JOB_ID is not set (submit the run with sbatch, "
            "or leave --requeue out and rerun the command yourself)"
        )
    if shutil.which("scontrol") is None:
        raise UsageError("--requeue: scontrol is not on PATH")


def requeue() -> None:
    """Put this Slurm job back in the queue (`scontrol requeue $SLURM_JOB_ID`); when the next
    start comes, the same batch script runs and resumes. Slurm then ends this job: call it last."""
    job = os.environ["SLURM_JOB_ID"]
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("scontrol requeue %s failed (%s): submit the job again to continue", job, err)
        return
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        reason = said[0][:200] if said else f"exit code {done.returncode}"
        log.error("scontrol requeue %s failed (%s): submit the job again to continue", job, reason)
        return
    log.warning("requeued Slurm job %s: it continues from the checkpoint when it starts", job)
