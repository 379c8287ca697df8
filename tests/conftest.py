"""Fixtures shared by every test package: the loopback HTTP server and generated images."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.images import GeneratedImage, make_images
from support.server import LoopbackServer

# albumentations (pulled in by img2dataset) checks online for updates at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


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
