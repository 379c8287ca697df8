"""GPU acceptance in one go, sized for a short run: ≤ 6 minutes on one H200 with the defaults.

Steps, each with its own timeout, in this order of importance (a failing step is recorded and the
next one runs;
a step that would start past the budget is recorded as skipped):

1. `card`: the device, its measured bf16 matmul rate (8192³) and the model's training FLOPs per
   sample (gpu_measure.py);
2. `readme`: the README's first command with its arguments unchanged (`trainer run --method cloob`:
   the demo data, auto precision, zero-shot table) — must exit 0 and print its table;
3. RN50 at 224 px on synthetic data: ours CLIP and CLOOB, samples/s for `amp_bf16`, then `amp`, and
   OpenCLIP's own trainer (`open_clip_train.main`) on the same model, batch, precision and data for
   the ratio ours / OpenCLIP; on several GPUs also `--local-loss`;
4. `--torchcompile` (amp_bf16): CLOOB after the amp_bf16 runs, CLIP last (compiling is slow).

Per run: samples/s (the trainer's logged windows after the first; OpenCLIP's "Batch (t)" windows
after the first), MFU = samples/s × training FLOPs per sample against the measured matmul rate and
against the datasheet's dense bf16 peak, peak GPU memory, and the share of step time the training
loop waited on its data loader (gpu_probe.py times every DataLoader `next()`, the same way
for both trainers; OpenCLIP's own "Data (t)" share is kept beside it).

Every step runs as `python -m ...` under the interpreter that runs this script (gpu_probe.py
wraps each one to read memory and loader waits). Results are rewritten as each step ends, so a
killed run still returns what it measured: `gpu_check.json` (everything), `gpu_check.md` (the
table) and `gpu_check.log` (each step's output, tail) in `$OUT` when set, else `bench/results/`.
SIGTERM or SIGINT (a job's time limit) is passed on to the running step's whole process group
(torchrun and its workers), which is recorded as interrupted; the check then exits non-zero.

    bash bench/gpu/gpu_check.sh --air-gapped    # on an air-gapped GPU node (README.md here)
    bash bench/gpu/gpu_check.sh                 # on a GPU box with uv
    bash bench/gpu/gpu_check.sh --cpu           # the same steps, micro models, 3 steps, on the CPU
    bash bench/gpu/gpu_check.sh --dry-run       # the commands (every trainer command parsed)

Settings (environment): NPROC=1 BATCH=256 STEPS=50 WORKERS=12 BUDGET_S=345; PEAK_TFLOPS to
override the datasheet peak of an unlisted card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent  # gpu_probe and gpu_measure run as modules from here
README_COMMAND = "uv run trainer run --method cloob"  # as the README writes it
README_ARGS = ["run", "--method", "cloob"]
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by device-name substring (datasheets).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 125.0}
_OC_WINDOW = re.compile(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+),")
_ERROR_TAIL = 40  # lines of a failed step's output kept in the JSON


@dataclass
class Settings:
    cpu: bool
    nproc: int
    batch: int
    steps: int
    workers: int
    budget_s: float
    model: str  # ours (the trainer resolves RN50 to RN50-quickgelu)
    oc_model: str  # OpenCLIP's name for the same architecture
    log_every: int
    matmul_n: int
    readme_extra: list[str]  # appended to the README's arguments in the CPU mode only

    @classmethod
    def from_env(cls, cpu: bool) -> Settings:
        """The mode's defaults; NPROC, BATCH, STEPS, WORKERS and BUDGET_S override them."""
        d = _CPU_DEFAULTS if cpu else _GPU_DEFAULTS
        env = os.environ
        return cls(
            cpu=cpu,
            nproc=int(env.get("NPROC", "1")),
            batch=int(env.get("BATCH", d["batch"])),
            steps=int(env.get("STEPS", d["steps"])),
            workers=int(env.get("WORKERS", d["workers"])),
            budget_s=float(env.get("BUDGET_S", d["budget_s"])),
            model=d["model"],
            oc_model=d["oc_model"],
            log_every=int(d["log_every"]),
            matmul_n=int(d["matmul_n"]),
            readme_extra=d["readme_extra"].split(),
        )


