"""Spark and Ray for img2dataset's `pyspark` and `ray` distributors: checks, start-up, failures.

Three parts, used at three moments:
- `preflight` runs in the CLI before anything is written: the engine is installed, Java is there
  for Spark, and a cluster the user named (DATAPREP_SPARK_MASTER, RAY_ADDRESS) answers on its port;
  otherwise a one-line UsageError (exit 2) instead of a JVM or Ray stack trace a minute later.
- `start_engine` runs in the img2dataset child process (see download.py) before img2dataset: it
  creates the Spark session or connects Ray, so that executors and Ray workers run the driver's
  own interpreter (the one that has cloob-dataprep and img2dataset) unless the user chose one.
- `explain` turns whatever the engine raised into the one line the user sees; the traceback itself
  goes to `DIR/img2dataset.log`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import sys

from cloob.common.cli import UsageError

SPARK_MASTER_ENV = "DATAPREP_SPARK_MASTER"  # spark://host:7077; unset → Spark local mode
RAY_RUNTIME_ENV = "DATAPREP_RAY_RUNTIME_ENV"  # a Ray runtime env as JSON, replaces ours
EXTRAS = {"pyspark": "spark", "ray": "ray"}  # distributor → cloob-dataprep extra that installs it
_CONNECT_TIMEOUT_S = 3.0
_HANDSHAKE_TIMEOUT_S = 10.0  # a live GCS completes gRPC's handshake in milliseconds
# Ray replaces a loopback address by the machine's external one unless this is 0 (read when ray
# is imported); a head started on 127.0.0.1 then never sees the driver, which waits forever.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def preflight(distributor: str) -> None:
    """Refuse a distributor that cannot start here, with the cause in one line."""
    if distributor == "multiprocessing":
        return
    if importlib.util.find_spec(distributor) is None:
        raise UsageError(
            f"--distributor {distributor} needs {distributor} installed: "
            f"pip install 'cloob-dataprep[{EXTRAS[distributor]}]'"
        )
    if distributor == "pyspark":
        _check_java()
        master = os.environ.get(SPARK_MASTER_ENV)
        if master:
            _check_reachable(
                f"the Spark master {master} ({SPARK_MASTER_ENV})", _spark_master_hosts(master)
            )
    elif distributor == "ray":
        address = os.environ.get("RAY_ADDRESS", "")
        hostport = _ray_hostport(address)
        if hostport:
            _check_reachable(f"the Ray cluster {address} (RAY_ADDRESS)", [hostport])
            _check_ray_answers(address, hostport)


def _check_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        raise UsageError(
            f"--distributor pyspark needs Java 17 or newer ({where}; on Debian: "
            "apt-get install default-jre-headless)"
        )


def _spark_master_hosts(master: str) -> list[tuple[str, int]]:
    """host:port pairs of a standalone master URL (`spark://a:7077,b:7077` for HA)."""
    if not master.startswith("spark://"):
        return []  # local[N], yarn, k8s://…: nothing of ours to check
    pairs = []
    for part in master.removeprefix("spark://").split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"{SPARK_MASTER_ENV}={master}: expected spark://HOST:PORT")
        pairs.append((host, int(port)))
    return pairs


def _ray_hostport(address: str) -> tuple[str, int] | None:
    """host:port of an explicit RAY_ADDRESS (`host:port`, `ray://host:port`); None for `auto`,
    `local` or unset, which Ray resolves itself."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        if address and address not in ("auto", "local"):
            raise UsageError(f"RAY_ADDRESS={address}: expected HOST:PORT, ray://HOST:PORT or auto")
        return None
    return host, int(port)


def _check_reachable(what: str, hostports: list[tuple[str, int]]) -> None:
    if not hostports:
        return
    reasons = []
    for host, port in hostports:
        try:
            with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
                return
        except OSError as err:
            reasons.append(f"{host}:{port}: {err.strerror or err}")
    raise UsageError(f"cannot reach {what}: {'; '.join(reasons)}")


