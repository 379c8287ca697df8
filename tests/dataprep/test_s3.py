"""Datasets in an S3 bucket (moto on 127.0.0.1): `fetch urls --out s3://…` writes shards, parquet,
stats and sizes.json there through img2dataset/s3fs, keeps the records in `--work` and copies them
to the bucket at the end; stats/query/verify/retry read it back; a kill mid-upload resumes exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from support.cli import kill_dataprep_when
from support.s3 import BROKEN_STORES, S3Server, break_store
from support.sockets import Relay

N = 15  # the kill test: 3 shards of 5, so rows 7 and 12 hold shards 1 and 2 open
SMALL = 6  # the round trip: 3 shards of 2 (its time is img2dataset's start-up, not the samples)


def _opts(per_shard: int) -> list[str]:
    return [
        "--samples-per-shard",
        str(per_shard),
        "--processes",
        "1",
        "--threads",
        "2",
        "--timeout",
        "5",
        "--image-size",
        "32",
    ]


OPTS, SMALL_OPTS = _opts(5), _opts(2)
RECORDS = [
    ".dataprep",
    "fetch.json",
    "img2dataset.log",
    "manifest.duckdb",
    "runs.json",
    "urls.json",
    "urls.parquet",
]


def _url_list(served, folder: Path, n: int) -> Path:
    lines = ["url,caption"] + [
        f'{served.server.url(img.relpath)},"{img.caption} {i}"'
        for i, img in enumerate(served.images[:n])
    ]
    csv = folder / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.fixture(scope="module")
def url_csv(served, tmp_path_factory) -> Path:
    return _url_list(served, tmp_path_factory.mktemp("list"), N)


@pytest.fixture(scope="module")
def small_csv(served, tmp_path_factory) -> Path:
    return _url_list(served, tmp_path_factory.mktemp("small"), SMALL)


def _samples(manifest: Path) -> list[tuple]:
    with duckdb.connect(str(manifest), read_only=True) as con:
        return con.execute(
            "SELECT source_id, key, shard, status, sha256 FROM samples ORDER BY source_id"
        ).fetchall()


def test_fetch_to_bucket_then_read_it_back(
    s3: S3Server, small_csv: Path, dataprep, tmp_path: Path
) -> None:
    url, work = s3.url("ds"), tmp_path / "work"
    r = dataprep("fetch", "urls", "--input", small_csv, "--out", url, "--work", work, *SMALL_OPTS)
    assert r.code == 0, r.err
    keys = s3.list_keys("ds/")
    shards = [
        f"ds/shards/0000{i}{s}" for i in range(3) for s in (".parquet", ".tar", "_stats.json")
    ]
    assert keys == sorted(
        [*(f"ds/{n}" for n in RECORDS), *shards, "ds/shards/sizes.json", "ds/sizes.json"]
    )
    assert json.loads(s3.read("ds/sizes.json")) == {f"0000{i}.tar": 2 for i in range(3)}
    assert not (work / "shards").exists()  # no local copy of the shards
    samples = _samples(work / "manifest.duckdb")
    assert [s[0] for s in samples] == list(range(SMALL)) and {s[3] for s in samples} == {"success"}

    # Another machine: an empty working folder; everything comes from the bucket.
    other = tmp_path / "other"
    outputs = [r.out + r.err]
    for args in (
        ["stats", url],
        ["verify", url],
        ["query", url, "SELECT count(*) AS n FROM samples"],
        ["retry", url],
    ):
        r = dataprep(*args, "--work", other)
        assert r.code == 0, (args, r.err)
        outputs.append(r.out + r.err)
    assert f"{SMALL} samples verified" in outputs[2] and f"│ {SMALL} │" in outputs[3]
    assert "nothing to retry" in outputs[4]
    assert _samples(other / "manifest.duckdb") == samples
    runs = json.loads(s3.read("ds/runs.json"))
    assert [r["command"] for r in runs] == ["fetch", "retry"]
    # The credentials never show in what was printed or written, locally or in the bucket.
    written = [p.read_bytes() for p in [*work.rglob("*"), *other.rglob("*")] if p.is_file()]
    written += [s3.read(k) for k in s3.list_keys("ds/") if not k.endswith(".tar")]
    assert not any(s3.secret in text for text in outputs)
    assert not any(s3.secret.encode() in data for data in written)


@pytest.mark.slow  # two img2dataset runs (~40 s on a loaded 2-core box)
def test_kill_mid_upload_then_rerun_completes_exactly(
    s3: S3Server, served, url_csv: Path, dataprep, tmp_path: Path
) -> None:
    for row in (7, 12):  # shards 1 and 2 stay open ~1.5 s: the kill lands mid-shard
        served.server.fault(served.images[row].relpath, "delay", seconds=1.5)
    url, work = s3.url("ds"), tmp_path / "work"
    kill_dataprep_when(
        ["fetch", "urls", "--input", url_csv, "--out", url, "--work", work, *OPTS],
        lambda: "ds/shards/00000_stats.json" in s3.list_keys("ds/"),
        timeout=180,
    )
    served.server.clear_faults()
    keys = s3.list_keys("ds/")
    assert "ds/shards/00001_stats.json" not in keys and "ds/fetch.json" not in keys
    first = s3.client().head_object(Bucket=s3.bucket, Key="ds/shards/00000.tar")["ETag"]

    r = dataprep("fetch", "urls", "--input", url_csv, "--out", url, "--work", work, *OPTS)
    assert r.code == 0, r.err
    assert s3.client().head_object(Bucket=s3.bucket, Key="ds/shards/00000.tar")["ETag"] == first
    with duckdb.connect(str(work / "manifest.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT source_id, count(*) FROM attempts GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(i, 1) for i in range(N)]  # every row once
    assert json.loads(s3.read("ds/sizes.json")) == {f"0000{i}.tar": 5 for i in range(3)}
    assert dataprep("verify", url, "--work", tmp_path / "fresh").code == 0


@pytest.mark.slow  # one img2dataset run (~20 s)
def test_verify_reports_a_bucket_run_cut_short(
    s3: S3Server, small_csv: Path, dataprep, tmp_path: Path
) -> None:
    """What a run killed before its records were copied leaves in the bucket (shards 0-1 done,
    no fetch.json): `verify` must say the fetch is unfinished, from any working folder."""
    url, work = s3.url("ds"), tmp_path / "work"
    assert (
        dataprep(
            "fetch", "urls", "--input", small_csv, "--out", url, "--work", work, *SMALL_OPTS
        ).code
        == 0
    )
    client = s3.client()
    for key in (
        "fetch.json",
        "runs.json",
        "manifest.duckdb",
        "sizes.json",
        "shards/sizes.json",
        "shards/00002.tar",
        "shards/00002.parquet",
        "shards/00002_stats.json",
    ):
        client.delete_object(Bucket=s3.bucket, Key=f"ds/{key}")
    for name in ("runs.json", "manifest.duckdb"):  # the working folder of the killed run
        (work / name).unlink()
    for folder, count in ((tmp_path / "fresh", "2 shards finished"), (work, "2 of 3 shards")):
        r = dataprep("verify", url, "--work", folder)
        out = " ".join(r.out.split())
        # a fresh --work folder must not judge the bucket by the shards it sees alone
        assert r.code == 1, out
        assert f"incomplete: {count}" in out and "fetch did not complete" in out, out
        assert "ok:" not in out


@pytest.mark.slow  # two img2dataset runs and a minute of timeouts
def test_store_that_stops_answering_mid_fetch_ends_then_rerun_completes(
    s3: S3Server, served, url_csv: Path, monkeypatch, tmp_path: Path
) -> None:
    """The store goes silent (connections open, no byte comes back) once shard 0 is up: the
    fetch must end by itself with one `error:` line, not hang; once the store is back the same
    command finishes with every row exactly once."""
    for row in (7, 12):
        served.server.fault(served.images[row].relpath, "delay", seconds=1.5)
    host, port = s3.endpoint.removeprefix("http://").split(":")
    url, work = s3.url("ds"), tmp_path / "work"
    # Short timeouts, as a user on a fast local store might set them; the defaults are longer.
    limits = '{"config_kwargs": {"read_timeout": 2, "retries": {"max_attempts": 2}}}'
    args = [
        "fetch",
        "urls",
        "--input",
        url_csv,
        "--out",
        url,
        "--work",
        work,
        *OPTS,
        "--storage-options",
        limits,
    ]
    cmd = [sys.executable, "-c", "from cloob.dataprep.cli import main; main()", *map(str, args)]
    with Relay((host, int(port))) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            while "ds/shards/00000_stats.json" not in s3.list_keys("ds/"):
                assert proc.stderr is not None  # stderr=PIPE
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            relay.freeze()
            frozen = time.monotonic()
            # Ends in ~45 s here (before the watchdog: ~2 runs in 7 still waiting after 6
            # minutes); generous for a loaded box.
            _, err = proc.communicate(timeout=180)
            print(
                f"fetch ended {time.monotonic() - frozen:.1f} s after the store went silent:",
                err.strip().splitlines()[-1:],
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert len(errors) == 1 and errors[0].startswith(
            f"error: {url}/shards: the storage endpoint did not answer"
        ), err
        relay.thaw()
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with duckdb.connect(str(work / "manifest.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT source_id, count(*) FROM attempts GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(i, 1) for i in range(N)]  # every row once
    assert json.loads(s3.read("ds/sizes.json")) == {f"0000{i}.tar": 5 for i in range(3)}


def _env(s3: S3Server, monkeypatch, case: str) -> str:
    """Break one thing about the store; return the dataset URL to use."""
    if case == "foreign-prefix":
        s3.client().put_object(Bucket=s3.bucket, Key="ds/theirs.txt", Body=b"not ours")
        return s3.url("ds")
    return break_store(s3, monkeypatch, case, "ds")


BROKEN = [*BROKEN_STORES, ("foreign-prefix", "objects dataprep did not write")]


@pytest.mark.parametrize(("case", "message"), BROKEN, ids=[c for c, _ in BROKEN])
@pytest.mark.parametrize("command", ["fetch", "stats", "retry"])
def test_unusable_bucket_is_one_error_line(
    s3: S3Server,
    monkeypatch,
    dataprep,
    tmp_path: Path,
    url_csv: Path,
    command: str,
    case: str,
    message: str,
) -> None:
    if command != "fetch" and case == "foreign-prefix":
        message = "not a dataprep dataset" if command == "stats" else "not a finished dataprep"
    url, work = _env(s3, monkeypatch, case), tmp_path / "work"
    by_command: dict[str, list[object]] = {
        "fetch": ["fetch", "urls", "--input", url_csv, "--out", url, *OPTS],
        "stats": ["stats", url],
        "retry": ["retry", url],
    }
    args = by_command[command]
    before = s3.list_keys()
    r = dataprep(*args, "--work", work)
    lines = r.err.strip().splitlines()
    assert r.code == 2, r.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.err
    assert s3.secret not in r.out + r.err
    assert s3.list_keys() == before  # nothing written to the bucket
    assert (
        not any(p.is_file() and p.name != ".lock" for p in work.rglob("*"))
        if work.exists()
        else True
    )


def _count_requests(monkeypatch) -> dict[str, int]:
    """S3 operation → calls s3fs makes from now on, in any client of this process (every request
    goes through `S3FileSystem._call_s3`; the requests still reach the server)."""
    from s3fs import S3FileSystem

    counts: dict[str, int] = {}
    send = S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        name = getattr(method, "__name__", method)
        counts[name] = counts.get(name, 0) + 1
        return await send(self, method, *args, **kwargs)

    monkeypatch.setattr(S3FileSystem, "_call_s3", counted)
    return counts


def test_manifest_staleness_check_is_one_listing(s3: S3Server, monkeypatch, tmp_path: Path) -> None:
    """Whether the manifest must be rebuilt is one LIST of the shards, not a HEAD per shard."""
    from cloob.dataprep.layout import Layout
    from cloob.dataprep.manifest import is_stale

    client = s3.client()
    for i in range(40):
        for suffix in (".tar", ".parquet", "_stats.json"):
            client.put_object(Bucket=s3.bucket, Key=f"ds/shards/{i:05d}{suffix}", Body=b"x")
    layout = Layout(tmp_path, s3.url("ds"))
    layout.manifest.write_bytes(b"")
    later = time.time() + 3600
    os.utime(layout.manifest, (later, later))
    counts = _count_requests(monkeypatch)
    assert not is_stale(layout)
    assert counts == {"list_objects_v2": 1}, counts  # not a HEAD per object: 120 here
    os.utime(layout.manifest, (later - 7200, later - 7200))  # a shard is newer now
    assert is_stale(layout)
