"""Spark and Ray clusters on one machine for tests, every address pinned to loopback, and the
bookkeeping that proves none of their processes outlives a test.

Every process a test starts (JVMs, Python workers, Ray's daemons) inherits a unique
DATAPREP_TEST_TAG in its environment; `kill_tagged` ends whatever carries it and `tagged` finds
leftovers. Ray's daemons rename themselves (setproctitle overwrites /proc/PID/environ), so they are
also found by the folders recorded in DATAPREP_TEST_DIRS_<tag> that they hold open. Bind addresses
are pinned to 127.0.0.1 (SPARK_LOCAL_IP, the driver's host and bind address, Ray's
--node-ip-address): by default both engines pick the external one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)  # what `uv run` puts first on PATH
# spark-submit's own way to take configuration: the driver binds loopback, no web UI.
SPARK_SUBMIT_ARGS = (
    "--conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 "
    "--conf spark.ui.enabled=false pyspark-shell"
)
TAG = "DATAPREP_TEST_TAG"
RAY_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # 0: Ray keeps 127.0.0.1 as given


# --- process bookkeeping ---------------------------------------------------------------------


def tagged(tag: str) -> list[int]:
    """Pids of live processes that are ours: TAG=tag in their environment, or an open file or
    working directory under a folder recorded in DATAPREP_TEST_DIRS_<tag>."""
    needle = f"{TAG}={tag}".encode()
    dirs = os.environ.get(f"DATAPREP_TEST_DIRS_{tag}")
    roots = tuple(dirs.split(os.pathsep)) if dirs else ()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") or (
                roots and _uses(entry, roots)
            ):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _uses(proc: Path, roots: tuple[str, ...]) -> bool:
    for link in [proc / "cwd", *(proc / "fd").iterdir()]:
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


@contextlib.contextmanager
def no_leftovers(monkeypatch) -> Iterator[str]:
    """A fresh tag for the processes started inside; any still alive 20 s after is a leak.
    Spark's JVM and Python daemons exit a moment after the run ends (seen: one still there when
    checked at once), hence the grace period."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(TAG, value)
    yield value
    deadline = time.monotonic() + 20
    while (left := tagged(value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_tagged(value)
    assert not left, f"processes left running 20 s after the test: {left}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen | None = None
) -> None:
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
    # What the README's loopback note sets for `ray start`; a test of the fetch's own
    # environment removes it again.
    monkeypatch.setenv(RAY_LOOPBACK, "0")
    # Token auth as Ray recommends, the token in the environment: nothing lands in ~/.ray.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", uuid.uuid4().hex + uuid.uuid4().hex)


# --- clusters ----------------------------------------------------------------------------------


@contextlib.contextmanager
def spark_standalone(tag: str, tmp: Path) -> Iterator[str]:
    """A standalone master and one worker, as the README starts them, on 127.0.0.1; yields the
    master URL. Call after `engine_env`."""
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    logs = tmp / "spark-logs"
    logs.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "wb") as log:
            return subprocess.Popen(
                ["spark-class", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    try:
        master = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(free_port()),
        )
        worker = start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            master_url,
            "--host",
            "127.0.0.1",
            "--webui-port",
            str(free_port()),
            "--cores",
            "2",
            "--memory",
            "2g",
            "--work-dir",
            str(tmp / "spark-work"),
        )
        wait_for(
            lambda: (
                "Successfully registered with master"
                in (logs / "worker.log").read_text(errors="replace")
            ),
            "the Spark worker",
            120,
            worker,
        )
        assert master.poll() is None
        yield master_url
    finally:
        kill_tagged(tag)


@contextlib.contextmanager
def ray_head(tag: str, tmp: Path) -> Iterator[str]:
    """`uv run ray start --head` from the project environment on 127.0.0.1, as the README's
    loopback note starts it; yields its address. Call after `engine_env` and `ray_tmp`."""
    port = free_port()
    log = tmp / "ray-head.log"
    with open(log, "wb") as out:
        head = subprocess.Popen(
            [
                "ray",
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(port),
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--num-cpus",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "Ray runtime started" in log.read_text(errors="replace"),
            "the Ray head",
            120,
            head,
        )
        yield f"127.0.0.1:{port}"
    finally:
        kill_tagged(tag)


def bare_python(folder: Path) -> str:
    """An interpreter of the same version with nothing installed (a bare venv in `folder`)."""
    venv = folder / "venv"
    subprocess.run(
        [
            getattr(sys, "_base_executable", sys.executable),
            "-m",
            "venv",
            "--without-pip",
            str(venv),
        ],
        check=True,
    )
    return str(venv / "bin" / "python")