def _check_ray_answers(address: str, hostport: tuple[str, int]) -> None:
    """A port that accepts and never answers passes the TCP check, and Ray would retry its GCS
    connection without end. Ray's GCS (and its client server, ray://) speak gRPC: the gRPC
    handshake must complete within seconds. Skipped under TLS (RAY_USE_TLS), which this plain
    channel cannot speak."""
    if os.environ.get("RAY_USE_TLS", "0") not in ("0", "false", ""):
        return
    import grpc

    host, port = hostport
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=_HANDSHAKE_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        raise UsageError(
            f"the Ray cluster {address} (RAY_ADDRESS) accepts connections but does "
            f"not answer as Ray within {_HANDSHAKE_TIMEOUT_S:.0f} s: is a Ray head "
            "running on that port (`ray start --head --port ...`)?"
        ) from None
    finally:
        channel.close()


def is_loopback(address: str) -> bool:
    return address.removeprefix("ray://").startswith(_LOOPBACK)


def start_engine(distributor: str, processes: int) -> tuple[str, str]:
    """Set the engine up in the img2dataset child process. Returns where it runs (a line for the
    log) and the Python its executors or workers run."""
    if distributor == "pyspark":
        return _start_spark(processes)
    if distributor == "ray":
        return _start_ray(processes)
    return distributor, sys.executable


def _start_spark(processes: int) -> tuple[str, str]:
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    master = os.environ.get(SPARK_MASTER_ENV) or f"local[{processes}]"
    # Start the JVM first: only then does SparkConf() hold what the user configured
    # (spark-defaults.conf, PYSPARK_SUBMIT_ARGS), which decides the executors' Python.
    SparkContext._ensure_initialized()
    conf = SparkConf()
    # Executors run the driver's SparkContext.pythonExec, read from PYSPARK_PYTHON (default:
    # `python3` on each worker's PATH, which lacks img2dataset). spark.pyspark.python only reaches
    # drivers started by spark-submit, so it is applied here too.
    chosen = os.environ.get("PYSPARK_PYTHON") or conf.get("spark.pyspark.python", None)
    if chosen is None:
        # Our own interpreter has our daemon module, which spares each worker torch's import.
        conf.setIfMissing("spark.python.daemon.module", "cloob.dataprep.spark_daemon")
    os.environ["PYSPARK_PYTHON"] = chosen or sys.executable
    # Executors get the Spark worker's environment, not ours: albumentations (imported by
    # img2dataset) would ask the internet for updates. The console progress bar would only fill
    # the log with carriage returns.
    conf.setIfMissing("spark.executorEnv.NO_ALBUMENTATIONS_UPDATE", "1")
    conf.set("spark.ui.showConsoleProgress", "false")  # pyspark-shell's default is true
    if master.startswith("local"):
        # Local mode has no remote executors: keep the driver (and its block manager) on loopback
        # instead of the machine's external interface.
        conf.setIfMissing("spark.driver.host", "127.0.0.1")
        conf.setIfMissing("spark.driver.bindAddress", "127.0.0.1")
    # conf first: it holds spark-submit's spark.master (local[*]), which ours replaces.
    spark = SparkSession.builder.config(conf=conf).master(master).appName("dataprep").getOrCreate()
    return f"pyspark: master {master}", spark.sparkContext.pythonExec


def _start_ray(processes: int) -> tuple[str, str]:
    runtime_env = _ray_runtime_env()
    address = _ray_cluster_address()
    if address is None or is_loopback(address):
        # Ray replaces 127.0.0.1 by the machine's external address (so that other nodes could
        # join) unless told this is no cluster; read when ray is imported, so set before. A head
        # on loopback (the README's one-machine setup) is only reachable without the swap.
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    import ray

    if address is None:
        # No cluster: a local instance for this run only, on loopback (nothing else joins it).
        ray.init(
            address="local",
            num_cpus=processes,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            runtime_env=runtime_env,
        )
        where = "a local instance on 127.0.0.1"
    else:
        ray.init(address=address, runtime_env=runtime_env)
        where = f"the cluster at {address}"
    return f"ray: {where}", (runtime_env or {}).get("py_executable", "the cluster's default")


