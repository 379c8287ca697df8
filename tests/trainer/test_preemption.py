"""Preemption without loss: SIGUSR1 or SIGTERM at any moment (mid-step, inside a checkpoint write,
during evaluation, while loader workers start, on one rank of two) stops the run at a step
boundary with its checkpoint (exit code 75), and the same command then ends bit for bit where an
uninterrupted run ends, having trained on the same samples in the same order. SIGKILL during a
save leaves the previous latest.pt usable."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from cloob.common import checkpoint as ckpt_format
from cloob.trainer.preemption import EXIT_STOPPED
from support.preemption import (
    SAVE_EVERY,
    TOTAL_STEPS,
    Moment,
    assert_same_training,
    final_state,
    launch,
    order,
    run_args,
)

USR1, TERM = signal.SIGUSR1, signal.SIGTERM


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of each (ranks, workers), made once: its final state and, per rank,
    the fingerprint of every step's micro-batches."""
    root = tmp_path_factory.mktemp("reference")
    made: dict[tuple[int, int], tuple[dict, list[dict[int, str]]]] = {}

    def get(ranks: int = 1, workers: int = 0):
        if (ranks, workers) not in made:
            tag = f"ref{ranks}w{workers}"
            args = run_args(root, tag, ranks, workers)
            assert launch(args, root, tag, ranks) == [0] * ranks, _logs(root, tag, ranks)
            log = (root / f"{tag}-rank0.log").read_text()
            assert "--resume latest: no checkpoint in" in log  # the first start of the command
            orders = [order(root / f"order-{tag}-rank{r}.jsonl") for r in range(ranks)]
            assert all(sorted(o) == list(range(1, TOTAL_STEPS + 1)) for o in orders)
            made[(ranks, workers)] = (final_state(root / tag), orders)
        return made[(ranks, workers)]

    return get


def interrupt_and_rerun(moment: Moment, tmp_path: Path, reference) -> tuple[int, str]:
    """Hit a run at `moment`, check how it ended, rerun the same command to the end and compare
    it with the uninterrupted run. Returns the step latest.pt held after the interruption (0:
    none) and the interrupted run's rank-0 log."""
    ranks, tag = moment.ranks, "run"
    args = run_args(tmp_path, tag, ranks, moment.workers)
    codes = launch(args, tmp_path, tag, ranks, moment)
    log = (tmp_path / f"{tag}-rank0.log").read_text()
    if moment.killed:
        assert codes[moment.rank] == -signal.SIGKILL, codes
        for rank in set(range(ranks)) - {moment.rank}:  # the others: one line, no traceback
            lines = (tmp_path / f"{tag}-rank{rank}.log").read_text().strip().splitlines()
            if codes[rank] != 0:  # 0: it had finished (a kill in the final save)
                assert codes[rank] == 2, _logs(tmp_path, tag, ranks)
                assert len(lines) == 1 and "another rank is gone" in lines[0], lines
    else:
        assert codes == [EXIT_STOPPED] * ranks, _logs(tmp_path, tag, ranks)
        assert f"stopped by {signal.Signals(moment.sig).name} at step" in log, log
        assert "--resume latest to continue (exit code 75)" in log
    latest = tmp_path / tag / "checkpoints" / "latest.pt"
    stopped_at = ckpt_format.read(latest)["step"] if latest.exists() else 0  # whole and readable
    assert stopped_at < TOTAL_STEPS

    codes = launch(args, tmp_path, "rerun", ranks)
    assert codes == [0] * ranks, _logs(tmp_path, "rerun", ranks)
    ref_state, ref_orders = reference(ranks, moment.workers)
    assert_same_training(ref_state, final_state(tmp_path / tag))
    for rank in range(ranks):
        seen = order(tmp_path / f"order-run-rank{rank}.jsonl")
        seen |= order(tmp_path / f"order-rerun-rank{rank}.jsonl")  # a redone step: its last take
        assert seen == ref_orders[rank], f"rank {rank}: the sample order differs"
    leftovers = [p.name for p in (tmp_path / tag / "checkpoints").iterdir() if p.name[0] == "."]
    assert not leftovers or moment.killed, leftovers  # only a kill leaves a temporary file
    return stopped_at, log


