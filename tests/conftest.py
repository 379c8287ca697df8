"""Fixtures shared by every test package: the loopback HTTP and S3 servers, generated images."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import pytest

from support.images import GeneratedImage, make_images
from support.s3 import S3Server
from support.server import LoopbackServer

# albumentations (pulled in by img2dataset) checks online for updates at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
MAX_WORKERS = 4  # each worker imports torch and many tests start processes of their own


def share_the_cores(env: MutableMapping[str, str], cores: int) -> None:
    """Under xdist, each worker (and every process it starts) gets its share of the cores, not all
    of them: torch's OpenMP threads spin while they wait, so two workers each running two threads
    on two cores burn much of the CPU in those waits. A value the user set is kept."""
    workers = int(env.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))


share_the_cores(os.environ, len(os.sched_getaffinity(0)))  # before any test imports torch


# The test files that take longest in all (their tests' seconds summed, `--durations=0` on the
# 2-core machine), longest first. They are handed out first, so that the run ends on short files
# and no worker waits alone at the end; pyproject's --no-loadscope-reorder keeps xdist from
# ordering files by their number of tests instead (which put the long two-test files last).
LONGEST_FIRST = (
    "e2e/test_demo.py",
    "trainer/test_resume.py",
    "benchmarks/test_bad_input_matrix.py",
    "dataprep/test_s3.py",
    "dataprep/test_distributed.py",
    "dataprep/test_urls_resume.py",
    "trainer/test_export.py",
    "trainer/test_bad_input_matrix.py",
    "trainer/test_preemption.py",
    "e2e/test_s3_chain.py",
    "trainer/test_scale.py",
    "dataprep/test_bad_input_matrix.py",
    "dataprep/test_cc3m.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(tests).as_posix(), len(rank)))


def uncompiled_torch() -> bool:
    """True where nothing caches compiled modules: PYTHONDONTWRITEBYTECODE is set and torch's
    bytecode was never compiled, so every process compiles torch and open_clip from source."""
    spec = importlib.util.find_spec("torch")
    if not sys.dont_write_bytecode or spec is None or spec.origin is None:
        return False
    return not Path(importlib.util.cache_from_source(spec.origin)).exists()


def pytest_terminal_summary(terminalreporter) -> None:
    if uncompiled_torch():
        terminalreporter.write_line(
            "note: PYTHONDONTWRITEBYTECODE is set and torch has no compiled bytecode, so each of "
            "the suite's processes compiled torch from source (~1.5x the time); compile once "
            "with `uv sync --dev --compile-bytecode`",
            yellow=True,
        )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core this process may use, at most
    MAX_WORKERS; 2 on the 2-core machine the suite is sized for."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def http_server(http_root: Path) -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 serving `http_root`; faults are set per path."""
    with LoopbackServer(http_root) as server:
        yield server


@pytest.fixture
def image_factory(http_root: Path) -> Callable[..., list[GeneratedImage]]:
    """Write seeded images under the served root: `image_factory(n, seed=..., subdir=...)`."""

    def make(n: int, **kwargs) -> list[GeneratedImage]:
        return make_images(http_root, n, **kwargs)

    return make


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server on 127.0.0.1 for the whole test run (starting it costs ~1 s)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The S3 server with a new empty bucket, and the AWS_* variables that reach it set for this
    test
    (subprocesses inherit them). Credentials from the machine never leak in."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "FSSPEC_")):
            monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3_server.new_bucket()
    _forget_s3_clients()
    yield s3_server
    _forget_s3_clients()


def _forget_s3_clients() -> None:
    """s3fs caches filesystems (and their credentials) per process: each test starts fresh."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
