"""`fetch urls` on any list format, and a SIGKILL in the middle of a fetch followed by a resume."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cloob.dataprep.sources.urls import build_urls_list
from support.cli import kill_dataprep_when

N = 20
OPTS = [
    "--url-col",
    "image_url",
    "--caption-col",
    "text",
    "--samples-per-shard",
    "5",
    "--processes",
    "1",
    "--threads",
    "2",
    "--timeout",
    "5",
    "--image-size",
    "64",
]


@pytest.fixture(scope="module")
def url_csv(served, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("urls")
    lines = ["id,image_url,text"]
    for i, img in enumerate(served.images[:N]):
        lines.append(f'{i},{served.server.url(img.relpath)},"{img.caption}, no. {i}"')
    for row in (2, 7, 12, 17):  # one slow image per shard: each shard stays open ~1 s
        served.server.fault(served.images[row].relpath, "delay", seconds=1.0)
    csv = base / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.fixture(scope="module")
def uninterrupted(url_csv, cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "ds"
    assert cli("fetch", "urls", "--input", url_csv, "--out", out, *OPTS) == 0
    return out


def _sample_set(out: Path) -> list[tuple]:
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT source_id, key, shard, status, sha256, caption FROM samples ORDER BY source_id"
        ).fetchall()


def test_fetch_urls_csv(uninterrupted, url_csv):
    samples = _sample_set(uninterrupted)
    assert [s[0] for s in samples] == list(range(N))
    assert all(s[3] == "success" for s in samples)
    assert samples[3][5].endswith("no. 3")
    sizes = json.loads((uninterrupted / "sizes.json").read_text())
    assert sizes == {f"0000{i}.tar": 5 for i in range(4)}


def test_kill_mid_fetch_then_resume_matches_uninterrupted(uninterrupted, url_csv, cli, tmp_path):
    out = tmp_path / "ds"
    shards = out / "shards"
    # Kill once shard 0 is finished and shard 1's tar is being written.
    kill_dataprep_when(
        ["fetch", "urls", "--input", url_csv, "--out", out, *OPTS],
        lambda: (shards / "00000_stats.json").exists() and (shards / "00001.tar").exists(),
        timeout=120,
    )
    assert not (shards / "00001_stats.json").exists()  # shard 1 was cut mid-write
    assert not (out / "manifest.duckdb").exists()
    done_tar = shards / "00000.tar"
    mtime = done_tar.stat().st_mtime_ns

    assert cli("fetch", "urls", "--input", url_csv, "--out", out, *OPTS) == 0
    assert done_tar.stat().st_mtime_ns == mtime  # the finished shard was not downloaded again
    assert _sample_set(out) == _sample_set(uninterrupted)
    assert json.loads((out / "sizes.json").read_text()) == json.loads(
        (uninterrupted / "sizes.json").read_text()
    )


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "csv.gz"])
def test_list_formats(fmt, tmp_path):
    table = pa.table(
        {
            "u": [f"http://h/{i}.jpg" for i in range(5)],
            "c": [f"caption, {i}" for i in range(5)],
            "x": list(range(5)),
        }
    )
    path = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    else:
        import gzip

        import pyarrow.csv as pacsv

        plain = tmp_path / "plain"
        pacsv.write_csv(table, plain, pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
        data = plain.read_bytes()
        path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    assert build_urls_list(path, "u", "c", tmp_path / "list.parquet") == 5
    got = pq.read_table(tmp_path / "list.parquet").to_pylist()
    assert got[4] == {"source_id": 4, "url": "http://h/4.jpg", "caption": "caption, 4"}
