"""Several nodes on one machine: torchrun agents that meet at a c10d rendezvous on 127.0.0.1, as
the agents of a multi-node job meet on its first node. Two agents (`--nnodes 2`, one process
each) train the job one agent trains with `--nproc-per-node 2`, to the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from support.clusters import free_port
from support.preemption import (
    LONG_STEPS,
    assert_same_training,
    clean_launcher_env,
    final_state,
    long_args,
    standalone_reference,
)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TAG = "CLOOB_RESTART_TEST"  # in the agent's (and so every worker's) environment


def agents(args: list[str], tag: str, logs: Path, *more: str) -> list[subprocess.Popen[bytes]]:
    """Two agents, node ranks 0 and 1, one worker each, meeting at a c10d store on loopback.
    Their output goes to files (logs/agentN.log): a pipe nobody reads while the test waits
    would fill up with a failure's tracebacks and block the processes writing them."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the reference's torchrun sets
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", tag]
    procs = []
    for node in range(2):
        with open(logs / f"agent{node}.log", "w") as out:
            cmd = [
                *TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                *rdzv, *more, "-m", "--", "cloob.trainer.cli", "run", *args,
            ]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def finish(procs: list[subprocess.Popen[bytes]], logs: Path, timeout: float = 600) -> list[str]:
    """Wait for every agent; their outputs. An agent still running after `timeout` is killed."""
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [(logs / f"agent{node}.log").read_text(errors="replace") for node in range(2)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted job on one agent with two workers."""
    return standalone_reference(tmp_path_factory.mktemp("reference"))


@pytest.mark.slow  # three torchrun agents and their workers: interpreter start-ups
def test_two_agents_train_the_job_one_agent_with_two_workers_trains(reference, tmp_path):
    with clean_launcher_env():
        procs = agents(long_args(tmp_path, "job"), uuid.uuid4().hex, tmp_path)
        outputs = finish(procs, tmp_path)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "2 ranks started by torchrun" in (tmp_path / "job" / "out.log").read_text()
    assert_same_training(reference, final_state(tmp_path / "job"), steps=LONG_STEPS)


def last_logged_step(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True) if metrics.exists() else []
    whole = [line for line in lines if line.endswith("\n")]  # the last may be half written
    return json.loads(whole[-1])["step"] if whole else 0


def worker_pid(tag: str, rank: int) -> int | None:
    """The worker of global rank `rank` started by this test's agent (its environment has TAG)."""
    wanted = {f"{TAG}={tag}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.slow  # an agent whose workers are restarted, and the reference
def test_a_killed_worker_is_restarted_and_resumes_as_if_uninterrupted(reference, tmp_path):
    """torchrun's elastic restart (`--max-restarts 1`): a worker killed with SIGKILL after the
    first checkpoint (step 32) makes the agent stop the other worker and start both again; they
    resume from that checkpoint (`--resume latest`, a fixed name), redo steps 33 on, and the job
    ends bit-identical to the uninterrupted one."""
    tag = uuid.uuid4().hex
    cmd = [
        *TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
        "-m", "--", "cloob.trainer.cli", "run", *long_args(tmp_path, "job"),
    ]  # fmt: skip
    # as docs/clusters.md says: the restarted workers get a store of their own, not the first
    # attempt's (where they would read the dead workers' addresses and fail to connect)
    env = {
        **os.environ,
        TAG: tag,
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    with clean_launcher_env(), open(tmp_path / "agent.log", "w") as out:
        agent = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while last_logged_step(tmp_path / "job") < 36:
            assert time.monotonic() < deadline and agent.poll() is None
            time.sleep(0.1)
        victim = worker_pid(tag, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        try:
            agent.wait(600)
        finally:
            agent.kill()
    output = (tmp_path / "agent.log").read_text(errors="replace")
    assert agent.returncode == 0, output[-3000:]
    log = (tmp_path / "job" / "out.log").read_text()
    assert "resumed from step 32" in log, log[-2000:]
    assert_same_training(reference, final_state(tmp_path / "job"), steps=LONG_STEPS)
