"""The three packages as one pipeline, each through its real command line in a subprocess:
loopback CC3M TSV → `dataprep fetch cc3m` → `trainer run` (cloob and clip) → `benchmarks fetch`
of a zip served over loopback → `benchmarks zeroshot` with both checkpoints side by side.

In the slow set (`-m slow`): seven processes that each start torch and open_clip, ~40 s on the
2-core machine. The default suite runs the same chain in one process (e2e/test_s3_chain.py: fetch,
train, resume, zero-shot) and each step through its real command line in its own package's tests
(dataprep/test_cc3m.py, benchmarks/test_fetch.py and benchmarks/test_cli.py, side by side)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from support.benchmark_data import cloob_zip, standin_clip_prompts, standin_cloob_metadata
from support.images import make_images
from support.server import LoopbackServer

BIN = Path(sys.executable).parent
N_GOOD, BROKEN = 30, ("404", "corrupt", "missing")
FLOWERS = ["pink primrose", "sweet pea", "tiger lily"]

pytestmark = pytest.mark.slow


def run_cli(tool: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [str(BIN / tool), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{tool} {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@dataclass
class Pipeline:
    shards: Path
    checkpoints: dict[str, Path]
    bench_root: Path
    results: Path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    base = tmp_path_factory.mktemp("e2e")
    www = base / "www"
    images = make_images(www, N_GOOD + 2, seed=21, subdir="img")
    cloob_zip(www / "flowers102.zip", "flowers102", {name: 3 for name in FLOWERS}, seed=5)
    lists = {"flowers102": (FLOWERS, ["a photo of a {}, a type of flower."])}
    (www / "zeroshot_data.py").write_text(standin_cloob_metadata(lists))
    (www / "prompts.md").write_text(standin_clip_prompts({"Flowers102": lists["flowers102"]}))
    checksums = base / "checksums.sha256"
    checksums.write_text(
        "".join(
            f"{hashlib.sha256((www / n).read_bytes()).hexdigest()}  {n}\n"
            for n in ("zeroshot_data.py", "prompts.md")
        )
    )
    with LoopbackServer(www) as server:
        # The published CC3M TSV: caption<TAB>url, no header; three rows that cannot succeed.
        server.fault(images[N_GOOD].relpath, "404")
        server.fault(images[N_GOOD + 1].relpath, "corrupt")
        rows = [(im.caption, server.url(im.relpath)) for im in images]
        rows.append(("a photo that never existed", server.url("img/none.jpg")))
        tsv = base / "Validation_GCC-1.1.0-Validation.tsv"
        tsv.write_text("".join(f"{c}\t{u}\n" for c, u in rows))
        shards = base / "cc3m"
        run_cli(
            "dataprep",
            "fetch",
            "cc3m",
            "--tsv",
            tsv,
            "--out",
            shards,
            "--processes",
            "1",
            "--threads",
            "4",
            "--samples-per-shard",
            "16",
            "--image-size",
            "64",
            "--timeout",
            "5",
        )

        checkpoints = {}
        for method in ("cloob", "clip"):
            run_cli(
                "trainer",
                "run",
                "--method",
                method,
                "--model",
                "tiny-vit",
                "--train-data",
                shards,
                "--batch-size",
                "8",
                "--max-steps",
                "3",
                "--warmup",
                "1",
                "--workers",
                "0",
                "--logs",
                base / "runs",
                "--name",
                method,
                "--no-progress",
            )
            checkpoints[method] = base / "runs" / method / "checkpoints" / "latest.pt"

        bench_root = base / "zeroshot"
        run_cli(
            "benchmarks",
            "fetch",
            "flowers102",
            "--root",
            bench_root,
            "--base-url",
            server.base_url,
            "--checksums",
            checksums,
        )
    results = base / "results"
    run_cli(
        "benchmarks",
        "zeroshot",
        "--ckpt",
        checkpoints["cloob"],
        "--ckpt",
        checkpoints["clip"],
        "--datasets",
        "flowers102",
        "--root",
        bench_root,
        "--out",
        results,
        "--workers",
        "0",
    )
    return Pipeline(shards, checkpoints, bench_root, results)


def test_fetch_counts_successes_and_failures(pipeline: Pipeline):
    sizes = json.loads((pipeline.shards / "sizes.json").read_text())
    assert sum(sizes.values()) == N_GOOD
    with duckdb.connect(str(pipeline.shards / "manifest.duckdb"), read_only=True) as con:
        counts = dict(
            con.execute("SELECT status, count(*) FROM samples GROUP BY status").fetchall()
        )
    assert counts["success"] == N_GOOD
    assert sum(counts.values()) == N_GOOD + len(BROKEN)


def test_training_writes_loadable_checkpoints(pipeline: Pipeline):
    import torch

    for method, path in pipeline.checkpoints.items():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["method"] == method
        assert ckpt["step"] == 3
        assert "logit_scale" in ckpt["state_dict"]


def test_zeroshot_reports_both_checkpoints_side_by_side(pipeline: Pipeline):
    records = json.loads((pipeline.results / "results.json").read_text())["records"]
    assert {r["method"] for r in records} == {"cloob", "clip"}
    assert all(
        r["dataset"] == "flowers102" and r["n_images"] == 9 and r["n_classes"] == 3 for r in records
    )
    assert all(0.0 <= r["metrics"]["acc1"] <= 1.0 for r in records)
    assert {r["label"] for r in records} == {"cloob/latest", "clip/latest"}
    assert (pipeline.results / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    side = (pipeline.results / "side_by_side.csv").read_text()
    assert "cloob/latest" in side and "clip/latest" in side
    assert "Side by side" in (pipeline.results / "results.md").read_text()
