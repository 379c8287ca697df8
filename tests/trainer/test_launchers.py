"""Every launcher OpenCLIP supports starts one job: torchrun, srun (one task per rank, as OpenCLIP's
Slurm recipe), Open MPI's mpirun and PMI launchers. The variables each one sets decide rank,
world size, local rank and rendezvous (a pure function, tested case by case); two processes
started with each launcher's variables train one 2-rank job with one run folder, bit-identical
whichever launcher it was; a second job in a live run folder is refused on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cloob.common import folder_lock
from cloob.common.cli import UsageError
from cloob.trainer.launch import VARIABLES, expand_hostlist, from_env
from support.preemption import MICRO, clean_launcher_env, free_port, launch

SRUN = {"SLURM_STEP_ID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]"}


def srun_task(rank: int, world: int = 4, local: int | None = None, **more: str) -> dict:
    local = rank % 2 if local is None else local
    return {
        **SRUN,
        "SLURM_NTASKS": str(world),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(local),
        **more,
    }


def ompi(rank: int, world: int = 8, **more: str) -> dict:
    return {
        "OMPI_COMM_WORLD_SIZE": str(world),
        "OMPI_COMM_WORLD_RANK": str(rank),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(rank % 4),
        **more,
    }


MASTER = {"MASTER_ADDR": "head", "MASTER_PORT": "29611"}
TORCHRUN = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "n1"}

# environment, --dist-url → (rank, world, local rank, rendezvous host, port, launcher)
CASES = {
    "plain shell": ({}, "env://", (0, 1, 0, None, None, "single process")),
    "torchrun without its agent's store": (
        {**TORCHRUN, "MASTER_PORT": "29500"},
        "env://",
        (3, 4, 1, "n1", 29500, "torchrun"),
    ),
    "torchrun under srun: torchrun's numbers": (
        {**srun_task(0, world=2), **TORCHRUN, "MASTER_PORT": "29500"},
        "env://",
        (3, 4, 1, "n1", 29500, "torchrun"),
    ),
    "srun, OpenCLIP's recipe (MASTER_ADDR/PORT exported)": (
        {**srun_task(2), **MASTER},
        "env://",
        (2, 4, 0, "head", 29611, "Slurm"),
    ),
    "srun, rendezvous from the node list and job id": (
        srun_task(1),
        "env://",
        (1, 4, 1, "gpu07", 15000 + 4242, "Slurm"),
    ),
    "srun of a step over fewer nodes: the step's list": (
        srun_task(0, SLURM_STEP_NODELIST="gpu[08-09]"),
        "env://",
        (0, 4, 0, "gpu08", 19242, "Slurm"),
    ),
    "srun --export/-E kept the allocation's SLURM_NTASKS: the step's task count": (
        srun_task(1, world=8, SLURM_STEP_NUM_TASKS="2"),
        "env://",
        (1, 2, 1, "gpu07", 19242, "Slurm"),
    ),
    "srun, MASTER_ADDR without MASTER_PORT: the job's port": (
        srun_task(3, MASTER_ADDR="head"),
        "env://",
        (3, 4, 1, "head", 19242, "Slurm"),
    ),
    "srun with a reference --dist-url, one node": (
        srun_task(1, SLURM_STEP_NUM_NODES="1"),
        "tcp://127.0.0.1:6100",
        (1, 4, 1, "127.0.0.1", 6100, "Slurm"),
    ),
    "a batch script (SLURM_NTASKS=4, no srun): one process": (
        {"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "9"},
        "env://",
        (0, 1, 0, None, None, "single process"),
    ),
    "mpirun (Open MPI)": ({**ompi(5), **MASTER}, "env://", (5, 8, 1, "head", 29611, "Open MPI")),
    "mpirun inside an allocation: Open MPI's numbers, not its daemon's": (
        {**srun_task(1, world=2), **ompi(6), **MASTER},
        "env://",
        (6, 8, 2, "head", 29611, "Open MPI"),
    ),
    "mpirun with --dist-url": (ompi(0), "tcp://head:7000", (0, 8, 0, "head", 7000, "Open MPI")),
    "mpiexec (PMI)": (
        {"PMI_SIZE": "3", "PMI_RANK": "2", "MPI_LOCALRANKID": "0", **MASTER},
        "env://",
        (2, 3, 0, "head", 29611, "PMI"),
    ),
    "srun --mpi=pmi2: PMI's numbers are srun's, so srun's rendezvous": (
        {**srun_task(1), "PMI_SIZE": "4", "PMI_RANK": "1"},
        "env://",
        (1, 4, 0, "gpu07", 19242, "PMI"),
    ),
}


@pytest.mark.parametrize("env, url, expected", CASES.values(), ids=CASES.keys())
def test_the_launchers_variables_give_rank_world_and_rendezvous(env, url, expected):
    got = from_env(env, url)
    assert (got.rank, got.world_size, got.local_rank, got.addr, got.port, got.source) == expected


def test_torchrun_agent_store_is_joined_by_torch_itself():
    got = from_env({**TORCHRUN, "MASTER_PORT": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (got.init_method, got.addr, got.rank) == ("env://", None, 3)
    assert got.note == ""


def test_restarts_into_a_shared_agent_store_are_warned_of():
    """torchrun --max-restarts with the store shared: the restarted workers could read the dead
    ones' addresses (tests/trainer/test_torchrun_nodes.py restarts with it unshared)."""
    agent = {**TORCHRUN, "MASTER_PORT": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    got = from_env({**agent, "TORCHELASTIC_MAX_RESTARTS": "1"})
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in got.note
    assert from_env({**agent, "TORCHELASTIC_MAX_RESTARTS": "0"}).note == ""


def test_a_batch_script_says_it_trains_one_process():
    note = from_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}).note
    assert "not started by srun" in note and "srun" in note


