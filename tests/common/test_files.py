"""Files written through cloob.common.files are atomic and get the permissions open() would give:
0666 minus the umask (sizes.json, checkpoints, config.json and results.json all go through here)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloob.common.files import atomic_open, atomic_path, write_json


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_honour_the_umask(umask, tmp_path):
    expected = 0o666 & ~umask
    write_json(tmp_path / "sizes.json", {"00000.tar": 3})
    with atomic_open(tmp_path / "results.md") as f:
        f.write("# results\n")
    with atomic_path(tmp_path / "latest.pt") as tmp:
        tmp.write_bytes(b"weights")  # what torch.save does: reopen the temp file
    with open(tmp_path / "plain.txt", "w") as f:  # the reference: what open() gives
        f.write("x")
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "sizes.json": expected,
        "results.md": expected,
        "latest.pt": expected,
        "plain.txt": expected,
    }


def test_rewriting_keeps_the_file_complete_and_leaves_no_temp(tmp_path):
    target = tmp_path / "config.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write('{"a": 2')
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_benchmark_dataset_folders_honour_the_umask(umask, tmp_path):
    from cloob.benchmarks.data.fetch import _staging

    with _staging(tmp_path, "flowers102") as folder:
        assert mode(folder) == 0o777 & ~umask
