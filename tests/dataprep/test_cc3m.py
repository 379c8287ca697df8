"""CC3M end to end on the loopback server: the published TSV, faults, stats/verify/query/retry."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import duckdb
import pytest

FAULTS = {  # row → (fault kind, options, expected status)
    18: ("404", {}, "failed_to_download"),
    19: ("delay", {"seconds": 4.0}, "failed_to_download"),
    20: ("corrupt", {}, "failed_to_resize"),
    21: ("truncate", {}, "failed_to_resize"),
    22: ("noai", {}, "failed_to_download"),
}
N_ROWS = 26  # rows 0..22 are images (18..22 faulty), 23 not an image, 24 missing, 25 quoted
FETCH_OPTS = [
    "--processes",
    "1",
    "--threads",
    "4",
    "--samples-per-shard",
    "10",
    "--timeout",
    "2",
    "--image-size",
    "64",
]


@pytest.fixture(scope="module")
def cc3m(served, cli, write_cc3m_tsv, tmp_path_factory):
    base = tmp_path_factory.mktemp("cc3m")
    rows = [(img.caption, served.server.url(img.relpath)) for img in served.images[:23]]
    for row, (kind, options, _) in FAULTS.items():
        served.server.fault(served.images[row].relpath, kind, **options)
    rows += [
        ("a text file", served.server.url("notimage.txt")),
        ("gone", served.server.url("img/missing.jpg")),
        ("a \"quoted\" caption, with 'quotes'", served.server.url(served.images[25].relpath)),
    ]
    tsv = write_cc3m_tsv(base / "Validation_GCC-1.1.0-Validation.tsv", rows)
    out = base / "cc3m"
    assert cli("fetch", "cc3m", "--tsv", tsv, "--out", out, *FETCH_OPTS) == 0
    return tsv, out, rows


def _samples(out: Path) -> list[tuple]:
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT source_id, status, error_message, caption, url, sha256, key "
            "FROM samples ORDER BY source_id"
        ).fetchall()


def test_every_row_is_in_the_manifest_with_its_status(cc3m):
    _, out, rows = cc3m
    samples = _samples(out)
    assert [s[0] for s in samples] == list(range(N_ROWS))  # source_id = TSV row number
    by_id = {s[0]: s for s in samples}
    for row, (_, _, status) in FAULTS.items():
        assert by_id[row][1] == status, by_id[row]
        assert by_id[row][2]
    assert "404" in by_id[18][2]
    assert "timed out" in by_id[19][2]
    assert "X-Robots-Tag" in by_id[22][2]
    assert by_id[23][1] == "failed_to_resize" and by_id[24][1] == "failed_to_download"
    good = [i for i in range(N_ROWS) if i not in FAULTS and i not in (23, 24)]
    assert all(by_id[i][1] == "success" and len(by_id[i][5]) == 64 for i in good)
    assert by_id[25][3] == rows[25][0]  # quotes survive: the TSV has no quoting
    assert all("." not in s[6] for s in samples)


def test_shards_sizes_and_tar_members(cc3m):
    _, out, rows = cc3m
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == json.loads((out / "shards" / "sizes.json").read_text())
    assert sorted(sizes) == ["00000.tar", "00001.tar", "00002.tar"]
    assert sum(sizes.values()) == N_ROWS - len(FAULTS) - 2
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        names = tar.getnames()
        first = json.loads(tar.extractfile("000000.json").read())  # 10 per shard: 1+5 digits
    assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert first["source_id"] == 0 and first["caption"] == rows[0][0]
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        shards = con.execute(
            "SELECT shard, n_rows, n_success, n_failed, complete FROM shards ORDER BY shard"
        ).fetchall()
        runs = con.execute("SELECT command, rows, success, versions FROM runs").fetchall()
    assert [s[1] for s in shards] == [10, 10, 6] and all(s[4] for s in shards)
    assert runs[0][:3] == ("fetch", N_ROWS, sum(sizes.values()))
    assert "img2dataset" in json.loads(runs[0][3])


def test_rerun_is_a_no_op_and_other_options_are_refused(cc3m, dataprep):
    tsv, out, _ = cc3m
    tar = out / "shards" / "00001.tar"
    mtime = tar.stat().st_mtime_ns
    assert dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out, *FETCH_OPTS).code == 0
    assert tar.stat().st_mtime_ns == mtime
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = dataprep("fetch", "cc3m", "--tsv", tsv, "--out", out, *FETCH_OPTS[:-1], "128")
    assert result.code == 2
    assert "different options" in result.err and "--force" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    broken = tsv.with_name("broken.tsv")
    broken.write_text("caption\thttp://h/1.jpg\textra column\n")
    result = dataprep("fetch", "cc3m", "--tsv", broken, "--out", out, "--force", *FETCH_OPTS)
    assert result.code == 2 and "Expected 2 columns" in result.err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_stats_verify_query(cc3m, dataprep):
    _, out, _ = cc3m
    stats = dataprep("stats", out)
    assert stats.code == 0
    assert "26" in stats.out and "00002.tar" in stats.out and "top errors" in stats.out
    assert "X-Robots-Tag" in stats.out
    verify = dataprep("verify", out)
    assert verify.code == 0 and "ok" in verify.out
    query = dataprep(
        "query", out, "SELECT status, count(*) AS n FROM samples GROUP BY ALL ORDER BY status"
    )
    assert query.code == 0 and "failed_to_download" in query.out and "success" in query.out
    bad = dataprep("query", out, "SELECT nope FROM samples")
    assert bad.code == 2 and bad.err.startswith("error: query failed")


def test_verify_reports_a_damaged_shard(cc3m, dataprep, tmp_path):
    _, out, _ = cc3m
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tar = copy / "shards" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    result = dataprep("verify", copy)
    assert result.code == 1
    assert "00001.tar" in result.out and "1 bad shard" in result.out


def test_retry_downloads_only_failed_samples_into_new_shards(cc3m, served, dataprep, tmp_path):
    tsv, out, rows = cc3m
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    served.server.clear_faults()  # the web healed: 404/timeout/corrupt/... rows now download
    hits_before = served.server.hits(served.images[0].relpath)
    result = dataprep("retry", copy, "--threads", "4")
    assert result.code == 0, result.err
    assert served.server.hits(served.images[0].relpath) == hits_before  # successes not refetched
    samples = {s[0]: s for s in _samples(copy)}
    assert len(samples) == N_ROWS
    for row in FAULTS:
        assert samples[row][1] == "success", samples[row]
    assert samples[23][1] == "failed_to_resize"  # still not an image
    sizes = json.loads((copy / "sizes.json").read_text())
    assert sorted(sizes) == ["00000.tar", "00001.tar", "00002.tar", "00003.tar"]
    assert sizes["00003.tar"] == len(FAULTS)
    with duckdb.connect(str(copy / "manifest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM attempts").fetchone()[0] == N_ROWS + 7
        assert con.execute("SELECT max(n_attempts) FROM samples").fetchone()[0] == 2
        commands = [r[0] for r in con.execute("SELECT command FROM runs").fetchall()]
    assert commands[0] == "fetch" and commands[-1] == "retry"
    assert dataprep("verify", copy).code == 0