def test_an_exported_master_wins_over_a_reference_dist_url_and_says_so():
    got = from_env({**srun_task(0), **MASTER}, "tcp://127.0.0.1:6100")
    assert (got.addr, got.port) == ("head", 29611)
    assert "--dist-url tcp://127.0.0.1:6100 ignored" in got.note


def test_a_shared_file_rendezvous_is_handed_to_torch():
    got = from_env(ompi(1, world=2), "file:///shared/rdzv")
    assert got.init_method == "file:///shared/rdzv" and got.addr is None


BAD = {
    "Open MPI without a rendezvous": (ompi(0), "env://", "export MASTER_ADDR"),
    "PMI without a rendezvous": ({"PMI_SIZE": "2", "PMI_RANK": "0"}, "", "export MASTER_ADDR"),
    "torchrun's numbers, exported by hand, no address": (
        {"WORLD_SIZE": "2", "RANK": "1"},
        "env://",
        "2 ranks (torchrun's variables) but no rendezvous",
    ),
    "MASTER_ADDR without MASTER_PORT outside srun": (
        {**ompi(0), "MASTER_ADDR": "head"},
        "env://",
        "export MASTER_PORT",
    ),
    "a loopback rendezvous over two nodes": (
        srun_task(1, SLURM_STEP_NUM_NODES="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="1234"),
        "env://",
        "spans 2 nodes",
    ),
    "a reference --dist-url over two nodes": (
        srun_task(1, SLURM_NNODES="2"),
        "tcp://127.0.0.1:6100",
        "is a loopback address",
    ),
    "a rank beyond the world": ({"WORLD_SIZE": "2", "RANK": "2"}, "env://", "is not below"),
    "a rank that is not a number": (ompi(0, OMPI_COMM_WORLD_RANK="x"), "", "not a whole number"),
    "a port that is not a port": ({**ompi(0), **MASTER, "MASTER_PORT": "70000"}, "", "not a port"),
    "an unknown --dist-url scheme": (ompi(0), "udp://h:1", "use tcp://HOST:PORT"),
    "a broken node list": (srun_task(0, SLURM_JOB_NODELIST="gpu[07-"), "", "not a Slurm host"),
}


@pytest.mark.parametrize("env, url, message", BAD.values(), ids=BAD.keys())
def test_ranks_that_cannot_meet_are_one_error(env, url, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_env(env, url)


HOSTLISTS = {
    "node[01-04,07],gpu5": ["node01", "node02", "node03", "node04", "node07", "gpu5"],
    "n[9-11]": ["n9", "n10", "n11"],
    "n[009-011]": ["n009", "n010", "n011"],
    "rack[1-2]-gpu[3,5]": ["rack1-gpu3", "rack1-gpu5", "rack2-gpu3", "rack2-gpu5"],
    "login": ["login"],
    "a,b[2],c": ["a", "b2", "c"],
}


@pytest.mark.parametrize("text, hosts", HOSTLISTS.items(), ids=HOSTLISTS.keys())
def test_slurm_host_lists_expand_in_order(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["", "n[1-", "n]1[", "n[3-1]", "n[a-b]", "n[[1]]"])
def test_broken_host_lists_are_one_error(text):
    with pytest.raises(UsageError, match="host list|range|names no host"):
        expand_hostlist(text, "SLURM_JOB_NODELIST")


# --- real 2-rank jobs, one per launcher's variables (forked processes, gloo on 127.0.0.1) -------


def job_args(logs: Path) -> list[str]:
    """No --name: the run folder's name (which holds a start time) must be agreed by the ranks."""
    return [
        "--model", MICRO, "--method", "cloob", "--dataset-type", "synthetic",
        "--train-num-samples", "32", "--batch-size", "4", "--workers", "0", "--max-steps", "2",
        "--warmup", "1", "--lr", "1e-3", "--learnable-inv-tau", "--learnable-scale-hopfield",
        "--logs", str(logs), "--report-to", "none", "--no-progress", "--save-frequency", "0",
    ]  # fmt: skip


def slurm_job_id_with_free_port() -> str:
    """A job id whose derived port (15000 + id % 20000) is free on this machine."""
    for job in range(4000, 20000, 97):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 15000 + job))
            except OSError:
                continue
        return str(job)
    raise AssertionError("no free port in 15000-34999")


