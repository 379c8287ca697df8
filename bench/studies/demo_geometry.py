"""Embedding geometry and retrieval of the demo's CLIP and CLOOB checkpoints (docs/evaluation.md).

Trains the Quick start command for both methods (`uv run trainer run --method M`, the demo's
default seed unless `--seed`), makes 1,000 fresh demo scenes (`dataprep fetch demo --seed 7`), and
runs `benchmarks analyze` and `benchmarks retrieval` on both checkpoints with those scenes.
Writes bench/results/demo_geometry.json (one row per checkpoint: the analysis metrics and the
retrieval mean recall) and copies analyze's pictures beside it, into bench/results/demo_geometry/.

    uv run python -m bench.studies.demo_geometry [--seed 1234] [--work DIR] [-- TRAINER FLAGS]

`--work DIR` keeps the runs; a second call with the same DIR (same checkout) reuses the checkpoints
and scenes already there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import report
from bench.provenance import RESULTS, ROOT

MEASURES = (
    "packages/trainer/src/cloob/trainer/demo.py",
    "packages/dataprep/src/cloob/dataprep/sources/demo.py",
)
PICTURES = ("spectra.png", "projection.png")
# analyze's metric → column
ANALYSIS = {
    "alignment": "alignment ↓",
    "uniformity_image": "uniformity img ↓",
    "uniformity_text": "uniformity txt ↓",
    "modality_gap": "modality gap",
    "effective_rank_image": "eff. rank img",
    "effective_rank_text": "eff. rank txt",
    "positive_cosine": "positive cos",
    "hardest_negative_cosine_i2t": "hardest neg cos i→t",
    "hardest_negative_cosine_t2i": "t→i",
}


def run(cmd: list[str], log: Path) -> None:
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {rc}; its output: {log}")


def records(path: Path) -> dict[str, dict]:
    """label → record of a benchmarks results file."""
    return {r["label"]: r for r in json.loads(path.read_text())["records"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, help="training seed (default: the demo's)")
    p.add_argument("--work", type=Path, help="runs and logs (default: a temporary folder)")
    p.add_argument("trainer_args", nargs="*", help="more trainer flags after `--` (a shorter run)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="demo-geometry-"))
    work.mkdir(parents=True, exist_ok=True)
    methods = ("clip", "cloob")
    seed = ["--seed", str(args.seed)] if args.seed is not None else []
    for m in methods:  # a checkpoint already in --work (a run cut short later) is reused
        if not (work / "logs" / m / "checkpoints" / "latest.pt").is_file():
            cmd = ["uv", "run", "trainer", "run", "--method", m, *seed, *args.trainer_args]
            run([*cmd, "--logs", str(work / "logs"), "--name", m], work / f"train-{m}.log")
    val = work / "demo-val"
    if not val.is_dir():
        run(
            ["uv", "run", "dataprep", "fetch", "demo", "--out", str(val), "--samples", "1000"]
            + ["--seed", "7"],
            work / "demo-val.log",
        )
    ckpts = [
        a for m in methods for a in ("--ckpt", str(work / "logs" / m / "checkpoints" / "latest.pt"))
    ]
    for task, inputs in (
        ("analyze", ["--data", str(val), "--max-images", "1000"]),
        ("retrieval", ["--data", str(val)]),  # every scene: it has no --max-images
    ):
        cmd = ["uv", "run", "benchmarks", task, *ckpts, *inputs, "--out", str(work / task)]
        run(cmd, work / f"{task}.log")
    analysis, retrieval = (
        records(work / "analyze" / "results.json"),
        records(work / "retrieval" / "results.json"),
    )
    rows = []
    for label, rec in analysis.items():
        method = (rec.get("method") or label).upper()
        row = [method, *(rec["metrics"][k] for k in ANALYSIS)]
        rows.append([*row, f"{100 * retrieval[label]['metrics']['mean_recall']:.1f}%"])
    pictures = RESULTS / "demo_geometry"
    pictures.mkdir(parents=True, exist_ok=True)
    for name in PICTURES:
        shutil.copy(work / "analyze" / name, pictures / name)
    flags = " ".join(["trainer run", *seed, *args.trainer_args])
    report(
        "demo_geometry",
        "Embedding geometry of the demo's CLIP and CLOOB checkpoints on 1,000 fresh scenes "
        f"(benchmarks analyze; retrieval mean recall; `{flags}`)",
        ["checkpoint", *ANALYSIS.values(), "retrieval mean recall"],
        rows,
        extra={"seed": args.seed, "pictures": [f"demo_geometry/{n}" for n in PICTURES]},
        measures=MEASURES,
    )


if __name__ == "__main__":
    main()
