"""YFCC-15M: subset bz2 + 25-column metadata (bz2, plain) or SQLite, joined, cleaned, fetched."""

from __future__ import annotations

import bz2
import json
import sqlite3
import tarfile
from pathlib import Path
from urllib.parse import quote_plus

import duckdb
import pyarrow.parquet as pq
import pytest

from cloob.dataprep.sources.yfcc15m import build_yfcc_list, clean_text

SQL_COLUMNS = [
    "photoid",
    "uid",
    "unickname",
    "datetaken",
    "dateuploaded",
    "capturedevice",
    "title",
    "description",
    "usertags",
    "machinetags",
    "longitude",
    "latitude",
    "accuracy",
    "pageurl",
    "downloadurl",
    "licensename",
    "licenseurl",
    "serverid",
    "farmid",
    "secret",
    "secretoriginal",
    "ext",
    "marker",
]
TITLES = {
    1000: ("A <b>red</b> circle", "on a <i>grey</i>   background&amp;more"),
    1001: ("Blue+square?", ""),
    1002: ("", "only a description, 100% true"),
    1003: ("Tab\tand\nnewline", "<a href='http://x'>link</a> text"),
}
SUBSET = [1003, 1000, 1001, 1002, 1004, 1005, 1006, 1007, 1008, 5555]  # file order = list order
PHOTOS = range(1000, 1008)
VIDEO = 1008
NOT_IN_SUBSET = (1009, 1010, 1011)


def _meta_rows(url_for) -> list[dict]:
    rows = []
    for n, pid in enumerate([*PHOTOS, VIDEO, *NOT_IN_SUBSET]):
        title, desc = TITLES.get(pid, (f"photo {pid}", f"described as number {pid}"))
        rows.append(
            {
                "photoid": pid,
                "title": quote_plus(title),
                "description": quote_plus(desc),
                "downloadurl": url_for(n),
                "marker": 1 if pid == VIDEO else 0,
                "line": n,
            }
        )
    return rows


def _tsv_line(r: dict) -> str:
    fields = [
        str(r["line"]),
        str(r["photoid"]),
        f"{r['photoid']:032x}",
        "12345@N00",
        "nick",
        "2010-06-01+12%3A00%3A00.0",
        "1275393600",
        "Canon+EOS+5D",
        r["title"],
        r["description"],
        "red,circle",
        "",
        "",
        "",
        "",
        f"http://flickr.com/p/{r['photoid']}",
        r["downloadurl"],
        "Attribution+License",
        "http://cc/by",
        "42",
        "1",
        "abc",
        "def",
        "jpg",
        str(r["marker"]),
    ]
    assert len(fields) == 25
    return "\t".join(fields) + "\n"


def write_yfcc_files(base: Path, url_for) -> dict[str, Path]:
    rows = _meta_rows(url_for)
    tsv = "".join(_tsv_line(r) for r in rows)
    files = {
        "subset": base / "yfcc100m_subset_data.tsv.bz2",
        "meta_bz2": base / "yfcc100m_dataset.bz2",
        "meta_tsv": base / "yfcc100m_dataset.tsv",
        "meta_sql": base / "yfcc100m_dataset.sql",
    }
    files["subset"].write_bytes(
        bz2.compress("".join(f"{i}\t{pid}\t{pid:032x}\n" for i, pid in enumerate(SUBSET)).encode())
    )
    files["meta_bz2"].write_bytes(bz2.compress(tsv.encode()))
    files["meta_tsv"].write_text(tsv)
    con = sqlite3.connect(files["meta_sql"])
    con.execute(f"CREATE TABLE yfcc100m_dataset ({', '.join(SQL_COLUMNS)})")
    for r in rows:
        values = {c: r.get(c, "x") for c in SQL_COLUMNS}
        con.execute(
            f"INSERT INTO yfcc100m_dataset VALUES ({', '.join('?' * len(SQL_COLUMNS))})",
            [values[c] for c in SQL_COLUMNS],
        )
    con.commit()
    con.close()
    return files


@pytest.fixture(scope="module")
def yfcc_files(served, tmp_path_factory) -> dict[str, Path]:
    files = write_yfcc_files(served.root, lambda n: served.server.url(served.images[n].relpath))
    files["subset_url"] = served.server.url(files["subset"].name)  # served over loopback
    return files


def test_clean_text():
    assert clean_text("A+red+%3Cb%3Ecircle%3C%2Fb%3E") == "A red circle"
    assert clean_text(quote_plus("x &amp; y <br/>  z\t\n")) == "x & y z"
    assert clean_text("100%25+sure") == "100% sure"
    assert clean_text("bad+%ZZ+%ff") == "bad %ZZ \ufffd"
    assert clean_text(None) == ""


@pytest.mark.parametrize("meta", ["meta_bz2", "meta_tsv", "meta_sql"])
def test_join(yfcc_files, meta, tmp_path):
    report = build_yfcc_list(yfcc_files["subset"], yfcc_files[meta], tmp_path / "l.parquet")
    assert (report.subset_ids, report.matched, report.videos, report.rows, report.missing) == (
        10,
        9,
        1,
        8,
        1,
    )
    rows = pq.read_table(tmp_path / "l.parquet").to_pylist()
    assert [r["source_id"] for r in rows] == [p for p in SUBSET if p in PHOTOS]  # subset order
    by_id = {r["source_id"]: r for r in rows}
    assert by_id[1000]["title"] == "A red circle"
    assert by_id[1000]["description"] == "on a grey background&more"
    assert by_id[1000]["caption"] == "A red circle. on a grey background&more"
    assert by_id[1001]["caption"] == "Blue+square?"  # no description; a literal + survives
    assert by_id[1002]["caption"] == "only a description, 100% true"
    assert by_id[1003]["title"] == "Tab and newline" and by_id[1003]["description"] == "link text"


def test_caption_modes(yfcc_files, tmp_path):
    for mode, want in (("title", "A red circle"), ("description", "on a grey background&more")):
        build_yfcc_list(
            yfcc_files["subset"], yfcc_files["meta_bz2"], tmp_path / f"{mode}.parquet", caption=mode
        )
        rows = pq.read_table(tmp_path / f"{mode}.parquet").to_pylist()
        assert next(r for r in rows if r["source_id"] == 1000)["caption"] == want


def test_fetch_yfcc15m(yfcc_files, dataprep, tmp_path):
    out = tmp_path / "yfcc"
    args = [
        "fetch",
        "yfcc15m",
        "--subset",
        yfcc_files["subset_url"],
        "--metadata",
        yfcc_files["meta_bz2"],
        "--out",
        out,
        "--processes",
        "1",
        "--threads",
        "4",
        "--samples-per-shard",
        "4",
        "--image-size",
        "64",
    ]
    result = dataprep(*args)
    assert result.code == 0, result.err
    assert "8 photos" in result.err and "1 videos dropped" in result.err
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT source_id FROM samples WHERE status = 'success' ORDER BY key"
            ).fetchall()
        ]
    assert ids == [p for p in SUBSET if p in PHOTOS]  # source id = photo id
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        meta = json.loads(tar.extractfile("000000.json").read())
        caption = tar.extractfile("000000.txt").read().decode()
    assert meta["source_id"] == 1003 and meta["title"] == "Tab and newline"
    assert caption == "Tab and newline. link text"
    again = dataprep(*args)
    assert again.code == 0 and "reusing url list" in again.err
