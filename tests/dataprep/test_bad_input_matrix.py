"""`dataprep` bad input as a matrix: input → exit code, the one `error:` line, files left behind.

A new bad input is one `BadInput(...)` line; `support.bad_input.check` asserts exit code 2, a
single stderr line without traceback, and that the scratch folder is left exactly as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.bad_input import (
    UNREACHABLE,
    BadInput,
    PathOption,
    check,
    placed_options,
    unanswered_store,
    url_cases,
)
from support.shards import write_shards

DEAD_URL = "http://127.0.0.1:9/a.jpg"  # never fetched: every case fails before downloading


def tsv(scratch: Path) -> Path:
    path = scratch / "list.tsv"
    path.write_text(f"a caption\t{DEAD_URL}\n")
    return path


def junk(scratch: Path, name: str) -> Path:
    path = scratch / name
    path.write_bytes(os.urandom(4096))
    return path


def folder(scratch: Path, name: str) -> Path:
    (scratch / name).mkdir()
    return scratch / name


def handmade(scratch: Path) -> Path:
    """A webdataset folder made by hand: shards/*.tar and sizes.json, but not by dataprep."""
    return write_shards(scratch / "mine", 2, 3, size=16)


def urls_to(out: str, *extra: object):
    def make(scratch: Path) -> list:
        csv = scratch / "list.csv"
        csv.write_text(f"url,caption\n{DEAD_URL},a caption\n")
        return ["fetch", "urls", "--input", csv, "--out", out, *extra]

    return make


def cc3m(*extra: object):
    return lambda s: ["fetch", "cc3m", "--tsv", tsv(s), "--out", s / "out", *extra]


CASES = [
    BadInput(
        "cc3m-random-bytes-named-gz",
        lambda s: ["fetch", "cc3m", "--tsv", junk(s, "t.tsv.gz"), "--out", s / "out"],
        "not a CC3M TSV",
    ),
    BadInput(
        "cc3m-random-bytes-into-an-empty-dir",
        lambda s: ["fetch", "cc3m", "--tsv", junk(s, "t.tsv.gz"), "--out", folder(s, "out")],
        "not a CC3M TSV",
    ),
    BadInput(
        "urls-random-bytes-named-gz",
        lambda s: ["fetch", "urls", "--input", junk(s, "l.csv.gz"), "--out", s / "out"],
        "cannot read as csv",
    ),
    BadInput("max-samples-0", cc3m("--max-samples", "0"), "--max-samples must be at least 1"),
    BadInput(
        "max-samples-not-a-number", cc3m("--max-samples", "x"), "Invalid value for '--max-samples'"
    ),
    BadInput("unknown-option", cc3m("--colour", "red"), "No such option: --colour"),
    BadInput(
        "missing-option", lambda s: ["fetch", "cc3m", "--out", s / "out"], "Missing option '--tsv'"
    ),
    BadInput(
        "out-is-a-handmade-webdataset",
        lambda s: ["fetch", "cc3m", "--tsv", tsv(s), "--out", handmade(s)],
        "did not write",
    ),
    BadInput(
        "out-is-a-handmade-webdataset-with-force",
        lambda s: ["fetch", "cc3m", "--tsv", tsv(s), "--out", handmade(s), "--force"],
        "did not write",
    ),
    BadInput(
        "stats-on-a-handmade-webdataset",
        lambda s: ["stats", handmade(s)],
        "not a dataprep dataset directory",
    ),
    BadInput(
        "verify-on-a-handmade-webdataset",
        lambda s: ["verify", handmade(s)],
        "not a dataprep dataset directory",
    ),
    BadInput(
        "query-on-a-handmade-webdataset",
        lambda s: ["query", handmade(s), "SELECT 1"],
        "not a dataprep dataset directory",
    ),
    BadInput(
        "retry-on-a-handmade-webdataset",
        lambda s: ["retry", handmade(s)],
        "not a dataprep dataset directory",
    ),
    # Object-store addresses that are wrong in themselves: refused before any request is sent.
    BadInput("out-s3-url-without-bucket", urls_to("s3://"), "s3://: no bucket in the URL"),
    BadInput("out-s3-url-with-empty-bucket", urls_to("s3:///prefix"), "no bucket in the URL"),
    BadInput(
        "storage-options-endpoint-not-a-url",
        urls_to("s3://bucket/ds", "--storage-options", '{"endpoint_url": "not a url"}'),
        "endpoint_url 'not a url' is not an http(s) URL",
    ),
    BadInput(
        "storage-options-config-not-an-object",
        urls_to("s3://bucket/ds", "--storage-options", '{"config_kwargs": 3}'),
        "config_kwargs must be a JSON object",
    ),
    BadInput(
        "demo-into-a-bucket",
        lambda s: ["fetch", "demo", "--out", "s3://bucket/demo"],
        "s3://bucket/demo is a s3:// URL; this option takes a local path",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, dataprep, tmp_path):
    def run(*args):
        result = dataprep(*args)
        return result.code, result.err

    check(case, tmp_path, run)


# --- a URL where a path belongs: every path option × s3://, http://, file:// (support.bad_input)

DOWNLOADED = {"http": "could not download http://127.0.0.1:9/x.csv"}
REACHED = {"s3": UNREACHABLE}


def fetch_with(source: str, flag: str, default_input):
    """`dataprep fetch SOURCE` with a valid url list and `flag URL` (given last)."""

    def make(scratch: Path, url: str) -> list:
        args = ["fetch", source, "--out", scratch / "out", *default_input(scratch), flag, url]
        return args

    return make


def cc3m_list(scratch: Path) -> list:
    return ["--tsv", tsv(scratch)]


def urls_list(scratch: Path) -> list:
    csv = scratch / "list.csv"
    csv.write_text(f"url,caption\n{DEAD_URL},a caption\n")
    return ["--input", csv]


def yfcc_lists(scratch: Path) -> list:
    return ["--metadata", junk(scratch, "meta.tsv"), "--subset", junk(scratch, "subset.tsv")]


def no_list(scratch: Path) -> list:
    return []


def on_dataset(command: str, *before: str):
    return lambda s, url: [command, url, *before]


def with_work(command: str, *rest: str):
    return lambda s, url: [command, s / "data", *rest, "--work", url]


SOURCES = {"cc3m": cc3m_list, "yfcc15m": yfcc_lists, "urls": urls_list}
LISTS = {"cc3m": ["--tsv"], "yfcc15m": ["--metadata", "--subset"], "urls": ["--input"]}
PATH_OPTIONS = [
    *(
        PathOption(f"fetch {src}", "--out", fetch_with(src, "--out", lists), REACHED)
        for src, lists in SOURCES.items()
    ),
    *(
        PathOption(f"fetch {src}", "--work", fetch_with(src, "--work", lists))
        for src, lists in SOURCES.items()
    ),
    *(
        PathOption(f"fetch {src}", flag, fetch_with(src, flag, SOURCES[src]), DOWNLOADED)
        for src, flags in LISTS.items()
        for flag in flags
    ),
    PathOption("fetch demo", "--out", lambda s, url: ["fetch", "demo", "--out", url]),
    PathOption("stats", "root", on_dataset("stats"), REACHED),
    PathOption("verify", "root", on_dataset("verify"), REACHED),
    PathOption("retry", "root", on_dataset("retry"), REACHED),
    PathOption("query", "root", on_dataset("query", "select 1"), REACHED),
    *(
        PathOption(cmd, "--work", with_work(cmd, *rest))
        for cmd, rest in (("stats", ()), ("verify", ()), ("retry", ()), ("query", ("select 1",)))
    ),
]


def test_url_rows_cover_every_path_option():
    from cloob.dataprep.cli import app

    assert {(o.command, o.flag) for o in PATH_OPTIONS} == placed_options(app)


@pytest.mark.parametrize("case", url_cases(PATH_OPTIONS), ids=lambda c: c.id)
def test_url_where_a_path_belongs(case, dataprep, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a URL taken for a relative path would land here
    unanswered_store(monkeypatch)  # the object store: a port nobody listens on

    def run(*args):
        result = dataprep(*args)
        return result.code, result.err

    check(case, tmp_path, run)
