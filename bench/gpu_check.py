"""GPU acceptance in one go (≤ 8 minutes on one H100/H200 with the defaults):

1. the README's first command, unchanged (`uv run trainer run --method cloob`: auto precision =
   amp, zero-shot during training) — must exit 0 and print its zero-shot table;
2. RN50 at 224 px, CLIP and CLOOB, samples/s for `amp` and `amp_bf16`, plus `--torchcompile`
   (amp_bf16) and, on several GPUs, `--local-loss` (amp_bf16);
3. OpenCLIP's own trainer (`open_clip_train.main`) on the same model, batch, precision and
   synthetic data, for the ratio ours / OpenCLIP;
4. MFU: samples/s × training FLOPs per sample (3 × the forward, counted by torch's
   FlopCounterMode) ÷ the card's dense bf16/fp16 peak.

Writes `bench/results/gpu_check.json` and prints a table. `--dry-run` prints the commands (and
checks that every trainer command parses) without a GPU.

    bash bench/gpu_check.sh [--dry-run]        # NPROC=8 BATCH=256 STEPS=30 WORKERS=12 to change
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_COMMAND = ["uv", "run", "trainer", "run", "--method", "cloob"]
# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s, by device-name substring.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 125.0}
_OC_RATE = re.compile(r"Batch \(t\): [\d.]+, ([\d.]+)/s")


@dataclass
class Run:
    label: str
    cmd: list[str]
    side: str  # "ours" | "openclip" | "readme"
    method: str = ""
    precision: str = ""
    flags: list[str] = field(default_factory=list)


def settings() -> dict[str, int]:
    env = os.environ
    return {"nproc": int(env.get("NPROC", "1")), "batch": int(env.get("BATCH", "256")),
            "steps": int(env.get("STEPS", "30")), "workers": int(env.get("WORKERS", "12"))}


def plan(s: dict[str, int], logs: Path) -> list[Run]:
    """Every command the check runs, in order."""
    torchrun = ["uv", "run", "torchrun", "--standalone", "--nproc-per-node", str(s["nproc"]), "-m"]
    samples = s["batch"] * s["nproc"] * (s["steps"] + 1)
    runs = [Run("README first command", README_COMMAND, "readme")]
    variants = [(m, p, []) for m in ("clip", "cloob") for p in ("amp", "amp_bf16")]
    variants += [(m, "amp_bf16", ["--torchcompile"]) for m in ("clip", "cloob")]
    if s["nproc"] > 1:
        variants += [(m, "amp_bf16", ["--local-loss"]) for m in ("clip", "cloob")]
    for method, precision, flags in variants:
        name = "-".join([method, precision, *(f.strip("-") for f in flags)])
        cmd = [*torchrun, "--", "cloob.trainer.cli", "run", "--model", "RN50", "--method", method,
               "--dataset-type", "synthetic", "--train-num-samples", str(samples),
               "--batch-size", str(s["batch"]), "--precision", precision,
               "--max-steps", str(s["steps"]), "--warmup", "10", "--workers", str(s["workers"]),
               "--logs", str(logs), "--name", name, "--save-frequency", "0", "--report-to", "none",
               "--log-every-n-steps", "10", "--no-progress", *flags]
        runs.append(Run(name, cmd, "ours", method, precision, flags))
    oc = [*torchrun, "open_clip_train.main", "--model", "RN50-quickgelu", "--dataset-type",
          "synthetic", "--train-num-samples", str(samples), "--batch-size", str(s["batch"]),
          "--precision", "amp", "--epochs", "1", "--warmup", "10", "--workers", str(s["workers"]),
          "--log-every-n-steps", "10", "--save-frequency", "0", "--report-to", "",
          "--logs", str(logs / "openclip"), "--name", "oc", "--gather-with-grad"]
    runs.append(Run("openclip-clip-amp", oc, "openclip", "clip", "amp"))
    return runs


def check_parses(runs: list[Run]) -> None:
    """Every trainer command's flags are ones `trainer run` accepts (no GPU needed)."""
    import typer

    from cloob.trainer.cli import app

    command = typer.main.get_command(app)
    for run in runs:
        if run.side == "ours":
            args = run.cmd[run.cmd.index("cloob.trainer.cli") + 1:]
            command.make_context("trainer", list(args), resilient_parsing=False)


