"""bench/gpu/gpu_check.py: the GPU acceptance plan checked without a GPU (--dry-run), and its pieces
that turn output into numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.bad_input import BadInput, check

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu"
sys.path.insert(0, str(BENCH))
import gpu_check  # noqa: E402
import gpu_probe  # noqa: E402


def dry_run(*flags: str, **env: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", *flags],
        check=True,
        text=True,
        capture_output=True,
        env={**os.environ, **env},
        timeout=120,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


def test_dry_run_lists_the_whole_check_and_every_trainer_command_parses():
    cmds = dry_run(NPROC="1")
    assert "-m gpu_measure --model RN50-quickgelu --matmul-n 8192" in cmds[0]
    # the README's first command with its arguments unchanged, under python -m (no uv there)
    assert cmds[1].endswith("-m gpu_probe cloob.trainer.cli run --method cloob")
    assert not any(c.startswith("uv ") or " uv run " in c for c in cmds)
    ours = [c for c in cmds if "cloob.trainer.cli run --model" in c]
    assert {(m, p) for m in ("clip", "cloob") for p in ("amp", "amp_bf16")} <= {
        (c.split("--method ")[1].split()[0], c.split("--precision ")[1].split()[0]) for c in ours
    }
    assert sum("--torchcompile" in c for c in ours) == 2
    assert not any("--local-loss" in c for c in ours)  # a no-op on one GPU
    oc = [c for c in cmds if "open_clip_train.main" in c]
    assert {c.split("--precision ")[1].split()[0] for c in oc} == {"amp", "amp_bf16"}
    assert all("RN50-quickgelu" in c and "--batch-size 256" in c for c in oc)
    # torchrun's own parser must not see the trainers' flags (--logs is ambiguous for it)
    assert all("-m -- gpu_probe" in c for c in cmds if "torch.distributed.run" in c)


def test_several_gpus_add_local_loss_runs():
    cmds = dry_run(NPROC="4", BATCH="128")
    assert sum("--local-loss" in c for c in cmds) == 2
    assert all("--nproc-per-node 4" in c for c in cmds if "torch.distributed.run" in c)


def test_cpu_mode_has_the_same_steps_with_micro_settings(tmp_path):
    gpu = gpu_check.plan(gpu_check.Settings.from_env(cpu=False), tmp_path)
    cpu = gpu_check.plan(gpu_check.Settings.from_env(cpu=True), tmp_path)
    assert [s.label for s in cpu] == [s.label for s in gpu]
    assert all("micro-rn" in s.cmd for s in cpu if s.kind in ("ours", "openclip"))
    assert sum(s.timeout_s for s in gpu) > gpu_check.Settings.from_env(cpu=False).budget_s


def test_openclip_rate_is_its_window_means_after_the_first():
    line = (
        "Train Epoch: 0 [ 2560/13056 (20%)] Data (t): {d} Batch (t): {b}, 9999.0/s, "
        "9999.0/s/gpu LR: 0.000100 Logit Scale: 14.286 Contrastive_loss: 5.5 (5.5)"
    )
    out = "\n".join(line.format(d=d, b=b) for d, b in [(0.5, 2.0), (0.01, 0.1), (0.03, 0.2)])
    rates, share = gpu_check.openclip_windows(out, batch=256, nproc=2)
    assert rates == [512 / 0.1, 512 / 0.2]  # the printed rate (last step only) is ignored
    assert share == (0.01 + 0.03) / (0.1 + 0.2)


def test_loader_share_counts_waits_between_the_first_and_last_fetch():
    calls = [(0.0, 5.0), (6.0, 6.5), (7.0, 7.1), (8.0, 8.2), (9.0, 9.0)]
    got = gpu_probe.loader_share(calls, skip=1)
    assert got["batches"] == 3
    assert got["span_s"] == 3.0 and abs(got["wait_s"] - 0.8) < 1e-9
    assert gpu_probe.loader_share(calls[:2], skip=1) is None


def test_a_failed_step_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    s = gpu_check.Settings.from_env(cpu=True)
    py = sys.executable
    steps = [
        gpu_check.Step("card", "card", [py, "-c", "import sys; sys.exit(3)"], 30),
        gpu_check.Step("slow", "readme", [py, "-c", "import time; time.sleep(60)"], 1),
        gpu_check.Step("openclip-clip-amp", "openclip", [py, "-c", "print('no rate')"], 30),
    ]
    payload = gpu_check.run_all(s, steps, tmp_path / "logs", tmp_path / "out")
    assert [r["status"] for r in payload["steps"]] == ["failed", "timeout", "no measurement"]
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [r["label"] for r in saved["steps"]] == ["card", "slow", "openclip-clip-amp"]
    assert saved["steps"][0]["rc"] == 3
    s.budget_s = 0  # past the budget: recorded as skipped, not run
    payload = gpu_check.run_all(s, steps[:1], tmp_path / "logs", tmp_path / "out2")
    assert payload["steps"][0]["status"] == "skipped (budget)"


STEP_IN_A_GROUP = """
import os, subprocess, sys, time
subprocess.Popen(["sleep", "600"])  # a worker in the step's group, as torchrun starts them
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpgrp()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""

