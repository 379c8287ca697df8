"""`--distributor pyspark|ray` for real, on loopback: Spark local mode, a standalone master and
worker started here with `spark-class`, a Ray head started with `ray start`, a local Ray instance;
engine failures as one `error:` line, also for clusters that accept and never answer; `verify` on
a fetch that did not finish. The cluster plumbing (loopback pinning, starting and stopping the
engines, proving no process outlives a test) is in tests/support/clusters.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cloob.dataprep import engines
from support import clusters
from support.bad_input import BadInput, check
from support.sockets import SilentPort

N, PER_SHARD = 12, 4  # 3 shards
OPTS = [
    "--samples-per-shard",
    str(PER_SHARD),
    "--processes",
    "1",
    "--threads",
    "2",
    "--timeout",
    "5",
    "--image-size",
    "64",
]


@pytest.fixture(scope="module")
def url_csv(served, tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("urls") / "list.csv"
    csv.write_text(
        "url,caption\n"
        + "".join(
            f'{served.server.url(img.relpath)},"{img.caption}, no. {i}"\n'
            for i, img in enumerate(served.images[:N])
        )
    )
    return csv


@pytest.fixture(scope="module")
def multiprocessing_run(url_csv, cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mp") / "ds"
    assert cli("fetch", "urls", "--input", url_csv, "--out", out, *OPTS) == 0
    return out


def fingerprint(out: Path) -> dict:
    """Everything a distributor must not change: samples, shards, sizes, tar members."""
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        samples = con.execute(
            "SELECT source_id, key, shard, status, sha256, caption, width, "
            "height FROM samples ORDER BY source_id"
        ).fetchall()
        shards = con.execute(
            "SELECT shard, n_rows, n_success, n_failed, complete FROM shards ORDER BY shard"
        ).fetchall()
    members = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            members[tar.name] = sorted(t.getnames())
    return {
        "samples": samples,
        "shards": shards,
        "members": members,
        "sizes": json.loads((out / "sizes.json").read_text()),
    }


@pytest.fixture
def tag(monkeypatch) -> Iterator[str]:
    """A tag for this test's processes; none may outlive the test."""
    with clusters.no_leftovers(monkeypatch) as value:
        yield value


def fetch(cli, url_csv: Path, out: Path, distributor: str) -> int:
    return cli(
        "fetch", "urls", "--input", url_csv, "--out", out, *OPTS, "--distributor", distributor
    )


# --- Spark -----------------------------------------------------------------------------------


def test_spark_local_matches_multiprocessing(
    url_csv, multiprocessing_run, cli, tag, monkeypatch, tmp_path
):
    clusters.engine_env(monkeypatch, tmp_path)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "pyspark") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    assert "pyspark: master local[1]" in (out / "img2dataset.log").read_text()


@pytest.fixture
def spark_cluster(tag, monkeypatch, tmp_path) -> Iterator[str]:
    clusters.engine_env(monkeypatch, tmp_path)
    with clusters.spark_standalone(tag, tmp_path) as master_url:
        yield master_url


@pytest.mark.slow
def test_spark_standalone_cluster_matches_multiprocessing(
    spark_cluster, url_csv, multiprocessing_run, cli, monkeypatch, tmp_path
):
    monkeypatch.setenv("DATAPREP_SPARK_MASTER", spark_cluster)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "pyspark") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    log = (out / "img2dataset.log").read_text()
    assert f"pyspark: master {spark_cluster}; workers run {sys.executable}" in log


@pytest.fixture(scope="module")
def python_without_img2dataset(tmp_path_factory) -> str:
    return clusters.bare_python(tmp_path_factory.mktemp("bare"))


