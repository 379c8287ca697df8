"""Training throughput on CPU: our `trainer run` (clip and cloob) vs OpenCLIP's own trainer.

Same model config (tiny-vit, exported to OpenCLIP as `--model local-dir:DIR`), same shards (the
demo set, 20 × 1000 JPEGs at 64 px), same batch size, workers, fp32, steps, lr/warmup/wd/Adam
betas and cosine schedule, and the same intra-op thread count (`--threads`, default 1: on a
2-core machine shared with other jobs, two OpenMP threads per trainer collapse to a fraction of the
one-thread speed whenever another process holds a core; pass 0 for torch's default). Each run is a
fresh subprocess; steady-state samples/s is the median of
the per-step throughput after the first `--skip` steps (ours: metrics.jsonl `samples_per_s` logged
every step; OpenCLIP: its per-step log lines). Sides alternate within each round and the order
reverses every round, so a noisy shared machine affects all alike; ratios are taken per round.
Shards are cached under $BENCH_CACHE (default /tmp/cloob-bench-cache).

    uv run python -m bench.compare.train_step [--batch 32] [--workers 2] [--steps 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import report, run_measured
from cloob.trainer.models import export_open_clip_dir

SIDES = ("openclip", "ours-clip", "ours-cloob")
_OC_STEP = re.compile(r"Batch \(t\): [\d.]+, ([\d.]+)/s")


def demo_shards(cache: Path, samples: int = 20_000) -> Path:
    """The demo shards, made once and reused: `dataprep fetch demo`."""
    out = cache / f"demo-{samples}"
    if not (out / "sizes.json").is_file():
        dataprep = Path(sys.executable).with_name("dataprep")
        subprocess.run(
            [str(dataprep), "fetch", "demo", "--out", str(out), "--samples", str(samples)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


THREADS = 1


def _env() -> dict[str, str]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
    return env


def _recipe(a: argparse.Namespace) -> list[str]:
    """The seed, schedule and AdamW settings both trainers get, flag for flag."""
    return ["--seed", "0", "--lr", "5e-4", "--warmup", str(a.warmup), "--wd", "0.1",
            "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6"]  # fmt: skip


def run_openclip(a: argparse.Namespace, data: Path, model_dir: Path, logs: Path, tag: str):
    n_shards = len(json.loads((data / "sizes.json").read_text()))
    shards = str(data / "shards" / f"{{00000..{n_shards - 1:05d}}}.tar")
    cmd = [
        sys.executable,
        "-m",
        "open_clip_train.main",
        "--model",
        f"local-dir:{model_dir}",
        "--train-data",
        shards,
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        str(a.steps * a.batch),
        "--batch-size",
        str(a.batch),
        "--precision",
        "fp32",
        "--workers",
        str(a.workers),
        "--epochs",
        "1",
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
        "--report-to",
        "",
        "--logs",
        str(logs),
        "--name",
        tag,
        "--device",
        "cpu",
        *_recipe(a),
    ]
    wall, rss, out = run_measured(cmd, env=_env())
    rates = [float(m) for m in _OC_STEP.findall(out)]
    return wall, rss, rates


def run_ours(a: argparse.Namespace, method: str, data: Path, logs: Path, tag: str):
    trainer = Path(sys.executable).with_name("trainer")
    cmd = [
        str(trainer),
        "run",
        "--model",
        "tiny-vit",
        "--method",
        method,
        "--train-data",
        str(data),
        "--batch-size",
        str(a.batch),
        "--precision",
        "fp32",
        "--workers",
        str(a.workers),
        "--max-steps",
        str(a.steps),
        *_recipe(a),
        "--learnable-inv-tau",
        "--device",
        "cpu",
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
        "--report-to",
        "none",
        "--no-progress",
        "--logs",
        str(logs),
        "--name",
        tag,
    ]
    wall, rss, _ = run_measured(cmd, env=_env())
    rows = [json.loads(line) for line in (logs / tag / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    return wall, rss, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of steady state")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for both trainers (0: torch's default, all cores)",
    )
    a = parser.parse_args()
    global THREADS
    THREADS = a.threads
    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/cloob-bench-cache"))
    data = demo_shards(cache)
    per_side: dict[str, list[dict[str, float]]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        tmpd = Path(tmp)
        model_dir = export_open_clip_dir("tiny-vit", tmpd / "oc-model")
        for r in range(a.rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for side in order:
                tag = f"{side}-r{r}"
                if side == "openclip":
                    wall, rss, rates = run_openclip(a, data, model_dir, tmpd / "oc-logs", tag)
                else:
                    wall, rss, rates = run_ours(a, side.split("-")[1], data, tmpd / "logs", tag)
                steady = rates[a.skip :] or rates
                if len(rates) < a.steps:
                    raise SystemExit(f"{side}: parsed {len(rates)} step rates, expected {a.steps}")
                per_side[side].append(
                    {"samples_per_s": statistics.median(steady), "rss_mib": rss, "wall_s": wall}
                )
                print(
                    f"round {r} {side:10s} {statistics.median(steady):7.1f} samples/s  "
                    f"peak RSS {rss:6.0f} MiB  wall {wall:5.1f} s",
                    flush=True,
                )

    def ratio(num: str, den: str) -> float:
        return statistics.median(
            x["samples_per_s"] / y["samples_per_s"]
            for x, y in zip(per_side[num], per_side[den], strict=True)
        )

    rows = []
    for side in SIDES:
        runs = per_side[side]
        rows.append(
            [
                side,
                statistics.median(x["samples_per_s"] for x in runs),
                ratio(side, "openclip"),
                max(x["rss_mib"] for x in runs),
                statistics.median(x["wall_s"] for x in runs),
            ]
        )
    cloob_over_clip_step = 1 / ratio("ours-cloob", "ours-clip")  # step time ratio
    report(
        "train_step",
        f"tiny-vit training on CPU, fp32, batch {a.batch}, {a.workers} workers, {a.steps} steps, "
        f"{a.threads or 'default'} intra-op thread(s) "
        f"(steady-state median; × = per-round ratio vs OpenCLIP)",
        ["trainer", "samples/s", "× OpenCLIP", "peak RSS MiB", "wall s"],
        rows,
        {
            "cloob_over_clip_step_time": cloob_over_clip_step,
            "rounds": per_side,
            "settings": vars(a),
        },
    )
    print(f"CLOOB step / CLIP step (time): {cloob_over_clip_step:.3f}")


if __name__ == "__main__":
    main()
