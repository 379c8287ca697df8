"""The whole chain with everything in one S3 bucket (moto on 127.0.0.1): `dataprep fetch urls
--out s3://…` → `trainer run --train-data s3://… --remote-sync s3://…` → the local run folder is
lost → `trainer run --resume latest` continues from the bucket → the checkpoint loads from s3://
and `benchmarks zeroshot --ckpt s3://…` evaluates it. The secret key shows nowhere in what was
printed or written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.benchmark_data import class_tree, write_tree
from support.cli import run_main
from support.images import make_images
from support.s3 import S3Server
from support.server import LoopbackServer

MICRO = str(Path(__file__).parents[1] / "trainer" / "micro.json")


def _cli(module: str, prog: str, *args: object) -> int:
    main = __import__(f"cloob.{module}.cli", fromlist=["main"]).main
    return run_main(main, prog, *args)


# In the default suite: one img2dataset run, two 2-step trainings and a zero-shot run, ~25 s.
def test_fetch_train_resume_zeroshot_in_a_bucket(s3: S3Server, tmp_path: Path, capfd) -> None:
    images = make_images(tmp_path / "www", 16, seed=3, subdir="img")
    with LoopbackServer(tmp_path / "www") as server:
        csv = tmp_path / "list.csv"
        csv.write_text(
            "url,caption\n" + "".join(f'{server.url(im.relpath)},"{im.caption}"\n' for im in images)
        )
        assert (
            _cli(
                "dataprep",
                "dataprep",
                "fetch",
                "urls",
                "--input",
                csv,
                "--out",
                s3.url("data"),
                "--work",
                tmp_path / "work",
                "--samples-per-shard",
                "8",
                "--processes",
                "1",
                "--threads",
                "4",
                "--image-size",
                "32",
            )
            == 0
        )
    train = [
        "run",
        "--train-data",
        s3.url("data"),
        "--model",
        MICRO,
        "--method",
        "cloob",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--logs",
        tmp_path / "logs",
        "--name",
        "r",
        "--remote-sync",
        s3.url("runs"),
        "--save-every-n-steps",
        "2",
        "--report-to",
        "none",
        "--no-progress",
        "--warmup",
        "1",
    ]
    assert _cli("trainer", "trainer", *train, "--max-steps", "2") == 0
    marker = json.loads(s3.read("runs/r/checkpoints/latest.json"))
    assert marker["step"] == 2 and f"runs/r/checkpoints/{marker['checkpoint']}" in s3.list_keys()

    shutil.rmtree(tmp_path / "logs" / "r" / "checkpoints")  # a new machine: only the bucket
    assert _cli("trainer", "trainer", *train, "--max-steps", "4", "--resume", "latest") == 0
    assert json.loads(s3.read("runs/r/checkpoints/latest.json"))["step"] == 4

    from cloob.benchmarks.models.checkpoints import load_checkpoint

    url = s3.url(
        f"runs/r/checkpoints/{json.loads(s3.read('runs/r/checkpoints/latest.json'))['checkpoint']}"
    )
    loaded = load_checkpoint(url)
    assert loaded.info.get("step") == 4 and loaded.path == url and loaded.method == "cloob"
    task = write_tree(tmp_path / "task", class_tree({"circle": 2, "square": 2}))
    assert (
        _cli(
            "benchmarks",
            "benchmarks",
            "zeroshot",
            "--ckpt",
            url,
            "--dataset-dir",
            task,
            "--out",
            tmp_path / "results",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--no-progress",
        )
        == 0
    )
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert url in json.dumps(results) and "acc1" in json.dumps(results)

    printed = "".join(capfd.readouterr())
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    written += [s3.read(k) for k in s3.list_keys() if k.endswith((".json", ".log", ".jsonl"))]
    assert s3.secret not in printed
    assert not any(s3.secret.encode() in data for data in written)