def test_each_launchers_ranks_train_one_job_equal_to_torchruns(tmp_path):
    """srun's tasks (`MASTER_ADDR=… srun -n 2 trainer run …`, or nothing exported) train the job
    torchrun's would; mpirun's variables take the same path (the slow test below starts them)."""
    slurm = {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "{rank}"}
    slurm |= {"SLURM_LOCALID": "{rank}", "SLURM_STEP_NODELIST": "localhost"}
    launchers = {
        "torchrun": None,  # WORLD_SIZE/RANK/LOCAL_RANK + MASTER_ADDR/PORT, as torchrun sets them
        "srun as OpenCLIP runs it": {
            **slurm,
            "SLURM_JOB_ID": "77",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "{port}",
        },
        "srun, nothing exported": {**slurm, "SLURM_JOB_ID": slurm_job_id_with_free_port()},
    }
    finals = {}
    for i, (name, env) in enumerate(launchers.items()):
        logs = tmp_path / f"logs{i}"
        codes = launch(job_args(logs), tmp_path, f"job{i}", ranks=2, env=env)
        log = (tmp_path / f"job{i}-rank0.log").read_text()
        assert codes == [0, 0], f"{name}: {log}"
        (run_dir,) = logs.iterdir()  # one job, one run folder
        assert "8 samples per step (4 × 2 rank(s)" in log, name
        if name == "srun, nothing exported":
            assert "2 ranks started by Slurm, rendezvous at localhost:" in log
            assert "the first host of SLURM_STEP_NODELIST" in log
        ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
        assert ckpt["step"] == 2
        finals[name] = ckpt["state_dict"]
    reference = finals.pop("torchrun")
    for name, weights in finals.items():
        for key, value in reference.items():
            assert torch.equal(value, weights[key]), (name, key)


def test_a_second_job_in_a_live_run_folder_is_refused_on_every_rank(tmp_path):
    run_dir = tmp_path / "logs" / "shared"
    args = [*job_args(tmp_path / "logs"), "--name", "shared"]
    with folder_lock.held(run_dir, "the first job"):  # the first job, still running
        before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
        codes = launch(args, tmp_path, "second", ranks=2)
        after = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
    assert codes == [2, 2]
    for rank in range(2):
        lines = (tmp_path / f"second-rank{rank}.log").read_text().strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: {run_dir} is in use by another training (host ")
        assert f"pid {os.getpid()}" in lines[0] and "choose another --name" in lines[0]
    assert after == before  # not a file touched


# --- the launchers themselves, as new interpreters (slow: each start imports torch) ------------


@pytest.mark.slow  # six interpreter start-ups under torchrun and as srun's/mpirun's tasks
def test_real_processes_srun_and_mpirun_style_equal_torchrun(tmp_path):
    """`torchrun --nproc-per-node 2` and two `trainer run` processes given srun's or mpirun's
    variables (what `srun -n 2` and `mpirun -n 2` set) end with the same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cloob.trainer.cli", "run"]
    with clean_launcher_env():
        base = {k: v for k, v in env.items() if k not in VARIABLES}
        port = free_port()
        subprocess.run(
            [
                sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(port), "-m", "--", "cloob.trainer.cli", "run",
                *job_args(tmp_path / "torchrun"),
            ],
            check=True, env=base, timeout=300, capture_output=True,
        )  # fmt: skip
        for name, make in (("srun", _srun_env), ("mpirun", _mpirun_env)):
            port = free_port()
            procs = [
                subprocess.Popen(
                    [*cli, *job_args(tmp_path / name)],
                    env={**base, **make(rank, port)},
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for rank in range(2)
            ]
            for proc in procs:
                _, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err
    weights = {}
    for name in ("torchrun", "srun", "mpirun"):
        (run_dir,) = (tmp_path / name).iterdir()
        weights[name] = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    for name in ("srun", "mpirun"):
        for key, value in weights["torchrun"]["state_dict"].items():
            assert torch.equal(value, weights[name]["state_dict"][key]), (name, key)


def _srun_env(rank: int, port: int) -> dict[str, str]:
    return {
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_JOB_ID": "31",
        "SLURM_JOB_NODELIST": "localhost",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _mpirun_env(rank: int, port: int) -> dict[str, str]:
    return {
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": str(rank),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
