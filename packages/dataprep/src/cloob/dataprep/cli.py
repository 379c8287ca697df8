"""The `dataprep` command line: option groups declared once, commands that call the library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from cloob.common.cli import Options, arg, fail, make_app, opt, run_app
from cloob.dataprep.config import DISTRIBUTORS, RESIZE_MODES, DownloadOptions

app = make_app(
    "dataprep",
    "Turn caption datasets (CC3M, YFCC-15M, any url list) into webdataset shards with a DuckDB "
    "manifest.",
    "cloob-dataprep",
)
fetch_app = make_app("fetch", "Build a dataset directory: url list → shards + manifest.")
app.add_typer(fetch_app, name="fetch")

WHERE = Options(
    out=opt("Dataset directory to write, or s3://bucket/prefix.", "--out", "-o", place="storage"),
    root=arg(
        "Dataset directory written by `dataprep fetch`, or its s3://bucket/prefix.",
        place="storage",
    ),
    force=opt("Start over in a directory made with other options.", default=False),
)
STORAGE = Options(
    work=opt(
        "Local working folder of an s3:// dataset (url list, manifest, run records; copied "
        "to the bucket when a run ends). Default: ./dataprep-work/BUCKET--PREFIX.",
        default=None,
        place="local",
    ),
    storage_options=opt(
        's3fs options as JSON, e.g. \'{"endpoint_url": "http://host:9000"}\' '
        "(default: the AWS_* variables).",
        default=None,
    ),
)
DOWNLOAD = Options(
    None,
    DownloadOptions,
    image_size=opt("Image side in pixels after resizing."),
    resize_mode=opt(f"img2dataset resize mode: {', '.join(RESIZE_MODES)}."),
    processes=opt("Download processes."),
    threads=opt("Download threads per process."),
    samples_per_shard=opt("Input rows per shard."),
    max_samples=opt("Only the first N rows (subsets, smoke runs)."),
    retries=opt("HTTP retries per image."),
    timeout=opt("Seconds before an image download times out."),
    distributor=opt(f"img2dataset distributor: {', '.join(DISTRIBUTORS)}."),
    user_agent_token=opt("Token added to the user agent (X-Robots-Tag matching)."),
)
SOURCES = Options(
    tsv=opt("CC3M TSV as published (caption<TAB>url, no header): path or URL.", place="download"),
    metadata=opt(
        "YFCC100M metadata: 25-column TSV (bz2/gz/plain) or yfcc100m_dataset.sql (SQLite); "
        "path or URL.",
        place="download",
    ),
    subset=opt(
        "CLIP subset list (default: OpenAI's yfcc100m_subset_data.tsv.bz2); path or URL.",
        default=None,
        place="download",
    ),
    caption=opt("title, description or title+description.", default="title+description"),
    input=opt(
        "parquet/csv/tsv/jsonl (optionally .gz) with a header: path or URL.", place="download"
    ),
    url_col=opt("Column holding the image URL.", default="url"),
    caption_col=opt("Column holding the caption.", default="caption"),
)
DEMO = Options(
    out=opt("Dataset directory to write (local).", "--out", "-o", place="local"),
    samples=opt("Training samples.", default=20000),
    seed=opt("Random seed.", default=0),
    image_size=opt("Image side in pixels.", default=64),
    per_class=opt("Benchmark images per class.", default=50),
)
RETRY = Options(  # None: as the fetch was run
    processes=opt("Download processes.", default=None),
    threads=opt("Threads per process.", default=None),
    retries=opt("HTTP retries per image.", default=None),
    timeout=opt("Download timeout in seconds.", default=None),
)
QUERY = Options(
    sql=arg("SQL over samples, attempts, shards, runs."),
    limit=opt("Rows to print at most.", default=50),
)


@fetch_app.command("cc3m")
def fetch_cc3m(
    tsv: str = SOURCES.tsv,
    out: str = WHERE.out,
    force: bool = WHERE.force,
    image_size: int = DOWNLOAD.image_size,
    resize_mode: str = DOWNLOAD.resize_mode,
    processes: int = DOWNLOAD.processes,
    threads: int = DOWNLOAD.threads,
    samples_per_shard: int = DOWNLOAD.samples_per_shard,
    max_samples: int | None = DOWNLOAD.max_samples,
    retries: int = DOWNLOAD.retries,
    timeout: int = DOWNLOAD.timeout,
    distributor: str = DOWNLOAD.distributor,
    user_agent_token: str | None = DOWNLOAD.user_agent_token,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Conceptual Captions 3M (train or val: one run per TSV)."""
    from cloob.dataprep.sources.cc3m import cc3m_source

    _fetch(locals(), lambda root: cc3m_source(tsv, root))


