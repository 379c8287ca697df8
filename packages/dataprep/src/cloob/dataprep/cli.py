"""The `dataprep` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

from cloob.common.cli import make_app, run_app

app = make_app("dataprep", "Turn caption datasets (CC3M, YFCC-15M, any url list) into webdataset shards with a DuckDB manifest.", "cloob-dataprep")


def main() -> None:
    run_app(app)