@pytest.mark.slow
def test_spark_executors_without_img2dataset_fail_in_one_line(
    url_csv, python_without_img2dataset, dataprep, tag, monkeypatch, tmp_path
):
    clusters.engine_env(monkeypatch, tmp_path)
    monkeypatch.setenv("PYSPARK_PYTHON", python_without_img2dataset)
    out = tmp_path / "ds"
    result = dataprep(
        "fetch", "urls", "--input", url_csv, "--out", out, *OPTS, "--distributor", "pyspark"
    )
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1
    assert "Spark executors cannot import img2dataset" in errors[0]
    assert python_without_img2dataset in errors[0] and "PYSPARK_PYTHON" in errors[0]
    log = (out / "img2dataset.log").read_text()
    assert "Traceback" in log and "No module named 'img2dataset'" in log

    monkeypatch.delenv("PYSPARK_PYTHON")  # fixed: the same command now finishes the fetch
    assert (
        dataprep(
            "fetch", "urls", "--input", url_csv, "--out", out, *OPTS, "--distributor", "pyspark"
        ).code
        == 0
    )
    assert dataprep("verify", out).code == 0


# --- Ray -------------------------------------------------------------------------------------


@pytest.fixture
def ray_tmp(tag, monkeypatch) -> Iterator[Path]:
    """Ray's temp dir for this test (short: Ray puts unix sockets in it)."""
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    monkeypatch.setenv(f"DATAPREP_TEST_DIRS_{tag}", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_head(tag, ray_tmp, monkeypatch, tmp_path) -> Iterator[str]:
    clusters.engine_env(monkeypatch, tmp_path)
    with clusters.ray_head(tag, tmp_path) as address:
        yield address


@pytest.mark.slow
@pytest.mark.timeout(300)  # a driver that waits for a raylet that is not there hangs: end it
def test_ray_cluster_matches_multiprocessing(
    ray_head, url_csv, multiprocessing_run, cli, monkeypatch, tmp_path
):
    """The README's commands: a head started with the loopback variable, then the fetch with
    only RAY_ADDRESS=127.0.0.1:PORT set (the variable is not in the fetch's own environment)."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    monkeypatch.delenv(clusters.RAY_LOOPBACK)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "ray") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    assert f"ray: the cluster at {ray_head}" in (out / "img2dataset.log").read_text()


@pytest.mark.slow
def test_ray_without_a_cluster_starts_a_local_one(
    url_csv, multiprocessing_run, cli, tag, ray_tmp, monkeypatch, tmp_path
):
    clusters.engine_env(monkeypatch, tmp_path)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "ray") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    assert "ray: a local instance on 127.0.0.1" in (out / "img2dataset.log").read_text()


# --- bad input: engines that cannot start, as a matrix ---------------------------------------

DEAD = "127.0.0.1:9"  # nothing listens on the discard port here


def urls_fetch(distributor: str):
    def make(scratch: Path) -> list:
        csv = scratch / "list.csv"
        csv.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a caption\n")
        return [
            "fetch",
            "urls",
            "--input",
            csv,
            "--out",
            scratch / "out",
            "--distributor",
            distributor,
        ]

    return make


ENGINE_CASES = [
    (
        {"DATAPREP_SPARK_MASTER": f"spark://{DEAD}"},
        BadInput(
            "spark-master-unreachable",
            urls_fetch("pyspark"),
            f"cannot reach the Spark master spark://{DEAD}",
        ),
    ),
    (
        {"DATAPREP_SPARK_MASTER": "spark://head"},
        BadInput("spark-master-without-port", urls_fetch("pyspark"), "expected spark://HOST:PORT"),
    ),
    (
        {"JAVA_HOME": "/nonexistent/jdk"},
        BadInput("spark-without-java", urls_fetch("pyspark"), "needs Java 17 or newer"),
    ),
    (
        {"RAY_ADDRESS": DEAD},
        BadInput(
            "ray-address-unreachable", urls_fetch("ray"), f"cannot reach the Ray cluster {DEAD}"
        ),
    ),
    (
        {"RAY_ADDRESS": f"ray://{DEAD}"},
        BadInput(
            "ray-client-address-unreachable", urls_fetch("ray"), "cannot reach the Ray cluster"
        ),
    ),
    (
        {"RAY_ADDRESS": "head-node"},
        BadInput("ray-address-without-port", urls_fetch("ray"), "expected HOST:PORT"),
    ),
]


@pytest.mark.parametrize(
    ("env", "case"), [pytest.param(env, case, id=case.id) for env, case in ENGINE_CASES]
)
def test_engine_that_cannot_start(env, case, dataprep, monkeypatch, tmp_path):
    for var in ("DATAPREP_SPARK_MASTER", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    def run(*args):
        result = dataprep(*args)
        return result.code, result.err

    check(case, tmp_path, run)


# --- clusters that accept connections and never answer ---------------------------------------


@pytest.mark.timeout(90)  # Ray retries a silent GCS without end: the fetch must give up first
@pytest.mark.parametrize("loopback_var", [None, "0"], ids=["plain", "with-ray-loopback-var"])
def test_ray_address_that_never_answers(loopback_var, dataprep, tag, monkeypatch, tmp_path):
    # The check waits 10 s for gRPC's handshake; a port that never answers fails it the same way
    # after 1 s (the fetch runs in this process, where the limit is read).
    monkeypatch.setattr(engines, "_HANDSHAKE_TIMEOUT_S", 1.0)
    monkeypatch.delenv(clusters.RAY_LOOPBACK, raising=False)
    if loopback_var is not None:
        monkeypatch.setenv(clusters.RAY_LOOPBACK, loopback_var)
    with SilentPort() as silent:
        monkeypatch.setenv("RAY_ADDRESS", silent.address)
        case = BadInput(
            "ray-address-never-answers",
            urls_fetch("ray"),
            f"the Ray cluster {silent.address} (RAY_ADDRESS) accepts connections "
            "but does not answer",
        )

        def run(*args):
            result = dataprep(*args)
            return result.code, result.err

        check(case, tmp_path, run)


@pytest.mark.slow  # Spark gives a silent master three 20 s registration tries
@pytest.mark.timeout(240)
def test_spark_master_that_never_answers_is_named(url_csv, dataprep, tag, monkeypatch, tmp_path):
    clusters.engine_env(monkeypatch, tmp_path)
    with SilentPort() as silent:
        master = f"spark://{silent.address}"
        monkeypatch.setenv("DATAPREP_SPARK_MASTER", master)
        result = dataprep(
            "fetch",
            "urls",
            "--input",
            url_csv,
            "--out",
            tmp_path / "ds",
            *OPTS,
            "--distributor",
            "pyspark",
        )
    lines = result.err.strip().splitlines()
    assert result.code == 1 and "Traceback" not in result.err, result.err
    errors = [line for line in lines if "error" in line.lower()]
    # the master named, not Py4J's "An error occurred while calling None...SparkSession"
    assert len(errors) == 1 and errors[0].startswith(
        f"error: Spark failed: the Spark master {master} did not answer"
    ), result.err
    assert "All masters are unresponsive" in errors[0]


# --- verify on a fetch that did not finish -----------------------------------------------------


@pytest.mark.parametrize("keep", [0, 2])
def test_verify_on_an_unfinished_fetch_fails(keep, multiprocessing_run, dataprep, tmp_path):
    """What a killed run leaves: fetch.json expects 3 shards, `keep` of them are finished."""
    copy = tmp_path / "ds"
    shutil.copytree(multiprocessing_run, copy)
    for name in ("manifest.duckdb", "runs.json", "sizes.json", "shards/sizes.json"):
        (copy / name).unlink()
    for shard in sorted((copy / "shards").iterdir()):
        if int(shard.name[:5]) >= keep:
            shard.unlink()
    result = dataprep("verify", copy)
    assert result.code == 1, result.out
    assert f"incomplete: {keep} of 3 shards finished" in " ".join(result.out.split())
    assert "ok" not in result.out
