"""Shared fixtures for dataprep tests: a module-scoped loopback server and an in-process CLI.

img2dataset costs ~10 s per call, so fetched directories are built once per module and shared;
the server and images come from tests/support (the same ones the function-scoped fixtures use).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cli import run_main
from support.images import GeneratedImage, make_images
from support.server import LoopbackServer

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@dataclass
class Served:
    server: LoopbackServer
    root: Path
    images: list[GeneratedImage]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """40 JPEGs under /img/ plus a text file under /notimage.txt, on one server per module."""
    root = tmp_path_factory.mktemp("www")
    images = make_images(root, 40, seed=7, subdir="img")
    (root / "notimage.txt").write_text("this is not an image\n" * 20)
    with LoopbackServer(root) as server:
        yield Served(server, root, images)


@dataclass
class Result:
    code: int
    out: str
    err: str


def call_cli(*args: object) -> int:
    """Run the CLI in-process and return its exit code."""
    from cloob.dataprep.cli import main

    return run_main(main, "dataprep", *args)


@pytest.fixture(scope="session")
def cli():
    """`cli(*args) -> exit code`, for module-scoped fixtures (no output capture)."""
    return call_cli


@pytest.fixture
def dataprep(capfd: pytest.CaptureFixture[str]):
    """Run the `dataprep` CLI in-process: `dataprep("stats", DIR)` → Result(code, out, err)."""

    def run(*args: object) -> Result:
        capfd.readouterr()
        code = call_cli(*args)
        captured = capfd.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def write_cc3m_tsv():
    """`write_cc3m_tsv(path, [(caption, url), ...])`: the published layout, no header."""

    def write(path: Path, rows: list[tuple[str, str]]) -> Path:
        path.write_text("".join(f"{c}\t{u}\n" for c, u in rows), encoding="utf-8")
        return path

    return write
