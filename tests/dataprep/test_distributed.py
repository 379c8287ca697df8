"""`--distributor pyspark|ray` for real, on loopback: Spark local mode, a standalone master and
worker started here with `spark-class`, a Ray head started with `ray start`, a local Ray instance;
engine failures as one `error:` line; `verify` on a fetch that did not finish.

Every process these tests start (JVMs, Python workers, Ray's daemons) inherits a unique
DATAPREP_TEST_TAG in its environment; the fixtures kill whatever carries it and the tests check
that nothing does afterwards. Bind addresses are pinned to 127.0.0.1 (SPARK_LOCAL_IP, the driver's
host and bind address, Ray's --node-ip-address): by default both engines pick the external one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from support.bad_input import BadInput, check

N, PER_SHARD = 12, 4  # 3 shards
OPTS = ["--samples-per-shard", str(PER_SHARD), "--processes", "1", "--threads", "2",
        "--timeout", "5", "--image-size", "64"]
VENV_BIN = str(Path(sys.executable).parent)  # what `uv run` puts first on PATH
# spark-submit's own way to take configuration: the driver binds loopback, no web UI.
SPARK_SUBMIT_ARGS = ("--conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 "
                     "--conf spark.ui.enabled=false pyspark-shell")


@pytest.fixture(scope="module")
def url_csv(served, tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("urls") / "list.csv"
    csv.write_text("url,caption\n" + "".join(
        f'{served.server.url(img.relpath)},"{img.caption}, no. {i}"\n'
        for i, img in enumerate(served.images[:N])))
    return csv


@pytest.fixture(scope="module")
def multiprocessing_run(url_csv, cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mp") / "ds"
    assert cli("fetch", "urls", "--input", url_csv, "--out", out, *OPTS) == 0
    return out


def fingerprint(out: Path) -> dict:
    """Everything a distributor must not change: samples, shards, sizes, tar members."""
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        samples = con.execute("SELECT source_id, key, shard, status, sha256, caption, width, "
                              "height FROM samples ORDER BY source_id").fetchall()
        shards = con.execute("SELECT shard, n_rows, n_success, n_failed, complete FROM shards "
                             "ORDER BY shard").fetchall()
    members = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            members[tar.name] = sorted(t.getnames())
    return {"samples": samples, "shards": shards, "members": members,
            "sizes": json.loads((out / "sizes.json").read_text())}


# --- process bookkeeping ---------------------------------------------------------------------

def tagged(tag: str) -> list[int]:
    """Pids of live processes that are ours: DATAPREP_TEST_TAG=tag in their environment, or, for
    those that rename themselves (Ray's setproctitle overwrites /proc/PID/environ), an open file
    or working directory under a folder recorded in DATAPREP_TEST_DIRS_<tag>."""
    needle = f"DATAPREP_TEST_TAG={tag}".encode()
    roots = tuple(os.environ.get(f"DATAPREP_TEST_DIRS_{tag}", "").split(os.pathsep)) if \
        os.environ.get(f"DATAPREP_TEST_DIRS_{tag}") else ()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") or \
                    (roots and _uses(entry, roots)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _uses(proc: Path, roots: tuple[str, ...]) -> bool:
    links = [proc / "cwd", *(proc / "fd").iterdir()]
    for link in links:
        try:
            if os.readlink(link).startswith(roots):
                return True
        except OSError:
            continue
    return False


def kill_tagged(tag: str, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, every process carrying `tag` (only ours carry it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tagged(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not tagged(tag):
            return


@pytest.fixture
def tag(monkeypatch) -> Iterator[str]:
    """A tag for this test's processes; none may outlive the test."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("DATAPREP_TEST_TAG", value)
    yield value
    # Spark's JVM and Python daemons exit a moment after the run ends (seen: one still there when
    # checked at once): a grace period, then whatever is left is a leak.
    deadline = time.monotonic() + 20
    while (left := tagged(value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_tagged(value)
    assert not left, f"processes left running 20 s after the test: {left}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"{what}: the process exited"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def engine_env(monkeypatch, tmp: Path) -> None:
    """Loopback binds and scratch dirs for both engines, as `uv run` would set PATH."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp))
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", SPARK_SUBMIT_ARGS)
    for var in ("DATAPREP_SPARK_MASTER", "PYSPARK_PYTHON", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Ray swaps 127.0.0.1 (--node-ip-address, RAY_ADDRESS) for the external address otherwise.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Token auth as Ray recommends, the token in the environment: nothing lands in ~/.ray.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", uuid.uuid4().hex + uuid.uuid4().hex)


def fetch(cli, url_csv: Path, out: Path, distributor: str) -> int:
    return cli("fetch", "urls", "--input", url_csv, "--out", out, *OPTS,
               "--distributor", distributor)


# --- Spark -----------------------------------------------------------------------------------

def test_spark_local_matches_multiprocessing(url_csv, multiprocessing_run, cli, tag, monkeypatch,
                                             tmp_path):
    engine_env(monkeypatch, tmp_path)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "pyspark") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    assert "pyspark: master local[1]" in (out / "img2dataset.log").read_text()


@pytest.fixture
def spark_cluster(tag, monkeypatch, tmp_path) -> Iterator[str]:
    """A standalone master and one worker, as the README starts them, on 127.0.0.1."""
    engine_env(monkeypatch, tmp_path)
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    logs = tmp_path / "spark-logs"
    logs.mkdir()
    procs = []

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(["spark-class", *args], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        master = start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(port), "--webui-port", str(free_port()))
        worker = start("worker", "org.apache.spark.deploy.worker.Worker", master_url,
                       "--host", "127.0.0.1", "--webui-port", str(free_port()), "--cores", "2",
                       "--memory", "2g", "--work-dir", str(tmp_path / "spark-work"))
        wait_for(lambda: "Successfully registered with master" in
                 (logs / "worker.log").read_text(errors="replace"), "the Spark worker", 120,
                 worker)
        assert master.poll() is None
        yield master_url
    finally:
        kill_tagged(tag)


@pytest.mark.slow
def test_spark_standalone_cluster_matches_multiprocessing(spark_cluster, url_csv,
                                                          multiprocessing_run, cli, monkeypatch,
                                                          tmp_path):
    monkeypatch.setenv("DATAPREP_SPARK_MASTER", spark_cluster)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "pyspark") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    log = (out / "img2dataset.log").read_text()
    assert f"pyspark: master {spark_cluster}; workers run {sys.executable}" in log


@pytest.fixture(scope="module")
def python_without_img2dataset(tmp_path_factory) -> str:
    """An interpreter of the same version with nothing installed (a bare venv)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.mark.slow
def test_spark_executors_without_img2dataset_fail_in_one_line(url_csv, python_without_img2dataset,
                                                              dataprep, tag, monkeypatch,
                                                              tmp_path):
    engine_env(monkeypatch, tmp_path)
    monkeypatch.setenv("PYSPARK_PYTHON", python_without_img2dataset)
    out = tmp_path / "ds"
    result = dataprep("fetch", "urls", "--input", url_csv, "--out", out, *OPTS,
                      "--distributor", "pyspark")
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
    assert dataprep("fetch", "urls", "--input", url_csv, "--out", out, *OPTS,
                    "--distributor", "pyspark").code == 0
    assert dataprep("verify", out).code == 0


# --- Ray -------------------------------------------------------------------------------------

@pytest.fixture
def ray_tmp(tag, monkeypatch) -> Iterator[Path]:
    """Ray's temp dir for this test (short: Ray puts unix sockets in it)."""
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    monkeypatch.setenv(f"DATAPREP_TEST_DIRS_{os.environ['DATAPREP_TEST_TAG']}", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_head(tag, ray_tmp, monkeypatch, tmp_path) -> Iterator[str]:
    """`uv run ray start --head` from the project environment, on 127.0.0.1."""
    engine_env(monkeypatch, tmp_path)
    port = free_port()
    log = tmp_path / "ray-head.log"
    with open(log, "wb") as out:
        head = subprocess.Popen(
            ["ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
             str(port), "--include-dashboard", "false", "--disable-usage-stats", "--num-cpus",
             "2"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text(errors="replace"), "the Ray head",
                 120, head)
        yield f"127.0.0.1:{port}"
    finally:
        kill_tagged(tag)


@pytest.mark.slow
def test_ray_cluster_matches_multiprocessing(ray_head, url_csv, multiprocessing_run, cli,
                                             monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    out = tmp_path / "ds"
    assert fetch(cli, url_csv, out, "ray") == 0
    assert fingerprint(out) == fingerprint(multiprocessing_run)
    assert f"ray: the cluster at {ray_head}" in (out / "img2dataset.log").read_text()


@pytest.mark.slow
def test_ray_without_a_cluster_starts_a_local_one(url_csv, multiprocessing_run, cli, tag,
                                                  ray_tmp, monkeypatch, tmp_path):
    engine_env(monkeypatch, tmp_path)
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
        return ["fetch", "urls", "--input", csv, "--out", scratch / "out",
                "--distributor", distributor]
    return make


ENGINE_CASES = [
    ({"DATAPREP_SPARK_MASTER": f"spark://{DEAD}"},
     BadInput("spark-master-unreachable", urls_fetch("pyspark"),
              f"cannot reach the Spark master spark://{DEAD}")),
    ({"DATAPREP_SPARK_MASTER": "spark://head"},
     BadInput("spark-master-without-port", urls_fetch("pyspark"), "expected spark://HOST:PORT")),
    ({"JAVA_HOME": "/nonexistent/jdk"},
     BadInput("spark-without-java", urls_fetch("pyspark"), "needs Java 17 or newer")),
    ({"RAY_ADDRESS": DEAD},
     BadInput("ray-address-unreachable", urls_fetch("ray"), f"cannot reach the Ray cluster {DEAD}")),
    ({"RAY_ADDRESS": f"ray://{DEAD}"},
     BadInput("ray-client-address-unreachable", urls_fetch("ray"), "cannot reach the Ray cluster")),
    ({"RAY_ADDRESS": "head-node"},
     BadInput("ray-address-without-port", urls_fetch("ray"), "expected HOST:PORT")),
]


@pytest.mark.parametrize(("env", "case"),
                         [pytest.param(env, case, id=case.id) for env, case in ENGINE_CASES])
def test_engine_that_cannot_start(env, case, dataprep, monkeypatch, tmp_path):
    for var in ("DATAPREP_SPARK_MASTER", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    def run(*args):
        result = dataprep(*args)
        return result.code, result.err

    check(case, tmp_path, run)


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