@fetch_app.command("yfcc15m")
def fetch_yfcc15m(
    metadata: str = SOURCES.metadata,
    out: str = WHERE.out,
    subset: str | None = SOURCES.subset,
    caption: str = SOURCES.caption,
    force: bool = WHERE.force,
    image_size: int = DOWNLOAD.image_size,
    resize_mode: str = DOWNLOAD.resize_mode,
    processes: int = DOWNLOAD.processes,
    threads: int = DOWNLOAD.threads,
    samples_per_shard: int = DOWNLOAD.samples_per_shard,
    max_samples: int | None = DOWNLOAD.max_samples,
    retries: int = DOWNLOAD.retries,
    timeout: int = DOWNLOAD.timeout,
    distributor: str = DOWNLOAD.distributor,
    user_agent_token: str | None = DOWNLOAD.user_agent_token,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """CLIP's YFCC-15M: subset list joined with the YFCC100M metadata, photos only."""
    from cloob.dataprep.sources.yfcc15m import yfcc15m_source

    _fetch(locals(), lambda root: yfcc15m_source(metadata, subset, caption, root))


@fetch_app.command("urls")
def fetch_urls(
    input: str = SOURCES.input,
    out: str = WHERE.out,
    url_col: str = SOURCES.url_col,
    caption_col: str = SOURCES.caption_col,
    force: bool = WHERE.force,
    image_size: int = DOWNLOAD.image_size,
    resize_mode: str = DOWNLOAD.resize_mode,
    processes: int = DOWNLOAD.processes,
    threads: int = DOWNLOAD.threads,
    samples_per_shard: int = DOWNLOAD.samples_per_shard,
    max_samples: int | None = DOWNLOAD.max_samples,
    retries: int = DOWNLOAD.retries,
    timeout: int = DOWNLOAD.timeout,
    distributor: str = DOWNLOAD.distributor,
    user_agent_token: str | None = DOWNLOAD.user_agent_token,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Any url + caption list."""
    from cloob.dataprep.sources.urls import urls_source

    _fetch(locals(), lambda root: urls_source(input, url_col, caption_col))


def _fetch(args: dict, source: Callable) -> None:
    """The three fetch commands: the download options, then the library's fetch of `source`."""
    from cloob.dataprep.fetch import IncompleteError, fetch_dataset

    opts = DOWNLOAD.build(args)
    try:
        fetch_dataset(
            args["out"], source, opts, force=args["force"], say=_say, **STORAGE.values(args)
        )
    except IncompleteError as err:
        raise fail(str(err), code=1) from None


@fetch_app.command("demo")
def fetch_demo(
    out: str = DEMO.out,
    samples: int = DEMO.samples,
    seed: int = DEMO.seed,
    image_size: int = DEMO.image_size,
    per_class: int = DEMO.per_class,
) -> None:
    """A generated, seeded shape-scene dataset plus held-out zero-shot benchmarks (no network)."""
    from cloob.dataprep.sources.demo import build_demo_folder

    demo = build_demo_folder(**DEMO.values(locals()))
    typer.echo(
        f"demo dataset: {demo.shards_dir} ({samples} samples), benchmarks: "
        f"{', '.join(str(t.images_dir.parent) for t in demo.tasks.values())}"
    )


@app.command()
def stats(
    root: str = WHERE.root,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Counts, success rate, bytes, top errors and a per-shard table."""
    from cloob.dataprep.layout import existing
    from cloob.dataprep.report import print_stats

    print_stats(existing(root, work, storage_options))


@app.command()
def verify(
    root: str = WHERE.root,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Open every tar and check it against the manifest; exit 1 if any shard is bad."""
    from cloob.dataprep.layout import existing
    from cloob.dataprep.report import verify_dir

    if not verify_dir(existing(root, work, storage_options)):
        raise typer.Exit(1)


@app.command()
def retry(
    root: str = WHERE.root,
    processes: int | None = RETRY.processes,
    threads: int | None = RETRY.threads,
    retries: int | None = RETRY.retries,
    timeout: int | None = RETRY.timeout,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Download the failed samples again into new shards and update the manifest."""
    from cloob.dataprep.fetch import IncompleteError, retry_dataset

    args = locals()
    try:
        retry_dataset(root, RETRY.values(args), say=_say, **STORAGE.values(args))
    except IncompleteError as err:
        raise fail(str(err), code=1) from None


@app.command()
def query(
    root: str = WHERE.root,
    sql: str = QUERY.sql,
    limit: int = QUERY.limit,
    work: Path | None = STORAGE.work,
    storage_options: str | None = STORAGE.storage_options,
) -> None:
    """Run SQL against the manifest and print the result as a table."""
    from cloob.dataprep.layout import existing
    from cloob.dataprep.report import print_query

    print_query(existing(root, work, storage_options), sql, limit)


def _say(message: str) -> None:
    typer.secho(message, err=True)


def main() -> None:
    run_app(app)
