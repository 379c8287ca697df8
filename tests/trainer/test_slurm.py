"""The trainer under a real Slurm (tests/support/slurm.py: munged, slurmctld and slurmd on
loopback, one node with 2 CPUs), launched by the example batch scripts of examples/slurm/
themselves, made tiny: the trainer's arguments of the paper's setting become a micro model on
synthetic data, the resources 2 CPUs, and the rest of each script runs as written.

- `srun` starts the task's variables the trainer reads (the default suite: no torch started);
- srun, one task per rank, and srun, one torchrun per node, each train ONE 2-rank job whose final
  weights equal `torchrun --standalone --nproc-per-node 2`'s;
- the signal each script documents, sent mid-run with `scancel --signal`, stops the job with its
  checkpoint and exit code 75, `--requeue` puts it back in the queue, the same script's next
  start resumes, and the job ends bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloob.trainer.preemption import EXIT_STOPPED
from support.clusters import free_port
from support.preemption import (
    LONG_STEPS,
    assert_same_training,
    final_state,
    long_args,
    standalone_reference,
)
from support.slurm import Slurm, cluster

EXAMPLES = Path(__file__).parents[2] / "examples" / "slurm"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[Slurm]:
    with cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def tiny(example: str, args: list[str], out: Path) -> Path:
    """The example script with the test's trainer arguments, its environment and a free
    rendezvous port; GPUs not asked for. Each change must find its place in the script."""
    text = (EXAMPLES / example).read_text()
    port = free_port()
    changes = [  # pattern, replacement, whether every example has it
        (r"(?m)^#SBATCH --gpus-per-node=.*\n", "", True),
        (
            r"(?m)^source \.venv/bin/activate$",
            f"source {shlex.quote(sys.prefix)}/bin/activate",
            True,
        ),
        (r"--nproc-per-node \d+", "--nproc-per-node 2", False),
        (r"\$head:29500", f"$head:{port}", False),
        (r"(?s)(?<= run) \\\n.*\Z", " " + shlex.join(args) + "\n", True),
    ]
    for pattern, new, everywhere in changes:
        text, n = re.subn(pattern, new.replace("\\", "\\\\"), text)
        assert n == 1 or (n == 0 and not everywhere), (example, pattern, n)
    assert ("torchrun" in text) == ("$head:" + str(port) in text), text
    script = out / example
    script.write_text(text)
    return script


def submit(slurm: Slurm, script: Path, tasks: int, *more: str) -> int:
    """sbatch with the tiny resources on the command line (they win over the #SBATCH lines)."""
    return slurm.sbatch(
        script,
        "--nodes=1",
        f"--ntasks-per-node={tasks}",
        f"--cpus-per-task={2 // tasks}",
        "--time=15",
        f"--output={script.with_suffix('.out')}",
        # one thread per rank, as torchrun sets for its workers: the reference's float sums, and
        # no two ranks fighting over 2 cores
        "--export=ALL,OMP_NUM_THREADS=1",
        *more,
        cwd=script.parent,
    )


STYLES = {  # script, tasks per node: srun one task per rank; srun one torchrun per node
    "srun one task per rank": ("cc3m-srun.sbatch", 2),
    "srun one torchrun per node": ("cc3m-torchrun.sbatch", 1),
}


def documented_signal(example: str) -> str:
    (sig,) = re.findall(r"(?m)^#SBATCH --signal=(?:B:)?(\w+)@\d+", (EXAMPLES / example).read_text())
    return sig


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.sbatch")))
def test_every_example_script_can_stop_requeue_and_resume(example, tmp_path):
    """Each script (the YFCC ones too, which need 4 nodes) asks for a signal before the time
    limit that its launch passes to the trainers, may be requeued, and gives the trainer a fixed
    name, --resume latest and --requeue; it is valid bash and fits the template the tests run."""
    text = (EXAMPLES / example).read_text()
    assert documented_signal(example) == ("TERM" if "torchrun" in example else "USR1")
    assert "#SBATCH --requeue" in text and "#SBATCH --open-mode=append" in text
    command = text[text.index(" run \\\n") :]
    assert all(flag in command for flag in ("--name ", "--resume latest", "--requeue"))
    script = tiny(example, ["--name", "x"], tmp_path)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_srun_tasks_get_the_rank_and_rendezvous_the_trainer_derives(slurm):
    """`srun -n 2` sets the variables cloob.trainer.launch reads: ranks 0 and 1 of 2, meeting on
    the step's first host at the job's port (no torch started: fast)."""
    code = (
        "from cloob.trainer.launch import from_env; import os, json; "
        "l = from_env(os.environ); "
        "print(json.dumps([l.rank, l.world_size, l.local_rank, l.addr, l.port, l.source, "
        "os.environ['SLURM_JOB_ID']]))"
    )
    done = slurm.run("srun", "-n", "2", sys.executable, "-c", code, timeout=120)
    assert done.returncode == 0, done.stderr
    tasks = sorted(json.loads(line) for line in done.stdout.splitlines())
    job = int(tasks[0][6])
    port = 15000 + job % 20000
    assert [t[:6] for t in tasks] == [
        [0, 2, 0, slurm.node, port, "Slurm"],
        [1, 2, 1, slurm.node, port, "Slurm"],
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted job, `torchrun --standalone --nproc-per-node 2`, outside Slurm."""
    return standalone_reference(tmp_path_factory.mktemp("reference"))


def output(script: Path) -> str:
    out = script.with_suffix(".out")
    return out.read_text(errors="replace") if out.exists() else "(no output)"


@pytest.mark.slow  # a Slurm job of 2 trainer processes and its reference: a minute or more
@pytest.mark.parametrize("style", STYLES, ids=STYLES)
def test_an_example_script_trains_one_job_equal_to_torchruns(style, slurm, reference, tmp_path):
    example, tasks = STYLES[style]
    script = tiny(example, long_args(tmp_path / "logs", "job"), tmp_path)
    job = submit(slurm, script, tasks)
    info = slurm.wait(job, timeout=600)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output(script)
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["job"]  # one job, one run folder
    log = output(script)
    launcher = "Slurm" if tasks == 2 else "torchrun"
    assert f"2 ranks started by {launcher}" in log, log
    assert_same_training(reference, final_state(tmp_path / "logs" / "job"), steps=LONG_STEPS)


@pytest.mark.slow  # two starts of a 2-rank Slurm job and the reference
@pytest.mark.parametrize("style", STYLES, ids=STYLES)
def test_the_documented_signal_stops_requeues_and_the_job_ends_as_if_uninterrupted(
    style, slurm, reference, tmp_path
):
    example, tasks = STYLES[style]
    sig = documented_signal(example)
    logs = tmp_path / "logs"
    script = tiny(example, [*long_args(logs, "job"), "--requeue"], tmp_path)
    job = submit(slurm, script, tasks)
    metrics = logs / "job" / "metrics.jsonl"
    deadline = time.monotonic() + 400
    while not (metrics.exists() and metrics.read_text().strip()):  # training is under way
        assert time.monotonic() < deadline and slurm.job(job)["JobState"] in ("PENDING", "RUNNING")
        time.sleep(0.2)
    done = slurm.run("scancel", f"--signal={sig}", str(job))
    assert done.returncode == 0, done.stderr
    info = slurm.wait(job, timeout=600, restarts=1)
    log = output(script)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log
    stopped = re.findall(rf"stopped by SIG{sig} at step (\d+) of {LONG_STEPS}, checkpoint", log)
    assert len(stopped) == 1 and 4 <= int(stopped[0]) < LONG_STEPS, log
    assert f"(exit code {EXIT_STOPPED})" in log and f"requeued Slurm job {job}" in log
    assert f"resumed from step {stopped[0]}" in log, log
    assert_same_training(reference, final_state(logs / "job"), steps=LONG_STEPS)