# CPU mode is tiny: the same steps and output, proven here without a GPU.
_CPU_DEFAULTS = {"batch": "4", "steps": "3", "workers": "0", "budget_s": "2400",
                 "model": "micro-rn", "oc_model": "micro-rn", "log_every": "1", "matmul_n": "256",
                 "readme_extra": "--demo-samples 400 --max-steps 3"}  # fmt: skip
_GPU_DEFAULTS = {"batch": "256", "steps": "50", "workers": "12", "budget_s": "345",
                 "model": "RN50", "oc_model": "RN50-quickgelu", "log_every": "10",
                 "matmul_n": "8192", "readme_extra": ""}  # fmt: skip


@dataclass
class Step:
    label: str
    kind: str  # "card" | "readme" | "ours" | "openclip"
    cmd: list[str]
    timeout_s: float
    method: str = ""
    precision: str = ""
    flags: list[str] = field(default_factory=list)


def plan(s: Settings, logs: Path, python: str = sys.executable) -> list[Step]:
    """Every command the check runs, in order of importance (the budget cuts the tail)."""
    probe = [python, "-m", "gpu_probe"]
    torchrun = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(s.nproc),
        "-m",
        "--",
        "gpu_probe",
    ]  # `--`: torchrun's parser would take --logs
    samples = s.batch * s.nproc * (s.steps + 1)
    slow = 4 if s.cpu else 1  # the CPU mode's steps are tiny but the machine is slow and shared
    steps = [
        Step(
            "card",
            "card",
            [python, "-m", "gpu_measure", "--model", s.oc_model, "--matmul-n", str(s.matmul_n)],
            60 * slow,
        ),
        Step(
            "readme",
            "readme",
            [*probe, "cloob.trainer.cli", *README_ARGS, *s.readme_extra],
            180 * slow,
        ),
    ]

    def ours(method: str, precision: str, flags: list[str], timeout: float) -> Step:
        name = "-".join([method, precision, *(f.strip("-") for f in flags)])
        cmd = [
            *torchrun,
            "cloob.trainer.cli",
            "run",
            "--model",
            s.model,
            "--method",
            method,
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            str(samples),
            "--batch-size",
            str(s.batch),
            "--precision",
            precision,
            "--max-steps",
            str(s.steps),
            "--warmup",
            "10",
            "--workers",
            str(s.workers),
            "--logs",
            str(logs),
            "--name",
            name,
            "--save-frequency",
            "0",
            "--report-to",
            "none",
            "--log-every-n-steps",
            str(s.log_every),
            "--no-progress",
            *flags,
        ]
        return Step(name, "ours", cmd, timeout, method, precision, flags)

    def openclip(precision: str) -> Step:
        cmd = [
            *torchrun,
            "open_clip_train.main",
            "--model",
            s.oc_model,
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            str(samples),
            "--batch-size",
            str(s.batch),
            "--precision",
            precision,
            "--epochs",
            "1",
            "--warmup",
            "10",
            "--workers",
            str(s.workers),
            "--log-every-n-steps",
            str(s.log_every),
            "--save-frequency",
            "0",
            "--report-to",
            "",
            "--logs",
            str(logs / "openclip"),
            "--name",
            f"oc-{precision}",
            "--gather-with-grad",
        ]
        return Step(f"openclip-clip-{precision}", "openclip", cmd, 60 * slow, "clip", precision)

    # a cold inductor cache on 2 shared cores: 431 s measured for the first CPU compile
    compile_s = 900 if s.cpu else 120
    steps += [
        ours("clip", "amp_bf16", [], 60 * slow),
        openclip("amp_bf16"),
        ours("cloob", "amp_bf16", [], 60 * slow),
        ours("cloob", "amp_bf16", ["--torchcompile"], compile_s),
    ]
    if s.nproc > 1:
        steps += [ours(m, "amp_bf16", ["--local-loss"], 60 * slow) for m in ("clip", "cloob")]
    steps += [
        ours("clip", "amp", [], 60 * slow),
        openclip("amp"),
        ours("cloob", "amp", [], 60 * slow),
        ours("clip", "amp_bf16", ["--torchcompile"], compile_s),
    ]
    return steps


