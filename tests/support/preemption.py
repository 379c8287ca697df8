"""Runs of `trainer run` in forked processes (the test's own torch, no interpreter start-up), each
given a signal at a chosen moment.

A `Moment` says where a run is hit: mid-step (between backward and the optimizer update), inside a
checkpoint write, inside an evaluation, while the data-loader workers start, during setup, or
killed with SIGKILL inside a checkpoint write. It is armed in the forked child by wrapping the one
function where that moment happens, so the moment is exact, never a sleep. Every run also records
a fingerprint of each step's micro-batches (`order`), so a resumed run's sample order can be
compared with an uninterrupted run's, step by step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer import cli, evaluate, loop
from cloob.trainer import launch as launch_vars
from support.cli import run_main

MICRO = str(Path(__file__).parents[1] / "trainer" / "micro.json")  # the trainer tests' model

matplotlib.use("Agg")  # imported once here, not in every child that draws its curves.png
import matplotlib.pyplot  # noqa: E402, F401

GLOBAL_BATCH, SAMPLES, EPOCHS = 8, 32, 2  # 4 steps per epoch, 8 in all
TOTAL_STEPS = SAMPLES // GLOBAL_BATCH * EPOCHS
SAVE_EVERY = 3  # step checkpoints at 3 and 6, the final one at 8; validation after each epoch


def run_args(logs: Path, name: str, ranks: int = 1, workers: int = 0) -> list[str]:
    """One command line: the uninterrupted run and every restart use it unchanged."""
    return [
        "--model", MICRO, "--method", "cloob", "--learnable-inv-tau", "--learnable-scale-hopfield",
        "--dataset-type", "synthetic", "--train-num-samples", str(SAMPLES),
        "--batch-size", str(GLOBAL_BATCH // ranks), "--workers", str(workers),
        "--val-data", "synthetic", "--val-num-samples", "8", "--batch-size-eval", "8",
        "--epochs", str(EPOCHS), "--warmup", "3", "--lr", "1e-3", "--lr-scheduler", "const",
        "--save-every-n-steps", str(SAVE_EVERY), "--save-frequency", "0", "--seed", "7",
        "--logs", str(logs), "--name", name, "--resume", "latest",
        "--report-to", "none", "--no-progress", "--log-every-n-steps", "4",
    ]  # fmt: skip


LONG_STEPS = 96  # long enough that a signal or kill sent from outside after step 4 lands mid-run


def long_args(logs: Path, name: str) -> list[str]:
    """A job of 2 ranks x 4 samples for LONG_STEPS steps, a fixed name, checkpoints every 32
    steps: what tests that hit whole launchers (Slurm, torchrun's agents) from outside run."""
    return [
        "--model", MICRO, "--method", "cloob", "--learnable-inv-tau", "--learnable-scale-hopfield",
        "--dataset-type", "synthetic", "--train-num-samples", str(LONG_STEPS * 8),
        "--batch-size", "4", "--workers", "0", "--epochs", "1", "--warmup", "3", "--lr", "1e-3",
        "--lr-scheduler", "const", "--save-every-n-steps", "32", "--save-frequency", "0",
        "--seed", "7", "--logs", str(logs), "--name", name, "--resume", "latest",
        "--report-to", "none", "--no-progress", "--log-every-n-steps", "4",
    ]  # fmt: skip


@dataclass(frozen=True)
class Moment:
    """Where a run gets its signal. `at`: the optimizer step (kind "step": the step about to be
    taken, 0-based), or the 1-based count of checkpoint writes, validations or loader starts."""

    kind: str  # setup, step, save, eval, workers, second-in-save, kill-in-save, kill-before-latest
    at: int = 1
    sig: int = signal.SIGUSR1
    rank: int = 0  # the rank that is hit (the others learn it from the agreement)
    ranks: int = 1
    workers: int = 0

    @property
    def killed(self) -> bool:
        return self.kind.startswith("kill")

    @property
    def id(self) -> str:
        sig = signal.Signals(self.sig).name
        return f"{self.kind}@{self.at}-{sig}-rank{self.rank}of{self.ranks}-w{self.workers}"


def arm(moment: Moment) -> None:
    """In the forked child: wrap the function where `moment` happens."""
    hit = {"n": 0}

    def send(sig: int = moment.sig) -> None:
        if moment.kind == "workers":  # the whole process group, workers included, as Slurm does
            os.killpg(0, sig)
        else:
            os.kill(os.getpid(), sig)

    def counted() -> bool:
        hit["n"] += 1
        return hit["n"] == moment.at

    def send_if(now: bool, sig: int = moment.sig) -> None:
        if now:
            send(sig)

    if moment.kind == "setup":
        wrap(loop, "setup", before=lambda *a, **k: send())
    elif moment.kind == "step":
        wrap(loop, "compute_gradients", before=lambda t, *a: send_if(t.step == moment.at))
    elif moment.kind == "save":
        wrap(ckpt_format, "write", before=lambda *a: send_if(counted()))
    elif moment.kind == "eval":
        wrap(evaluate, "validate", before=lambda *a, **k: send_if(counted()))
    elif moment.kind == "workers":
        iterator = torch.utils.data.DataLoader.__iter__
        wrap(torch.utils.data.DataLoader, "__iter__", after=lambda *a: send_if(counted()))
        assert torch.utils.data.DataLoader.__iter__ is not iterator
    elif moment.kind == "second-in-save":  # a signal mid-step, a second one inside its save
        first = {"sent": False}

        def step(t: Any, *a: Any) -> None:
            if t.step == moment.at:
                first["sent"] = True
                send()

        wrap(loop, "compute_gradients", before=step)
        wrap(ckpt_format, "write", before=lambda *a: send_if(first["sent"], signal.SIGTERM))
    elif moment.kind == "kill-in-save":  # SIGKILL with the new checkpoint half written
        save = torch.save

        def cut(obj: Any, f: Any, *a: Any, **k: Any) -> None:
            if counted():
                save(obj, f, *a, **k)
                with open(f, "r+b") as out:
                    out.truncate(out.seek(0, 2) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            save(obj, f, *a, **k)

        torch.save = cut
    elif moment.kind == "kill-before-latest":  # step_N.pt complete, latest.pt not yet moved

        def kill_when_counted(*a: Any) -> None:
            if counted():
                os.kill(os.getpid(), signal.SIGKILL)

        wrap(loop.checkpoint, "link_latest", before=kill_when_counted)
    else:
        raise ValueError(moment.kind)


def wrap(owner: Any, name: str, before: Any = None, after: Any = None) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after is not None:
            after(*args, **kwargs)
        return result

    setattr(owner, name, wrapped)


def record_order(path: Path) -> None:
    """Append (step, fingerprint of its micro-batches) to `path` for every optimizer step."""
    step = loop.optimizer_step

    def recorded(t: Any, micro_batches: list[dict[str, Any]]) -> Any:
        digest = hashlib.sha1()
        for batch in micro_batches:
            digest.update(batch["image"].contiguous().numpy().tobytes())
            digest.update(batch["text"].contiguous().numpy().tobytes())
        with path.open("a") as f:
            f.write(json.dumps([t.step + 1, digest.hexdigest()]) + "\n")
        return step(t, micro_batches)

    loop.optimizer_step = recorded


def order(path: Path) -> dict[int, str]:
    """Step → fingerprint; a step taken twice (redone after a kill) counts as its last take. A run
    stopped before its first step took none."""
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(json.loads(line) for line in lines)


def _child(
    args: list[str], env: dict[str, str], log: str, order_file: str, moment: Moment | None
) -> None:
    os.environ.update(env)
    torch.set_num_threads(1)
    sys.stderr = open(log, "a", buffering=1)  # noqa: SIM115  the child's stderr, for the test
    os.dup2(sys.stderr.fileno(), 2)
    if moment is not None and moment.kind == "workers":
        os.setpgid(0, 0)  # a process group of its own: the "job" a cluster signals
    if moment is not None:
        arm(moment)
    record_order(Path(order_file))
    sys.exit(run_main(cli.main, "trainer", "run", *args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    args: list[str],
    tmp: Path,
    tag: str,
    ranks: int = 1,
    moment: Moment | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> list[int | None]:
    """Start `trainer run ARGS` as `ranks` forked processes (torchrun's variables unless `env`
    gives each rank's own, with {rank} filled in), the moment armed on its rank; their exit
    codes (negative: killed by that signal)."""
    ctx = mp.get_context("fork")
    port = str(free_port())
    procs = []
    for rank in range(ranks):
        if env is None:
            rank_env = {"WORLD_SIZE": str(ranks), "RANK": str(rank), "LOCAL_RANK": str(rank)}
            rank_env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port} if ranks > 1 else {}
        else:
            rank_env = {k: v.format(rank=rank, port=port) for k, v in env.items()}
        armed = moment if moment is not None and moment.rank == rank else None
        files = (str(tmp / f"{tag}-rank{rank}.log"), str(tmp / f"order-{tag}-rank{rank}.jsonl"))
        procs.append(ctx.Process(target=_child, args=(args, rank_env, *files, armed)))
    with clean_launcher_env():
        for p in procs:
            p.start()
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:  # a rank still waiting (a failed test) must not outlive it
        if p.exitcode is None:
            p.kill()
            p.join()
    return codes


@contextlib.contextmanager
def clean_launcher_env():
    """No launcher variable of the test's own shell (a CI job under Slurm) reaches the children."""
    saved = {k: os.environ.pop(k) for k in launch_vars.VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def final_state(run_dir: Path) -> dict[str, Any]:
    return dict(ckpt_format.read(run_dir / "checkpoints" / "latest.pt"))


def assert_same_training(a: dict[str, Any], b: dict[str, Any], steps: int = TOTAL_STEPS) -> None:
    """Bit-identical weights, objective scalars, optimizer state, step and data positions."""
    assert a["step"] == b["step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["loss_state"].items():
        assert torch.equal(value, b["loss_state"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    assert a["data"] == b["data"]


def standalone_reference(root: Path) -> Any:
    """The final state of the `long_args` job under `torchrun --standalone --nproc-per-node 2`:
    the uninterrupted run that launcher tests (Slurm, several agents, restarts) compare with."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "--", "cloob.trainer.cli", "run", *long_args(root, "ref"),
    ]  # fmt: skip
    with clean_launcher_env():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_state(root / "ref")
