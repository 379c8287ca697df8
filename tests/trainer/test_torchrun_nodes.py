"""Several nodes on one machine: torchrun agents that meet at a c10d rendezvous on 127.0.0.1, as
the agents of a multi-node job meet on its first node. Two agents (`--nnodes 2`, one process
each) train the job one agent trains with `--nproc-per-node 2`, to the same weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


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
    root = tmp_path_factory.mktemp("reference")
    cmd = [
        *TORCHRUN, "--standalone", "--nproc-per-node", "2",
        "-m", "--", "cloob.trainer.cli", "run", *long_args(root, "ref"),
    ]  # fmt: skip
    with clean_launcher_env():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_state(root / "ref")


@pytest.mark.slow  # three torchrun agents and their workers: interpreter start-ups
def test_two_agents_train_the_job_one_agent_with_two_workers_trains(reference, tmp_path):
    with clean_launcher_env():
        procs = agents(long_args(tmp_path, "job"), uuid.uuid4().hex, tmp_path)
        outputs = finish(procs, tmp_path)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "2 ranks started by torchrun" in (tmp_path / "job" / "out.log").read_text()
    assert_same_training(reference, final_state(tmp_path / "job"), steps=LONG_STEPS)
