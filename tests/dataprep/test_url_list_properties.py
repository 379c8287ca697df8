"""Property-based checks (hypothesis) of the url-list readers and the http(s)-only rule.

- whatever the url column holds, a row is fetchable only if urllib would open it as http(s), and
  the vectorised rule agrees with the per-URL one;
- a list in any supported format reads back row for row, numbered from 0, or is refused with a
  UsageError: never another exception, never silently different rows;
- the input parts handed to img2dataset hold exactly the fetchable rows among the first
  --max-samples rows, in order, cut into parts of exactly --samples-per-shard rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cloob.common.cli import UsageError
from cloob.dataprep.allowed_urls import fetchable_mask, is_fetchable
from cloob.dataprep.fetch import _write_parts
from cloob.dataprep.layout import Layout
from cloob.dataprep.sources.cc3m import build_cc3m_list
from cloob.dataprep.sources.urls import build_urls_list

TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
SCHEMES = [
    "http",
    "https",
    "HTTP",
    "hTtPs",
    "file",
    "FILE",
    "data",
    "ftp",
    "javascript",
    "",
    " http",
    "\thttps",
    "<URL:file",
    "<URL:http",
    "http\n",
    "htt",
]
URLS = st.one_of(
    st.builds(
        "{}{}{}".format,
        st.sampled_from(SCHEMES),
        st.sampled_from(["://", ":", ":///", "//", "://localhost/"]),
        TEXT,
    ),
    TEXT,
)


def urllib_type(url: str) -> str | None:
    try:
        return urllib.request.Request(url).type
    except ValueError:
        return None


@settings(deadline=None)
@given(st.lists(URLS, min_size=1, max_size=10))
def test_a_url_is_fetchable_only_if_urllib_would_open_it_as_http(urls):
    flags = [is_fetchable(u) for u in urls]
    assert fetchable_mask(pa.array(urls, pa.string())).to_pylist() == flags
    for url, ok in zip(urls, flags, strict=True):
        if ok:  # urllib opens it as http(s), or refuses it (`http://[`: a failed row, no fetch)
            assert urllib_type(url) in ("http", "https", None), url
        else:
            assert not url.lower().startswith(("http://", "https://")), url


def write_list(folder: Path, rows: list[tuple[str, str]], fmt: str) -> Path:
    table = pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]})
    path = folder / f"list.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "minimal.csv":  # Python's csv module: quotes only where needed, as people write
        buf = io.StringIO()
        csv.writer(buf).writerows([("url", "caption"), *rows])
        path.write_text(buf.getvalue(), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"url": u, "caption": c}) + "\n" for u, c in rows), encoding="utf-8"
        )
    else:
        base = fmt.removesuffix(".gz")
        options = pacsv.WriteOptions(delimiter="\t" if base == "tsv" else ",")
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, options)
        data = sink.getvalue().to_pybytes()
        path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return path


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(URLS, TEXT), min_size=1, max_size=12),
    st.sampled_from(["csv", "tsv", "jsonl", "parquet", "csv.gz", "tsv.gz", "minimal.csv"]),
)
def test_url_lists_read_back_row_for_row_or_are_refused(rows, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = write_list(folder, rows, fmt)
        try:
            n = build_urls_list(source, "url", "caption", folder / "urls.parquet")
        except UsageError as err:
            assert not (folder / "urls.parquet").exists()
            event(f"refused: {str(err).split(': ', 1)[-1][:50]}")
            return
        table = pq.read_table(folder / "urls.parquet").to_pydict()
    assert n == len(rows)
    assert table["source_id"] == list(range(n))
    assert list(zip(table["url"], table["caption"], strict=True)) == rows


# CC3M's TSV has no quoting: a field holds anything but a tab or a line break.
FIELD = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\t\n\r"), max_size=30
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(FIELD, FIELD.map("http://{}".format)), min_size=1, max_size=12))
def test_cc3m_tsv_reads_back_row_for_row(rows):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tsv = folder / "Train_GCC-training.tsv"
        tsv.write_text("".join(f"{caption}\t{url}\n" for caption, url in rows), encoding="utf-8")
        n = build_cc3m_list(tsv, folder / "urls.parquet")
        table = pq.read_table(folder / "urls.parquet").to_pydict()
    assert n == len(rows) and table["source_id"] == list(range(n))
    assert list(zip(table["caption"], table["url"], strict=True)) == rows


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=30),
    st.integers(1, 7),
    st.none() | st.integers(1, 40),
)
def test_img2dataset_parts_hold_exactly_the_fetchable_rows(fetchable, part_rows, limit):
    urls = [f"http://h/{i}.jpg" if ok else f"file:///tmp/{i}.jpg" for i, ok in enumerate(fetchable)]
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        pq.write_table(
            pa.table(
                {
                    "source_id": pa.array(range(len(urls)), pa.int64()),
                    "url": urls,
                    "caption": ["c"] * len(urls),
                }
            ),
            layout.url_list,
        )
        rows, kept = _write_parts(layout, part_rows, limit)
        parts = [
            pq.read_table(p)["source_id"].to_pylist()
            for p in sorted(layout.inputs.glob("*.parquet"))
        ]
        refused = (
            pq.read_table(layout.refused).to_pydict()
            if layout.refused.exists()
            else {"source_id": [], "status": [], "error_message": []}
        )
    first = range(len(urls) if limit is None else min(limit, len(urls)))
    assert rows == len(first)
    assert [i for part in parts for i in part] == [i for i in first if fetchable[i]]
    assert kept == sum(map(len, parts))
    assert all(len(part) == part_rows for part in parts[:-1]) and all(parts)
    assert refused["source_id"] == [i for i in first if not fetchable[i]]
    assert set(refused["status"]) <= {"failed_to_download"}
