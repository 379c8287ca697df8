"""A real one-node Slurm cluster on loopback for tests: `munged`, `slurmctld` and `slurmd` started
from Debian's packages (`slurmctld slurmd munge slurm-client`), each with its own key, socket,
ports, state, spool and log folders in a temporary folder, and stopped at the end.

The node is this machine under its own host name (it must resolve: srun's tasks find rank 0 by
it), 2 CPUs, one partition. No accounting, no cgroups (`proctrack/linuxproc`, `task/none`), so
it runs in a container as root. Jobs run as root with the test's environment (sbatch's
`--export=ALL`), so they find the test's interpreter. Without the binaries, as another user, or
when a daemon does not come up, `start` skips the test with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.clusters import free_port

SBIN = os.pathsep.join(["/usr/sbin", "/sbin", os.environ.get("PATH", "")])
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scancel", "scontrol", "sinfo", "squeue")
HOLD = 3.0  # seconds a requeued job waits before its hold is lifted (see Slurm.wait)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}

CONF = """\
ClusterName=cloobtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """A running cluster: `env` reaches it (SLURM_CONF, no SLURM_* of an enclosing job)."""

    root: Path
    node: str
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def sbatch(self, script: Path, *options: str, cwd: Path | None = None) -> int:
        """Submit `script` (options before it override its #SBATCH lines); the job id."""
        cmd = ["sbatch", "--parsable", *options, str(script)]
        done = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=60, cwd=cwd
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip().split(";")[0])

    def job(self, job: int) -> dict[str, str]:
        """`scontrol show job` as a mapping (JobState, ExitCode, Restarts, ...)."""
        done = self.run("scontrol", "show", "job", "-o", str(job))
        assert done.returncode == 0, done.stderr
        return dict(re.findall(r"(\w+)=(\S*)", done.stdout))

    def wait(self, job: int, timeout: float = 300, restarts: int = 0) -> dict[str, str]:
        """The job's record once it has ended after `restarts` requeues. Slurm holds a requeued
        job for about two minutes (Reason=BeginTime); the hold is lifted here (`scontrol update
        StartTime=now`), so a test does not sit through it, but only HOLD seconds after the
        requeue: slurmd revokes the old start's credential with one-second resolution, and a
        start in that same second is killed at once ("Job credential revoked") and fails."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []  # the states passed through, for the message
        held_since: float | None = None
        while time.monotonic() < deadline:
            info = self.job(job)
            state = f"{info['JobState']}(restarts={info.get('Restarts', '0')})"
            if not seen or seen[-1] != state:
                seen.append(state)
            if info["JobState"] in ENDED and int(info.get("Restarts", "0")) >= restarts:
                return info
            if info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime":
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since >= HOLD:
                    self.run("scontrol", "update", f"JobId={job}", "StartTime=now")
            else:
                held_since = None
            time.sleep(0.5)
        self.run("scancel", str(job))
        raise AssertionError(f"job {job} did not end in {timeout} s: {' -> '.join(seen)}")

    def stop(self) -> None:
        """Cancel what is left, then end the daemons (newest first)."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--signal=KILL", "--user=root", timeout=20)
            deadline = time.monotonic() + 40
            while self.run("squeue", "-h").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b, path=SBIN) is None]
    if absent:
        return (
            f"Slurm is not installed ({', '.join(absent)} not found): apt-get install "
            "slurmctld slurmd munge slurm-client"
        )
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs (this test run is not root)"
    try:
        socket.gethostbyname(socket.gethostname())
    except OSError:
        return f"this machine's host name {socket.gethostname()!r} does not resolve"
    return None


@contextlib.contextmanager
def cluster(root: Path) -> Iterator[Slurm]:
    """Start the three daemons under `root`, yield once `sinfo` shows the node idle, stop them."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    node = socket.gethostname()
    for sub in ("etc", "state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "etc" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "etc" / "slurm.conf"
    ports = {"ctld_port": free_port(), "slurmd_port": free_port()}
    conf.write_text(CONF.format(node=node, root=root, **ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env |= {"SLURM_CONF": str(conf), "PATH": SBIN}
    slurm = Slurm(root, node, env)
    try:
        _start(slurm, key)
        yield slurm
    finally:
        slurm.stop()


def _start(slurm: Slurm, key: Path) -> None:
    run = slurm.root / "run"
    munged = [
        "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={run}/munge.sock",
        f"--pid-file={run}/munged.pid", f"--seed-file={run}/munge.seed",
        f"--log-file={slurm.root}/log/munged.log",
    ]  # fmt: skip
    for cmd in (munged, ["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", slurm.node]):
        log = open(slurm.root / "log" / f"{cmd[0]}.out", "wb")  # noqa: SIM115  the daemon's
        slurm.procs.append(
            subprocess.Popen(cmd, env=slurm.env, stdout=log, stderr=subprocess.STDOUT)
        )
        if cmd[0] == "munged":
            _until(lambda: (run / "munge.sock").exists(), slurm, "munged made no socket")
    _until(lambda: _node_state(slurm) == "idle", slurm, "the node did not become idle")


def _node_state(slurm: Slurm) -> str:
    done = slurm.run("sinfo", "-h", "-n", slurm.node, "-o", "%T", timeout=10)
    return done.stdout.strip() if done.returncode == 0 else ""


def _until(ready, slurm: Slurm, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if any(p.poll() is not None for p in slurm.procs):  # a daemon died: its log says why
            break
        time.sleep(0.3)
    logs = "; ".join(
        f"{p.name}: {p.read_text(errors='replace').strip()[-300:]}"
        for p in sorted((slurm.root / "log").iterdir())
    )
    slurm.stop()
    pytest.skip(f"Slurm could not start here ({what}; {logs})")
