"""The README's first command over seeds and methods: how much its result varies, with intervals.

For each method and seed, runs the Quick start command exactly as a user types it
(`uv run trainer run --method M --seed S`, the demo's every other setting; the demo data built
once beforehand, so every run times the same thing), then evaluates the run's last checkpoint
with `benchmarks zeroshot --bootstrap` on each held-out demo task: top-1 with its 95% bootstrap
interval over the test images (docs/statistics.md). Writes bench/results/demo_spread.json: one
measurement per machine (`--label`, default the CPU model and core count), merged by label, so
the same command on a second machine adds its runs beside the first's; the README renders them.

The interval covers test-set resampling only; the spread over seeds (and machines: float
reduction order, thread count) is the training noise, which is why the table shows both.

    uv run python -m bench.studies.demo_spread                       # cloob, clip, siglip × 1, 2, 3
    uv run python -m bench.studies.demo_spread --methods cloob --seeds 1 \\
        --out /tmp/smoke.json -- --max-steps 20                       # a smoke run, elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import machine
from bench.provenance import RESULTS, ROOT, record

OUT = RESULTS / "demo_spread.json"
# What the demo's result depends on besides this script: its recipe and its data.
MEASURES = (
    "packages/trainer/src/cloob/trainer/demo.py",
    "packages/dataprep/src/cloob/dataprep/sources/demo.py",
)


def run(cmd: list[str], log: Path) -> float:
    """Wall seconds of one command; its output to `log`; a failure ends the script."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {rc}; its output: {log}")
    return time.perf_counter() - t0


def demo_tasks(run_dir: Path) -> dict[str, Path]:
    """The held-out task folders of the demo a run trained on (`<demo>/benchmark/<task>/`)."""
    config = json.loads((run_dir / "config.json").read_text())
    demo = Path(config["data"]["train_data"])
    return {p.name: p for p in sorted((demo / "benchmark").iterdir()) if p.is_dir()}


def evaluate(ckpt: Path, task: Path, out: Path, log: Path, resamples: int) -> dict[str, object]:
    """Top-1 % and its bootstrap interval on one task, as `benchmarks zeroshot` reports them."""
    cmd = ["uv", "run", "benchmarks", "zeroshot", "--ckpt", str(ckpt), "--dataset-dir", str(task)]
    run([*cmd, "--bootstrap", str(resamples), "--out", str(out)], log)
    (rec,) = json.loads((out / "results.json").read_text())["records"]
    classes = (task / "classnames.txt").read_text().split("\n")
    return {  # benchmarks reports fractions; the table shows percent
        "top1": 100 * rec["metrics"]["acc1"],
        "interval": [100 * x for x in rec["intervals"]["acc1"]],
        "images": rec["n_images"],
        "chance": 100 / len([c for c in classes if c.strip()]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["cloob", "clip", "siglip"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--label", help="this machine's name in the table (default: CPU, cores)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples per interval")
    p.add_argument("--work", type=Path, help="run folders and logs (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=OUT, help="the results file (merged by --label)")
    p.add_argument(
        "trainer_args", nargs="*", help="more trainer flags after `--` (a shorter smoke run)"
    )
    args = p.parse_args()
    info = machine()
    label = args.label or f"{info['cpu']}, {info['cores']} cores"
    work = args.work or Path(tempfile.mkdtemp(prefix="demo-spread-"))
    work.mkdir(parents=True, exist_ok=True)
    prov = record(Path(__file__), MEASURES)  # before the runs: the code they ran
    runs: list[dict[str, object]] = []
    for seed in args.seeds:
        for method in args.methods:  # methods alternate within a seed: drift hits all alike
            name = f"{method}-s{seed}"
            cmd = ["uv", "run", "trainer", "run", "--method", method, "--seed", str(seed)]
            cmd += ["--logs", str(work / "logs"), "--name", name, *args.trainer_args]
            if not runs:  # build (or find) the demo data first, untimed
                warm = ["uv", "run", "trainer", "run", "--max-steps", "1", "--logs", str(work)]
                run([*warm, "--name", "warm-up"], work / "warm-up.log")
            load = round(os.getloadavg()[0], 1)
            wall = run(cmd, work / f"{name}.log")
            run_dir = work / "logs" / name
            tasks = {
                task: evaluate(
                    run_dir / "checkpoints" / "latest.pt",
                    folder,
                    work / "eval" / name / task,
                    work / f"{name}-{task}.log",
                    args.bootstrap,
                )
                for task, folder in demo_tasks(run_dir).items()
            }
            runs.append(
                {"method": method, "seed": seed, "wall_s": wall, "load": load, "tasks": tasks}
            )
            accs = ", ".join(f"{t} {r['top1']:.1f}%" for t, r in tasks.items())
            print(f"{name}: {wall:.0f} s, {accs}", flush=True)
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = [m for m in payload.get("measurements", []) if m["label"] != label]
    entry = {
        "label": label,
        "machine": info,
        "provenance": prov,
        "command": "uv run trainer run --method M --seed S " + " ".join(args.trainer_args),
        "runs": runs,
    }
    payload = {
        "benchmark": "demo_spread",
        "title": "The Quick start command over methods × seeds × machines: held-out zero-shot "
        "top-1 % with 95% bootstrap intervals over the test images",
        "measurements": [*kept, entry],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}; render the README with: uv run python -m bench.render_docs")


if __name__ == "__main__":
    main()