def check_parses(steps: list[Step]) -> None:
    """Every trainer command's flags are ones `trainer run` accepts (no GPU needed)."""
    import typer

    from cloob.trainer.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)  # typer's own click: the app's subcommands
    for step in steps:
        if step.kind in ("ours", "readme"):
            sub, *args = step.cmd[step.cmd.index("cloob.trainer.cli") + 1 :]
            command = group.get_command(group.make_context("trainer", [sub]), sub)
            assert command is not None, f"trainer has no command {sub!r}"
            command.make_context(sub, args, resilient_parsing=False)


# ----------------------------------------------------------------------------------- running


def child_env(probe_dir: Path) -> dict[str, str]:
    path = [str(BENCH), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        "PYTHONUNBUFFERED": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "GPU_PROBE_DIR": str(probe_dir),
    }


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the check (a job's time limit, Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise Interrupted while the check runs. A step runs in a process group
    of its own (setsid), so neither reaches it by itself: `execute` passes them on to the group."""
    before = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def execute(
    step: Step, timeout: float, log: Path, probe_dir: Path
) -> tuple[str, int | None, float]:
    """Run one step in its own process group (torchrun's workers die with it on a timeout or when
    the check is interrupted): (status, exit code, wall seconds); its output goes to `log`."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            step.cmd,
            cwd=ROOT,
            env=child_env(probe_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = None, "timeout"
        except Interrupted as stop:
            with ignoring_signals():  # a second SIGTERM must not leave the group half-killed
                _kill_group(proc, stop.signum)
            rc, status = proc.returncode, f"interrupted ({stop})"
    return status, rc, time.perf_counter() - t0


@contextlib.contextmanager
def ignoring_signals() -> Iterator[None]:
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _kill_group(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """`first` to the step's whole group, 10 s to end (torchrun passes it to its workers), then
    SIGKILL."""
    for sig, grace in ((first, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------------- measuring


def ours_rates(logs: Path, name: str) -> list[float]:
    """samples/s of the logged windows after the first (start-up, cudnn autotuning)."""
    rows = [json.loads(x) for x in (logs / name / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]


def openclip_windows(output: str, batch: int, nproc: int) -> tuple[list[float], float | None]:
    """samples/s of OpenCLIP's logged windows after the first, from its mean step time per window
    (its printed rate is the last step's alone), and its own data-time share."""
    windows = [(float(d), float(b)) for d, b in _OC_WINDOW.findall(output)][1:]
    rates = [batch * nproc / b for _, b in windows if b > 0]
    share = (sum(d for d, _ in windows) / sum(b for _, b in windows)) if windows else None
    return rates, share


def probe_results(folder: Path) -> dict[str, object]:
    """Rank 0's loader share and the largest peak memory over the ranks."""
    probes = [json.loads(p.read_text()) for p in sorted(folder.glob("probe-*.json"))]
    if not probes:
        return {}
    rank0 = min(probes, key=lambda p: p["rank"])
    out: dict[str, object] = {
        "loader": rank0.get("loader"),
        "modules": rank0.get("modules"),
        "max_rss_mib": max(p["max_rss_mib"] for p in probes),
    }
    peaks = [p["gpu_peak_allocated_mib"] for p in probes if "gpu_peak_allocated_mib" in p]
    if peaks:
        out["gpu_peak_allocated_mib"] = max(peaks)
        out["gpu_peak_reserved_mib"] = max(p["gpu_peak_reserved_mib"] for p in probes)
    return out


def readme_summary(output: str) -> dict[str, object]:
    folder = re.search(r"run folder: (\S+)", output)
    metrics: dict[str, float] = {}
    if folder:
        path = Path(folder.group(1))
        path = path if path.is_absolute() else ROOT / path
        for line in (path / "metrics.jsonl").read_text().splitlines():
            metrics.update(json.loads(line))
    table = output[output.find("zero-shot (final)") :] if "zero-shot (final)" in output else ""
    return {
        "zeroshot_table": bool(table),
        "table_text": table.strip()[:4000],
        **{k: v for k, v in metrics.items() if k.endswith("/acc1")},
    }


def datasheet_peak(card: str) -> float | None:
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    return next((v for k, v in PEAK_TFLOPS.items() if k in card), None)


def measure(step: Step, s: Settings, output: str, logs: Path, probe: dict, card: dict) -> dict:
    """What a finished training step measured (raises if its output lacks it)."""
    if step.kind == "card":
        card.update(json.loads(output.strip().splitlines()[-1]))
        card["datasheet_bf16_tflops"] = datasheet_peak(card["device"])
        return {}
    if step.kind == "readme":
        return readme_summary(output)
    oc_share = None
    if step.kind == "ours":
        rates = ours_rates(logs, step.label)
    else:
        rates, oc_share = openclip_windows(output, s.batch, s.nproc)
    rate = statistics.mean(rates)
    flops = card.get("train_flops_per_sample")
    out = {"samples_per_s": rate, "windows": rates}
    for key, peak in (
        ("mfu_measured", card.get("matmul_bf16_tflops")),
        ("mfu_datasheet", card.get("datasheet_bf16_tflops")),
    ):
        out[key] = rate * flops / (peak * 1e12) / s.nproc if flops and peak else None
    loader = probe.get("loader") or {}
    out["loader_share"] = loader.get("share")
    if oc_share is not None:
        out["openclip_data_time_share"] = oc_share
    return out


# ----------------------------------------------------------------------------------- reporting


def table_rows(records: list[dict]) -> list[list[object]]:
    oc = {
        r["precision"]: r["samples_per_s"]
        for r in records
        if r["kind"] == "openclip" and r.get("samples_per_s")
    }
    rows = []
    for r in records:
        if r["kind"] not in ("ours", "openclip"):
            continue
        rate = r.get("samples_per_s")
        base = oc.get(r["precision"])
        rows.append(
            [
                r["label"],
                r["status"],
                _f(rate, ".0f" if rate and rate >= 100 else ".3g"),
                _f(rate / base if rate and base else None, ".2f"),
                _pct(r.get("mfu_measured")),
                _pct(r.get("mfu_datasheet")),
                _f((r.get("gpu_peak_allocated_mib") or 0) / 1024 or None, ".1f"),
                _f((r.get("max_rss_mib") or 0) / 1024 or None, ".1f"),
                _pct(r.get("loader_share")),
                _f(r.get("wall_s"), ".0f"),
            ]
        )
    return rows


COLUMNS = [
    "run",
    "status",
    "samples/s",
    "× OpenCLIP",
    "MFU (matmul)",
    "MFU (datasheet)",
    "GPU peak GiB",
    "RSS GiB",
    "loader wait",
    "wall s",
]


def _f(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def markdown(payload: dict) -> str:
    s, card = payload["settings"], payload["card"]
    lines = [
        f"# GPU check ({payload['mode']} mode)",
        "",
        f"{s['model']} on {s['nproc']} × {card.get('device', '?')}, batch {s['batch']}/device, "
        f"{s['steps']} steps, synthetic data; × OpenCLIP = / OpenCLIP's trainer at the same "
        f"precision; matmul bf16 {_f(card.get('matmul_bf16_tflops'), '.4g')} TFLOP/s "
        f"measured, datasheet {_f(card.get('datasheet_bf16_tflops'), '.0f')}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows(payload["steps"])]
    readme = next((r for r in payload["steps"] if r["kind"] == "readme"), None)
    if readme:
        lines += [
            "",
            f"README first command: {readme['status']}, {_f(readme.get('wall_s'), '.0f')} s",
            "",
            "```",
            readme.get("table_text", ""),
            "```",
        ]
    return "\n".join(lines) + "\n"


def write_results(folder: Path, payload: dict, logs: list[str]) -> None:
    """The three result files, each written under a temporary name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("gpu_check.json", json.dumps(payload, indent=2, default=str) + "\n"),
        ("gpu_check.md", markdown(payload)),
        ("gpu_check.log", "\n".join(logs)),
    ):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------------- main


def run_all(s: Settings, steps: list[Step], logs: Path, results: Path) -> dict:
    payload: dict[str, Any] = {
        "benchmark": "gpu_check",
        "mode": "cpu" if s.cpu else "gpu",
        "readme_command": README_COMMAND,
        "settings": asdict(s),
        "host": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "executable": sys.executable,
        },
        "card": {},
        "steps": [],
    }
    step_logs: list[str] = []
    started = time.perf_counter()
    interrupted = False
    for step in steps:
        left = s.budget_s - (time.perf_counter() - started)
        record: dict[str, Any] = {
            "label": step.label,
            "kind": step.kind,
            "method": step.method,
            "precision": step.precision,
            "flags": step.flags,
            "cmd": shlex.join(step.cmd),
        }
        if interrupted:
            record["status"] = "skipped (interrupted)"
        elif left < 15:
            record["status"] = "skipped (budget)"
        else:
            record.update(
                run_step(step, s, min(step.timeout_s, left), logs, payload["card"], step_logs)
            )
        payload["steps"].append(record)
        interrupted = interrupted or str(record["status"]).startswith("interrupted")
        payload["elapsed_s"] = time.perf_counter() - started
        write_results(results, payload, step_logs)
        print(
            f"{step.label:32s} {record['status']:18s} {_f(record.get('wall_s'), '.0f'):>4s} s  "
            f"{_f(record.get('samples_per_s'), '.0f')} samples/s",
            flush=True,
        )
    return payload


def run_step(
    step: Step, s: Settings, timeout: float, logs: Path, card: dict, step_logs: list[str]
) -> dict:
    probe_dir = logs / "probes" / step.label
    log = logs / f"{step.label}.log"
    status, rc, wall = execute(step, timeout, log, probe_dir)
    output = log.read_text(errors="replace")
    record: dict[str, object] = {
        "status": status,
        "rc": rc,
        "wall_s": wall,
        "timeout_s": timeout,
        **probe_results(probe_dir),
    }
    step_logs.append(
        f"=== {step.label}: {status} (rc {rc}, {wall:.0f} s)\n$ {shlex.join(step.cmd)}\n"
        f"{tail(output, 200)}\n"
    )
    if status == "ok":
        try:
            record.update(measure(step, s, output, logs, record, card))
        except (OSError, ValueError, KeyError, statistics.StatisticsError) as err:
            record["status"] = "no measurement"
            record["error"] = f"{type(err).__name__}: {err}"
    if record["status"] != "ok":
        record["output_tail"] = tail(output, _ERROR_TAIL)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="the same steps on the CPU: micro models, 3 steps (proves the path)",
    )
    args = parser.parse_args()
    s = Settings.from_env(args.cpu)
    if args.dry_run:
        steps = plan(s, Path(tempfile.gettempdir()) / "gpu_check-LOGS")
        check_parses(steps)
        for step in steps:
            print(f"# {step.label} (timeout {step.timeout_s:.0f} s)\n{shlex.join(step.cmd)}")
        return
    logs = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    steps = plan(s, logs)
    results = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    try:
        with stopped_by_signals():
            payload = run_all(s, steps, logs, results)
    except Interrupted as stop:  # between two steps: every finished one is already written
        raise SystemExit(f"error: interrupted ({stop}); results so far in {results}") from None
    print(markdown(payload))
    stopped = [r["label"] for r in payload["steps"] if r["status"].startswith("interrupted")]
    if stopped:
        raise SystemExit(f"error: interrupted during {stopped[0]} (see {results}/gpu_check.json)")
    failed = [r["label"] for r in payload["steps"] if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"error: steps not ok: {', '.join(failed)} (see {results}/gpu_check.json)")


if __name__ == "__main__":
    main()