def _logs(root: Path, tag: str, ranks: int) -> str:
    return "\n".join((root / f"{tag}-rank{r}.log").read_text() for r in range(ranks))


# --- a few representative moments in the default suite; the sweep below has the rest --------


def test_a_signal_mid_step_stops_at_the_step_boundary_and_the_same_command_continues(
    tmp_path, reference
):
    stopped_at, log = interrupt_and_rerun(Moment("step", at=4), tmp_path, reference)
    assert stopped_at == 5  # step 5 was under way: it is finished, then saved
    assert f"stopped by SIGUSR1 at step 5 of {TOTAL_STEPS}, checkpoint" in log
    assert "step_5.pt: rerun with --logs" in log


def test_a_signal_to_one_rank_stops_both_ranks_at_the_same_step(tmp_path, reference):
    moment = Moment("step", at=1, sig=TERM, rank=1, ranks=2)
    assert interrupt_and_rerun(moment, tmp_path, reference)[0] == 2


@pytest.mark.slow  # the sweep below hits this moment too; the default suite keeps its budget
def test_a_second_signal_during_the_stop_save_leaves_latest_intact(tmp_path, reference):
    stopped_at, log = interrupt_and_rerun(Moment("second-in-save", at=1), tmp_path, reference)
    assert stopped_at == 2 and "stopped by SIGUSR1 at step 2" in log  # the first signal's stop


def test_sigkill_inside_a_save_leaves_the_previous_latest_usable(tmp_path, reference):
    """Rank 0 is killed with its second checkpoint (step 6) half written: latest.pt is still step
    3's, whole; rank 1 ends with one error line; the same command continues from step 3."""
    moment = Moment("kill-in-save", at=2, ranks=2)
    assert interrupt_and_rerun(moment, tmp_path, reference)[0] == SAVE_EVERY


def test_loader_workers_ignore_the_signal_the_job_gets(tmp_path, reference):
    """A cluster signals every process of the job: the loader workers, which torch would let die
    on a foreign SIGTERM (failing the main process wherever it stands), carry on until the step
    boundary, then the main process shuts them down."""
    interrupt_and_rerun(Moment("workers", at=2, sig=TERM, workers=2), tmp_path, reference)


def fake_scontrol(tmp_path: Path, monkeypatch, body: str) -> None:
    """A local `scontrol` first on PATH (a stand-in for Slurm's, not a network mock)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_requeue_calls_scontrol_after_the_checkpoint(tmp_path, monkeypatch):
    """--requeue under Slurm: once the checkpoint is written, `scontrol requeue $SLURM_JOB_ID`
    (the stand-in records its arguments and whether latest.pt was there)."""
    record, latest = tmp_path / "scontrol.txt", tmp_path / "run" / "checkpoints" / "latest.pt"
    fake_scontrol(
        tmp_path, monkeypatch, f'echo "$@" "$(test -s {latest} && echo saved)" >> {record}'
    )
    args = [*run_args(tmp_path, "run"), "--requeue"]
    codes = launch(args, tmp_path, "run", moment=Moment("step", at=1), env={"SLURM_JOB_ID": "4242"})
    assert codes == [EXIT_STOPPED], _logs(tmp_path, "run", 1)
    assert record.read_text().split() == ["requeue", "4242", "saved"]
    assert "requeued Slurm job 4242" in (tmp_path / "run-rank0.log").read_text()


def test_a_refused_requeue_is_one_line_and_the_checkpoint_stays(tmp_path, monkeypatch):
    fake_scontrol(
        tmp_path, monkeypatch, "echo 'Requested operation is presently disabled' >&2; exit 1"
    )
    args = [*run_args(tmp_path, "run"), "--requeue"]
    codes = launch(args, tmp_path, "run", moment=Moment("step", at=0), env={"SLURM_JOB_ID": "7"})
    assert codes == [EXIT_STOPPED]
    log = (tmp_path / "run-rank0.log").read_text()
    assert "scontrol requeue 7 failed (Requested operation is presently disabled): submit" in log
    assert ckpt_format.read(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 1


@pytest.mark.slow  # a bucket on 127.0.0.1, a stop and a restart on "another node"
def test_with_remote_sync_the_checkpoint_is_in_the_bucket_before_exit(tmp_path, s3, reference):
    """The stop's checkpoint is uploaded and committed before the exit; a restart on a machine
    without the local copy continues from the bucket, to the uninterrupted run's weights."""
    args = [*run_args(tmp_path, "run"), "--remote-sync", s3.url("runs")]
    assert launch(args, tmp_path, "run", moment=Moment("step", at=3)) == [EXIT_STOPPED]
    marker = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key=f"{PREFIX}/latest.json")["Body"].read()
    )
    assert (marker["checkpoint"], marker["step"]) == ("step_4.pt", 4)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a new node: no local checkpoint
    assert launch(args, tmp_path, "rerun") == [0], _logs(tmp_path, "rerun", 1)
    assert "resumed from step 4" in (tmp_path / "rerun-rank0.log").read_text()
    assert_same_training(reference()[0], final_state(tmp_path / "run"))