def execute(run: Run, timeout: int) -> tuple[float, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(run.cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"{run.label}: exit {proc.returncode}")
    return wall, proc.stdout


def ours_rate(logs: Path, name: str) -> float:
    """Mean samples/s of the logged windows after the first (start-up, cudnn autotuning)."""
    rows = [json.loads(x) for x in (logs / name / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
    return statistics.mean(rates)


def openclip_rate(output: str) -> float:
    rates = [float(x) for x in _OC_RATE.findall(output)][1:]
    return statistics.mean(rates)


def train_flops_per_sample() -> float:
    """3 × forward FLOPs of RN50 (224 px) + its text tower (77 tokens), per sample."""
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = open_clip.create_model("RN50-quickgelu")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    return 3.0 * counter.get_total_flops()


def peak_flops() -> tuple[str, float | None]:
    import torch

    name = torch.cuda.get_device_name(0)
    if os.environ.get("PEAK_TFLOPS"):
        return name, float(os.environ["PEAK_TFLOPS"]) * 1e12
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return name, peak * 1e12 if peak else None


def readme_summary(output: str) -> dict[str, object]:
    folder = re.search(r"run folder: (\S+)", output)
    metrics: dict[str, float] = {}
    if folder:
        for line in (ROOT / folder.group(1) / "metrics.jsonl").read_text().splitlines():
            metrics.update(json.loads(line))
    return {"zeroshot_table": "zero-shot (final)" in output,
            **{k: v for k, v in metrics.items() if k.endswith("/acc1")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per command")
    args = parser.parse_args()
    s = settings()
    logs = Path(tempfile.gettempdir()) / f"gpu_check-{os.getpid()}"  # the trainers create it
    runs = plan(s, logs)
    if args.dry_run:
        check_parses(runs)
        for run in runs:
            print(f"# {run.label}\n{shlex.join(run.cmd)}")
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (use --dry-run to see the commands)")
    card, peak = peak_flops()
    flops = train_flops_per_sample()
    results, readme = [], {}
    for run in runs:
        wall, output = execute(run, args.timeout)
        print(f"{run.label}: {wall:.0f} s", flush=True)
        if run.side == "readme":
            readme = {"wall_s": wall, **readme_summary(output)}
            continue
        rate = ours_rate(logs, run.label) if run.side == "ours" else openclip_rate(output)
        results.append({"run": run.label, "side": run.side, "method": run.method,
                        "precision": run.precision, "flags": run.flags, "samples_per_s": rate,
                        "mfu": rate * flops / peak if peak else None, "wall_s": wall})
    report(results, readme, s, card, peak, flops)


def report(results: list[dict], readme: dict, s: dict, card: str, peak: float | None,
           flops: float) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import report as write_report

    oc = next(r["samples_per_s"] for r in results if r["side"] == "openclip")
    rows = [[r["run"], r["samples_per_s"], r["samples_per_s"] / oc,
             f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a", r["wall_s"]]
            for r in results]
    write_report("gpu_check", f"RN50 224 px on {s['nproc']} × {card}, batch {s['batch']}/GPU, "
                 f"{s['steps']} steps, synthetic data (× = / OpenCLIP amp CLIP)",
                 ["run", "samples/s", "× OpenCLIP", "MFU", "wall s"], rows,
                 {"readme_first_command": readme, "settings": s, "card": card,
                  "peak_flops": peak, "train_flops_per_sample": flops, "runs": results})
    print(f"README first command: {readme}")


if __name__ == "__main__":
    main()
