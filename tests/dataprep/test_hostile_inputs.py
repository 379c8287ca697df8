"""Hostile url lists and working directories: only http(s) is ever fetched, for every source and
for `retry`; a `ray/` folder in the working directory does not shadow the installed package; a
shard cut on a 512-byte block boundary is flagged by `verify`."""

from __future__ import annotations

import base64
import os
import shutil
import tarfile
from pathlib import Path

import duckdb
import pytest

from cloob.dataprep.allowed_urls import REFUSED_MESSAGE

FETCH_OPTS = [
    "--processes",
    "1",
    "--threads",
    "4",
    "--samples-per-shard",
    "4",
    "--timeout",
    "2",
    "--image-size",
    "32",
]


@pytest.fixture(scope="module")
def hostile(served, cli, tmp_path_factory):
    """One fetch of a url list mixing http rows with local-file and data: rows, started from a
    working directory that holds empty `ray/` and `torch/` folders."""
    base = tmp_path_factory.mktemp("hostile")
    secret = base / "secret.jpg"  # a local file that must never reach a shard
    shutil.copy(served.images[0].path, secret)
    data_url = "data:image/jpeg;base64," + base64.b64encode(secret.read_bytes()).decode()
    http = [served.server.url(img.relpath) for img in served.images[1:4]]
    refused = [
        f"file://{secret}",
        f"file://localhost{secret}",
        f"FILE://{secret}",
        data_url,
        f" {http[0]}",
        f"<URL:file://{secret}>",
    ]
    urls = [http[0], *refused[:3], http[1], *refused[3:], http[2]]
    listing = base / "list.jsonl"
    listing.write_text(
        "".join(f'{{"url": "{u}", "caption": "row {i}"}}\n' for i, u in enumerate(urls))
    )
    cwd = base / "cwd"
    for shadow in ("ray", "torch", "img2dataset"):
        (cwd / shadow).mkdir(parents=True)
    out = base / "out"
    before = Path.cwd()
    os.chdir(cwd)
    try:
        code = cli("fetch", "urls", "--input", listing, "--out", out, *FETCH_OPTS)
    finally:
        os.chdir(before)
    return code, out, urls, secret


def _samples(out: Path) -> list[tuple]:
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT source_id, url, status, error_message, shard FROM samples ORDER BY source_id"
        ).fetchall()


def test_a_package_named_folder_in_the_working_directory_does_not_break_the_fetch(hostile):
    code, out, _, _ = hostile
    assert code == 0
    assert (out / "shards" / "00000.tar").is_file()


def test_only_http_urls_are_fetched_the_rest_is_failed_and_explained(hostile):
    code, out, urls, secret = hostile
    assert code == 0
    samples = _samples(out)
    assert [s[0] for s in samples] == list(range(len(urls)))
    for _, url, status, message, shard in samples:
        if url.startswith("http://"):
            assert status == "success", (url, message)
        else:
            assert (status, message, shard) == ("failed_to_download", REFUSED_MESSAGE, None), url
    secret_bytes = secret.read_bytes()
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                assert archive.extractfile(member).read() != secret_bytes
            urls_in_tar = [m.name for m in archive.getmembers() if m.name.endswith(".txt")]
        assert len(urls_in_tar) <= 3


def test_retry_never_hands_refused_rows_to_img2dataset(hostile, dataprep, tmp_path):
    _, out, _, _ = hostile
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = dataprep("retry", copy)
    assert result.code == 0, result.err
    assert "nothing to retry" in result.err
    assert not list((copy / "shards").glob("00001*"))  # no retry shard was written
    assert _samples(copy) == _samples(out)


def test_verify_flags_a_shard_cut_on_a_block_boundary(hostile, dataprep, tmp_path):
    _, out, _, _ = hostile
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tar = copy / "shards" / "00000.tar"
    with tarfile.open(tar) as archive:
        last = archive.getmembers()[-3]  # the first member of the last sample
    # Cut exactly where that sample's first header starts: a valid tar, one sample short.
    tar.write_bytes(tar.read_bytes()[: last.offset])
    assert last.offset % 512 == 0
    result = dataprep("verify", copy)
    assert result.code == 1
    assert "00000.tar" in result.out and "stats say" in result.out
