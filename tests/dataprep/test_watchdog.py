"""The watchdog that ends img2dataset's child when the store stops answering.

Real stores on 127.0.0.1 (moto; a port that accepts and never answers), a clock the test moves:
a stall is a silent store AND a quiet child; a quiet child with a store that answers (a long shard
download) is not one, nor a silent store while the child still writes its log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec.config
import pytest

from cloob.common.storage import RemotePath, call_limit_s, location
from cloob.dataprep.download import _stop_group
from cloob.dataprep.watchdog import StoreWatch
from support.s3 import S3Server
from support.sockets import SilentPort

LIMIT = 2.0  # the watch's "one call" in fake seconds; a real question is cut at this many seconds


def _watch(s3: S3Server, log: Path, monkeypatch, endpoint: str | None = None, timeout: int = 1):
    monkeypatch.setitem(
        fsspec.config.conf,
        "s3",
        {"config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout}},
    )
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3.client().put_object(Bucket=s3.bucket, Key="ds/shards/00000.tar", Body=b"x")
    now = [0.0]
    shards = location(s3.url("ds/shards"))
    assert isinstance(shards, RemotePath)
    watch = StoreWatch(shards, log, LIMIT, clock=lambda: now[0])
    return watch, now


def _steps(watch: StoreWatch, now: list[float], log: Path | None = None) -> list[bool]:
    seen = []
    for t in (0.0, 2.5, 5.0, 7.5):
        now[0] = t
        if log is not None:
            with open(log, "a") as f:
                f.write("a worker's traceback\n")
        seen.append(watch.stalled())
    return seen


def test_silent_store_and_quiet_child_is_a_stall(s3: S3Server, monkeypatch, tmp_path: Path):
    log = tmp_path / "img2dataset.log"
    log.write_text("started\n")
    with SilentPort() as silent:
        watch, now = _watch(s3, log, monkeypatch, f"http://{silent.address}")
        started = time.monotonic()
        seen = _steps(watch, now)
    assert seen[:2] == [False, False] and seen[2:] == [True, True], seen
    assert watch.last_error
    assert time.monotonic() - started < 4 * LIMIT + 5  # each question ends in bounded time


def test_quiet_child_with_a_store_that_answers_is_no_stall(
    s3: S3Server, monkeypatch, tmp_path: Path
) -> None:
    """A long shard download: nothing new in the log or the bucket for minutes, store fine."""
    log = tmp_path / "img2dataset.log"
    # moto answers in well under a second, but a loaded machine (seen: load 6 on 2 cores, the suite
    # on two workers) can take longer; a store that answers is never waited on for long anyway.
    watch, now = _watch(s3, log, monkeypatch, timeout=10)
    assert _steps(watch, now) == [False] * 4
    assert watch.last_error == ""


def test_silent_store_while_the_child_still_logs_is_no_stall(
    s3: S3Server, monkeypatch, tmp_path: Path
) -> None:
    """Workers whose store calls fail write a traceback per shard and end by themselves."""
    log = tmp_path / "img2dataset.log"
    with SilentPort() as silent:
        watch, now = _watch(s3, log, monkeypatch, f"http://{silent.address}")
        assert _steps(watch, now, log) == [False] * 4


def test_call_limit_follows_the_storage_options(monkeypatch) -> None:
    monkeypatch.setitem(
        fsspec.config.conf,
        "s3",
        {"config_kwargs": {"read_timeout": 2, "retries": {"max_attempts": 2}}},
    )
    # 3 attempts x (5 s connect + 2 s read) + backoff 1 s + 2 s
    assert call_limit_s() == pytest.approx(3 * 7 + 3)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_group_ends_the_child_and_its_workers() -> None:
    code = (
        "import subprocess, sys, time, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None  # stdout=PIPE
    worker = int(proc.stdout.readline())
    started = time.monotonic()
    _stop_group(proc, signal.SIGTERM, grace_s=1)  # the leader ignores SIGTERM: SIGKILL follows
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)
    assert time.monotonic() - started < 5


def test_a_child_stuck_while_the_store_is_silent_is_stopped_in_one_line(
    s3: S3Server, monkeypatch, tmp_path: Path, capsys
) -> None:
    """run_img2dataset's wait, with a child that waits forever (as img2dataset's worker did in the
    upload closing a shard) and a store that accepts connections and never answers."""
    from cloob.common import storage
    from cloob.common.cli import UsageError
    from cloob.dataprep.download import _wait

    monkeypatch.setitem(
        fsspec.config.conf, "s3", {"config_kwargs": {"connect_timeout": 1, "read_timeout": 1}}
    )
    monkeypatch.setattr(storage, "call_limit_s", lambda: 1.0)
    log = tmp_path / "img2dataset.log"
    with SilentPort() as silent:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{silent.address}")
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        started = time.monotonic()
        with pytest.raises(UsageError) as raised:
            shards = location(s3.url("ds/shards"))
            assert isinstance(shards, RemotePath)
            _wait(proc, shards, log, proc_stderr_is_ours=True)
    assert str(raised.value).startswith(
        f"{s3.url('ds/shards')}: the storage endpoint did not answer in time (a listing"
    ), raised.value
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err == "\n"  # the progress bar's line is ended before ours