CHECK_WITH_ONE_STEP = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import gpu_check
step = gpu_check.Step("card", "card", [sys.executable, "-c", sys.argv[3], sys.argv[2]], 600)
s = gpu_check.Settings.from_env(cpu=True)
out = Path(sys.argv[4])
with gpu_check.stopped_by_signals():
    payload = gpu_check.run_all(s, [step, step], out / "logs", out / "results")
sys.exit(3 if payload["steps"][0]["status"].startswith("interrupted") else 0)
"""


def live_members(group: int) -> list[int]:
    """Processes of process group `group` that are not zombies (an orphan waits for its reaper)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_sigterm_reaches_the_running_steps_group_and_is_recorded(tmp_path):
    import signal
    import time

    pgid_file = tmp_path / "pgid"
    check = subprocess.Popen(
        [sys.executable, "-c", CHECK_WITH_ONE_STEP, str(BENCH), str(pgid_file), STEP_IN_A_GROUP]
        + [str(tmp_path)],
    )
    deadline = time.monotonic() + 60
    while not pgid_file.exists():
        assert check.poll() is None and time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    group = int(pgid_file.read_text())
    try:
        assert len(live_members(group)) == 2  # the step and its worker
        check.send_signal(signal.SIGTERM)
        assert check.wait(timeout=60) == 3
        assert live_members(group) == []
    finally:  # a failing check must not leave the step behind for the next tests
        if live_members(group):
            os.killpg(group, signal.SIGKILL)
    saved = json.loads((tmp_path / "results" / "gpu_check.json").read_text())
    assert [r["status"] for r in saved["steps"]] == [
        "interrupted (SIGTERM)",
        "skipped (interrupted)",
    ]


def entry_point(scratch: Path, *flags: str, wheels: bool = False) -> list:
    """gpu_check.sh in a tree of its own (so a `.whl/` of this checkout does not count); with
    `wheels`, an empty `.whl/` folder beside it."""
    (scratch / "bench" / "gpu").mkdir(parents=True)
    if wheels:
        (scratch / ".whl").mkdir()
    script = scratch / "bench" / "gpu" / "gpu_check.sh"
    script.write_text((BENCH / "gpu_check.sh").read_text())
    return [script, *flags]


ENTRY_CASES = [
    BadInput(
        "air-gapped-without-wheels",
        lambda s: entry_point(s, "--air-gapped"),
        "error: no wheels in .whl/: run 'python3 bench/gpu/gpu_wheels.py' where PyPI is reachable",
    ),
    BadInput(
        "air-gapped-with-an-empty-wheel-folder",
        lambda s: entry_point(s, "--air-gapped", "--cpu", wheels=True),
        "error: no wheels in .whl/",
    ),
    BadInput(
        "device-image-the-old-name",
        lambda s: entry_point(s, "--device-image"),
        "--device-image is now --air-gapped",
    ),
]


@pytest.mark.parametrize("case", ENTRY_CASES, ids=lambda c: c.id)
def test_entry_point_bad_input(case, tmp_path):
    def run(*args):
        done = subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr

    check(case, tmp_path, run)