def _ray_runtime_env() -> dict | None:
    """DATAPREP_RAY_RUNTIME_ENV as given, none under a user's RAY_RUNTIME_ENV_HOOK or in a
    `ray job submit` driver (their runtime env applies), else workers run our interpreter.
    Workers get the raylet's environment, not ours: albumentations (imported by img2dataset)
    would ask the internet for updates."""
    given = os.environ.get(RAY_RUNTIME_ENV)
    if given:
        env = json.loads(given)
    elif "RAY_RUNTIME_ENV_HOOK" in os.environ or "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return None
    else:
        env = {"py_executable": sys.executable}
    env.setdefault("env_vars", {}).setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def _ray_cluster_address() -> str | None:
    """RAY_ADDRESS, else the cluster a `ray start` on this machine recorded if it still answers,
    else None (start a local one). Read without importing ray (see `_start_ray`), from where
    Ray records it: RAY_TMPDIR, TMPDIR or /tmp, then ray/ray_current_cluster."""
    explicit = os.environ.get("RAY_ADDRESS")
    if explicit:
        return explicit
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        with open(os.path.join(tmp, "ray", "ray_current_cluster")) as f:
            recorded = f.read().strip()
    except OSError:
        return None
    try:
        hostport = _ray_hostport(recorded)
    except UsageError:
        return None
    if hostport is None:
        return None
    try:
        socket.create_connection(hostport, timeout=_CONNECT_TIMEOUT_S).close()
    except OSError:
        return None  # a stale record of a cluster that is gone
    return recorded


def stop_engine(distributor: str) -> None:
    """End the Spark application or Ray connection (a local Ray instance shuts down with it)."""
    if distributor == "pyspark":
        from pyspark.sql import SparkSession

        if (spark := SparkSession.getActiveSession()) is not None:
            spark.stop()
    elif distributor == "ray" and "ray" in sys.modules:
        sys.modules["ray"].shutdown()


_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")
_PY_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (\S.*)$", re.M)
_WRONG_PYTHON = re.compile(r"Python in worker has different version[^\n]*")


# Causes the JVM logs but does not put in the exception Python sees: (pattern, what it means).
_SPARK_LOG_CAUSES = [
    (
        "All masters are unresponsive! Giving up.",
        'the Spark master {master} did not answer (Spark: "All masters are unresponsive! Giving '
        'up."); check ' + SPARK_MASTER_ENV + " and that the master is running",
    ),
    (
        "Application has been killed. Reason:",
        "the Spark master {master} killed the application (see the log)",
    ),
]


def explain(
    distributor: str, err: BaseException, workers_python: str | None, log_text: str = ""
) -> str:
    """One line naming why the engine failed (the full traceback goes to the log);
    `workers_python` is what `start_engine` chose, None if it did not get that far; `log_text`
    is the end of the engine's log (the JVM writes there what Py4J's exception leaves out)."""
    engine = {"pyspark": "Spark", "ray": "Ray"}.get(distributor, "img2dataset")
    text = f"{type(err).__name__}: {err}"
    if engine == "Spark":
        master = os.environ.get(SPARK_MASTER_ENV, "")
        for pattern, meaning in _SPARK_LOG_CAUSES:
            if pattern in log_text:
                return "Spark failed: " + meaning.format(master=master)
    workers = "executors" if engine == "Spark" else "workers"
    python = workers_python or "not started"
    if m := _MISSING_MODULE.search(text):
        fix = "PYSPARK_PYTHON" if engine == "Spark" else RAY_RUNTIME_ENV
        return (
            f"{engine} {workers} cannot import {m.group(1)} (their Python: {python}); point "
            f"{fix} at an interpreter with cloob-dataprep installed on every node"
        )
    if m := _WRONG_PYTHON.search(text):
        return f"{engine} {workers}: {m.group(0).strip()}"
    if isinstance(err, ConnectionError):  # Ray's reason (e.g. a token it wants) is the cause
        why = (
            f" ({type(err.__cause__).__name__}: {_first_line(str(err.__cause__))[:240]})"
            if err.__cause__
            else ""
        )
        return f"{engine}: cannot connect: {_first_line(str(err))}{why}"
    # Java and Ray wrap the Python error; the innermost Python exception line names the cause.
    found = [m for m in _PY_ERROR.finditer(text) if not m.group(1).startswith(("Py4J", "Spark"))]
    cause = f"{found[-1].group(1)}: {found[-1].group(2)}" if found else _first_line(text)
    return f"{engine} failed: {cause[:300]}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
