"""Bad input: one line on stderr, exit 2, nothing written, nothing already there damaged."""

from __future__ import annotations

import gzip
import importlib.util
import socket
import sqlite3
from pathlib import Path

import pytest


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_usage_error(result, out: Path, *words: str) -> None:
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists(), "a failed fetch into a new directory must leave nothing behind"


CC3M_CASES = {
    "missing": (None, "not found"),
    "empty": (b"", "empty"),
    "three_columns": (b"a caption\thttp://h/1.jpg\textra\n", "Expected 2 columns"),
    "cc12m_layout": (b"url\tcaption\nhttp://h/1.jpg\ta caption\n", "CC12M"),
    "html": (b"<!doctype html>\n<html><body>Sign in to download</body></html>\n", "CC3M"),
    "gzip_bytes": (gzip.compress(b"caption\thttp://h/1.jpg\n" * 50), "CC3M"),
    "no_url": (b"a caption\tnot a url\n", "no http(s) URL"),
}


@pytest.mark.parametrize("case", sorted(CC3M_CASES))
def test_bad_cc3m_tsv(case, dataprep, tmp_path):
    content, words = CC3M_CASES[case]
    tsv = tmp_path / "Train_GCC-training.tsv"
    if content is not None:
        tsv.write_bytes(content)
    out = tmp_path / "out"
    _assert_usage_error(dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out), out, words)


def test_unreachable_tsv_url(dataprep, http_server, tmp_path):
    out = tmp_path / "out"
    result = dataprep("fetch", "cc3m", "--tsv", http_server.url("nope.tsv"), "--out", out)
    _assert_usage_error(result, out, "404")


def test_unreachable_subset_and_metadata(dataprep, http_server, tmp_path):
    meta = tmp_path / "yfcc100m_dataset.bz2"
    meta.write_bytes(b"BZh9")
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{_unused_port()}/yfcc100m_subset_data.tsv.bz2"
    result = dataprep("fetch", "yfcc15m", "--subset", dead, "--metadata", meta, "--out", out)
    _assert_usage_error(result, out, "could not download")
    result = dataprep(
        "fetch",
        "yfcc15m",
        "--subset",
        http_server.url("subset.tsv.bz2"),
        "--metadata",
        meta,
        "--out",
        out,
    )
    _assert_usage_error(result, out, "404")


def test_bad_yfcc_metadata(dataprep, tmp_path):
    subset = tmp_path / "subset.tsv"
    subset.write_text("0\t1000\tabc\n")
    out = tmp_path / "out"
    wrong = tmp_path / "yfcc100m_dataset"
    wrong.write_text("0\t1000\tonly three\n")
    result = dataprep("fetch", "yfcc15m", "--subset", subset, "--metadata", wrong, "--out", out)
    _assert_usage_error(result, out, "not a YFCC100M metadata", "Expected 25 columns")
    other_db = tmp_path / "other.sql"
    sqlite3.connect(other_db).execute("CREATE TABLE t (x)").connection.commit()
    result = dataprep("fetch", "yfcc15m", "--subset", subset, "--metadata", other_db, "--out", out)
    _assert_usage_error(result, out, "SQLite", "yfcc100m_dataset")
    bad_subset = tmp_path / "bad_subset.tsv"
    bad_subset.write_text("photo ids\nnot a number\n")
    result = dataprep("fetch", "yfcc15m", "--subset", bad_subset, "--metadata", wrong, "--out", out)
    _assert_usage_error(result, out, "subset list")


def test_bad_url_lists(dataprep, tmp_path):
    out = tmp_path / "out"
    csv = tmp_path / "list.csv"
    csv.write_text("link,text\nhttp://h/1.jpg,a\n")
    result = dataprep("fetch", "urls", "--input", csv, "--url-col", "url", "--out", out)
    _assert_usage_error(result, out, "url")
    header_only = tmp_path / "empty.csv"
    header_only.write_text("url,caption\n")
    _assert_usage_error(
        dataprep("fetch", "urls", "--input", header_only, "--out", out), out, "no rows"
    )
    odd = tmp_path / "list.xlsx"
    odd.write_text("x")
    _assert_usage_error(dataprep("fetch", "urls", "--input", odd, "--out", out), out, "format")


def test_bad_options_and_dirs(dataprep, tmp_path):
    out = tmp_path / "out"
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a caption\thttp://h/1.jpg\n")
    _assert_usage_error(
        dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out, "--distributor", "slurm"),
        out,
        "--distributor",
    )
    _assert_usage_error(
        dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out, "--samples-per-shard", "0"),
        out,
        "--samples-per-shard",
    )
    if importlib.util.find_spec("ray") is None:
        _assert_usage_error(
            dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out, "--distributor", "ray"),
            out,
            "needs ray installed",
        )
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = dataprep("fetch", "cc3m", "--tsv", tsv, "--out", mine)
    assert result.code == 2 and "did not write" in result.err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    for command in ("stats", "verify", "retry"):
        result = dataprep(command, tmp_path / "nothing")
        assert result.code == 2 and "not a dataprep dataset directory" in result.err
