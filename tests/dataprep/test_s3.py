"""Datasets in an S3 bucket (moto on 127.0.0.1): `fetch urls --out s3://…` writes shards, parquet,
stats and sizes.json there through img2dataset/s3fs, keeps the records in `--work` and copies them
to the bucket at the end; stats/query/verify/retry read it back; a kill mid-upload resumes exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from support.s3 import S3Server

N = 15
OPTS = ["--samples-per-shard", "5", "--processes", "1", "--threads", "2", "--timeout", "5",
        "--image-size", "32"]
RECORDS = [".dataprep", "fetch.json", "img2dataset.log", "manifest.duckdb", "runs.json",
           "urls.json", "urls.parquet"]


@pytest.fixture(scope="module")
def url_csv(served, tmp_path_factory) -> Path:
    lines = ["url,caption"] + [f'{served.server.url(img.relpath)},"{img.caption} {i}"'
                               for i, img in enumerate(served.images[:N])]
    csv = tmp_path_factory.mktemp("list") / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def _samples(manifest: Path) -> list[tuple]:
    with duckdb.connect(str(manifest), read_only=True) as con:
        return con.execute("SELECT source_id, key, shard, status, sha256 FROM samples "
                           "ORDER BY source_id").fetchall()


def test_fetch_to_bucket_then_read_it_back(s3: S3Server, url_csv: Path, dataprep,
                                           tmp_path: Path) -> None:
    url, work = s3.url("ds"), tmp_path / "work"
    r = dataprep("fetch", "urls", "--input", url_csv, "--out", url, "--work", work, *OPTS)
    assert r.code == 0, r.err
    keys = s3.keys("ds/")
    shards = [f"ds/shards/0000{i}{s}" for i in range(3) for s in (".parquet", ".tar", "_stats.json")]
    assert keys == sorted([*(f"ds/{n}" for n in RECORDS), *shards, "ds/shards/sizes.json",
                           "ds/sizes.json"])
    assert json.loads(s3.read("ds/sizes.json")) == {f"0000{i}.tar": 5 for i in range(3)}
    assert not (work / "shards").exists()  # no local copy of the shards
    samples = _samples(work / "manifest.duckdb")
    assert [s[0] for s in samples] == list(range(N)) and {s[3] for s in samples} == {"success"}

    # Another machine: an empty working folder; everything comes from the bucket.
    other = tmp_path / "other"
    outputs = [r.out + r.err]
    for args in (["stats", url], ["verify", url], ["query", url, "SELECT count(*) AS n FROM samples"],
                 ["retry", url]):
        r = dataprep(*args, "--work", other)
        assert r.code == 0, (args, r.err)
        outputs.append(r.out + r.err)
    assert "15 samples verified" in outputs[2] and "│ 15 │" in outputs[3]
    assert "nothing to retry" in outputs[4]
    assert _samples(other / "manifest.duckdb") == samples
    runs = json.loads(s3.read("ds/runs.json"))
    assert [r["command"] for r in runs] == ["fetch", "retry"]
    # The credentials never show in what was printed or written, locally or in the bucket.
    written = [p.read_bytes() for p in [*work.rglob("*"), *other.rglob("*")] if p.is_file()]
    written += [s3.read(k) for k in s3.keys("ds/") if not k.endswith(".tar")]
    assert not any(s3.secret in text for text in outputs)
    assert not any(s3.secret.encode() in data for data in written)