PREFIX = "runs/run/checkpoints"


# --- the sweep: ≥ 20 moments, seeded ---------------------------------------------------------


def sweep(seed: int = 20261203, n: int = 24) -> list[Moment]:
    """Every kind of moment, on one rank and on one rank of two, with both signals. Writes and
    evaluations happen on rank 0, so those moments hit rank 0; a step or the setup, any rank."""
    rng = random.Random(seed)
    kinds = ["setup", "step", "save", "eval", "workers", "second-in-save"]
    kinds += ["kill-in-save", "kill-before-latest"]
    moments = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ranks = 1 if kind == "workers" or i % 3 == 0 else 2
        at = {
            "step": rng.randrange(TOTAL_STEPS - 1),  # the step under way; the last one finishes
            "second-in-save": rng.randrange(TOTAL_STEPS - 1),
            "save": rng.randrange(1, 3),  # the writes at steps 3 and 6
            "kill-in-save": rng.randrange(1, 4),  # also the final one
            "kill-before-latest": rng.randrange(1, 4),
            "eval": 1,  # after the first epoch
            "workers": rng.randrange(1, 3),  # the first epoch's loader, the validation loader's
            "setup": 1,
        }[kind]
        moments.append(
            Moment(
                kind,
                at=at,
                sig=rng.choice([USR1, TERM]),
                rank=rng.randrange(ranks) if kind in ("step", "setup") else 0,
                ranks=ranks,
                workers=2 if kind == "workers" or i % 5 == 0 else 0,
            )
        )
    return moments


def expected_stop(moment: Moment) -> int:
    """The step latest.pt holds after the moment: a signal takes effect at the next step boundary
    (after an evaluation or a write under way); a kill leaves the write before."""
    per_epoch = TOTAL_STEPS // 2
    writes = [0, SAVE_EVERY, 2 * SAVE_EVERY, TOTAL_STEPS]  # the steps of the 1st, 2nd, 3rd write
    if moment.kind in ("step", "second-in-save"):
        return moment.at + 1  # the step under way is finished, then saved
    if moment.kind == "save":
        return writes[moment.at]
    if moment.killed:
        return writes[moment.at - 1]
    if moment.kind == "workers" and moment.at == 1:  # the first loader: before the first step
        return 1
    return {"setup": 0, "eval": per_epoch, "workers": per_epoch}[moment.kind]  # 2nd loader: val


@pytest.mark.slow  # 24 interrupted runs and their reruns: several minutes on 2 shared cores
@pytest.mark.parametrize("moment", sweep(), ids=lambda m: m.id)
def test_a_signal_at_any_moment_then_the_same_command_equals_the_uninterrupted_run(
    moment, tmp_path, reference
):
    stopped_at, _ = interrupt_and_rerun(moment, tmp_path, reference)
    assert stopped_at == expected_stop(moment)
