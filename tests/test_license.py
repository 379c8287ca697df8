"""The reference implementation is MIT; so is every package of this toolkit."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_and_every_pyproject_declare_mit():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    for pyproject in [
        ROOT / "pyproject.toml",
        *sorted((ROOT / "packages").glob("*/pyproject.toml")),
    ]:
        assert tomllib.loads(pyproject.read_text())["project"]["license"] == "MIT", pyproject
