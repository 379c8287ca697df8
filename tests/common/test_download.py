"""Resumable downloads against the loopback server."""

from __future__ import annotations

import pytest

from cloob.common.download import DownloadError, download
from cloob.common.files import atomic_open, sha256_file


def test_download_whole_file(http_server, http_root, tmp_path):
    (http_root / "data.bin").write_bytes(b"x" * 5000)
    out = download(http_server.url("data.bin"), tmp_path / "d" / "data.bin", progress=False)
    assert out.read_bytes() == b"x" * 5000
    assert not (tmp_path / "d" / "data.bin.part").exists()


def test_download_resumes_after_cut_connection(http_server, http_root, tmp_path):
    payload = bytes(range(256)) * 100
    (http_root / "big.bin").write_bytes(payload)
    http_server.fault("big.bin", "cut", keep_bytes=3000, times=1)
    target = tmp_path / "big.bin"
    download(http_server.url("big.bin"), target, progress=False, retries=2)
    assert target.read_bytes() == payload
    assert http_server.range_requests == [("/big.bin", "bytes=3000-")]


def test_404_is_a_clear_error(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(http_server.url("missing.tar.gz"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    assert len(sha256_file(target)) == 64
