"""The `dataprep` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cloob.common.cli import UsageError, fail, make_app, run_app
from cloob.dataprep.config import DISTRIBUTORS, RESIZE_MODES, DownloadOptions
from cloob.dataprep.engines import preflight

app = make_app(
    "dataprep",
    "Turn caption datasets (CC3M, YFCC-15M, any url list) into webdataset shards with a DuckDB "
    "manifest.",
    "cloob-dataprep",
)
fetch_app = typer.Typer(
    help="Build a dataset directory: url list → shards + manifest.", no_args_is_help=True
)
app.add_typer(fetch_app, name="fetch")

Out = Annotated[
    str, typer.Option("--out", "-o", help="Dataset directory to write, or s3://bucket/prefix.")
]
Work = Annotated[
    Path | None,
    typer.Option(
        help="Local working folder of an s3:// dataset (url list, manifest, run records; copied "
        "to the bucket when a run ends). Default: ./dataprep-work/BUCKET--PREFIX."
    ),
]
StorageOptions = Annotated[
    str | None,
    typer.Option(
        help='s3fs options as JSON, e.g. \'{"endpoint_url": "http://host:9000"}\' '
        "(default: the AWS_* variables)."
    ),
]
ImageSize = Annotated[int, typer.Option(help="Image side in pixels after resizing.")]
ResizeMode = Annotated[
    str, typer.Option(help=f"img2dataset resize mode: {', '.join(RESIZE_MODES)}.")
]
Processes = Annotated[int, typer.Option(help="Download processes.")]
Threads = Annotated[int, typer.Option(help="Download threads per process.")]
PerShard = Annotated[int, typer.Option(help="Input rows per shard.")]
MaxSamples = Annotated[
    int | None, typer.Option(help="Only the first N rows (subsets, smoke runs).")
]
Retries = Annotated[int, typer.Option(help="HTTP retries per image.")]
Timeout = Annotated[int, typer.Option(help="Seconds before an image download times out.")]
Distributor = Annotated[
    str, typer.Option(help=f"img2dataset distributor: {', '.join(DISTRIBUTORS)}.")
]
UserAgent = Annotated[
    str | None, typer.Option(help="Token added to the user agent (X-Robots-Tag matching).")
]
Force = Annotated[
    bool, typer.Option("--force", help="Start over in a directory made with other options.")
]
Dir = Annotated[
    str,
    typer.Argument(
        help="Dataset directory written by `dataprep fetch`, or its s3://bucket/prefix."
    ),
]


_COMMON = {  # the download flags every fetch command takes: name → (annotated type, default)
    "image_size": (ImageSize, 256),
    "resize_mode": (ResizeMode, "border"),
    "processes": (Processes, 1),
    "threads": (Threads, 32),
    "samples_per_shard": (PerShard, 10000),
    "max_samples": (MaxSamples, None),
    "retries": (Retries, 0),
    "timeout": (Timeout, 10),
    "distributor": (Distributor, "multiprocessing"),
    "user_agent_token": (UserAgent, None),
}


_STORAGE = {"work": (Work, None), "storage_options": (StorageOptions, None)}


def _where(out: str, work: Path | None, storage_options: str | None) -> tuple[Path, str | None]:
    """(local folder, dataset URL or None): a remote dataset keeps its records in `work`."""
    from cloob.common import storage
    from cloob.dataprep.layout import default_work

    storage.configure(storage_options)
    storage.location(out)  # refuses schemes we do not support
    if storage.is_remote(out):
        return (work or default_work(out)).expanduser().absolute(), out.rstrip("/")
    if work is not None:
        raise UsageError("--work is for a dataset in an object store (--out s3://...)")
    return Path(out).expanduser(), None


def _with_download_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a fetch command the common download flags; it receives them as one `opts`."""
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name not in ("opts", "data")]
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, (annotation, default) in {**_COMMON, **_STORAGE}.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        common = {name: kwargs.pop(name) for name in _COMMON}
        kwargs["out"], data = _where(
            kwargs["out"], kwargs.pop("work"), kwargs.pop("storage_options")
        )
        command(opts=_options(**common), data=data, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper


def _options(
    image_size: int,
    resize_mode: str,
    processes: int,
    threads: int,
    samples_per_shard: int,
    max_samples: int | None,
    retries: int,
    timeout: int,
    distributor: str,
    user_agent_token: str | None,
) -> DownloadOptions:
    if resize_mode not in RESIZE_MODES:
        raise UsageError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}")
    if distributor not in DISTRIBUTORS:
        raise UsageError(f"--distributor must be one of {', '.join(DISTRIBUTORS)}")
    for flag, value in (
        ("--image-size", image_size),
        ("--processes", processes),
        ("--threads", threads),
        ("--samples-per-shard", samples_per_shard),
        ("--timeout", timeout),
        ("--max-samples", 1 if max_samples is None else max_samples),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if retries < 0:
        raise UsageError("--retries must be at least 0")
    preflight(distributor)  # after the cheap checks: it may try to connect for a few seconds
    return DownloadOptions(
        image_size=image_size,
        resize_mode=resize_mode,
        processes=processes,
        threads=threads,
        samples_per_shard=samples_per_shard,
        max_samples=max_samples,
        retries=retries,
        timeout=timeout,
        distributor=distributor,
        user_agent_token=user_agent_token,
    )


def _run_fetch(
    out: str | Path, spec, build_list, opts: DownloadOptions, force: bool, data: str | None = None
) -> None:
    from cloob.dataprep.fetch import IncompleteError, fetch
    from cloob.dataprep.report import print_counts

    try:
        counts = fetch(Path(out), spec, build_list, opts, data=data, force=force, say=_say)
    except IncompleteError as err:
        raise fail(str(err), code=1) from None
    print_counts(data or str(out), counts)


def _say(message: str) -> None:
    typer.secho(message, err=True)


@fetch_app.command("cc3m")
@_with_download_options
def fetch_cc3m(
    tsv: Annotated[
        str, typer.Option(help="CC3M TSV as published (caption<TAB>url, no header): path or URL.")
    ],
    out: Out,
    force: Force = False,
    *,
    opts: DownloadOptions,
    data: str | None = None,
) -> None:
    """Conceptual Captions 3M (train or val: one run per TSV)."""
    from cloob.dataprep.config import SourceSpec
    from cloob.dataprep.layout import Layout
    from cloob.dataprep.sources import local_input
    from cloob.dataprep.sources.cc3m import build_cc3m_list

    def build(target: Path) -> str:
        n = build_cc3m_list(local_input(tsv, Layout(Path(out)).sources, "CC3M TSV"), target)
        return f"CC3M list: {n} rows"

    _run_fetch(out, SourceSpec("cc3m", {"tsv": _identity(tsv)}), build, opts, force, data)


@fetch_app.command("yfcc15m")
@_with_download_options
def fetch_yfcc15m(
    metadata: Annotated[
        str,
        typer.Option(
            help="YFCC100M metadata: 25-column TSV (bz2/gz/plain) or yfcc100m_dataset.sql "
            "(SQLite); path or URL."
        ),
    ],
    out: Out,
    subset: Annotated[
        str | None,
        typer.Option(
            help="CLIP subset list (default: OpenAI's yfcc100m_subset_data.tsv.bz2); path or URL."
        ),
    ] = None,
    caption: Annotated[
        str, typer.Option(help="title, description or title+description.")
    ] = "title+description",
    force: Force = False,
    *,
    opts: DownloadOptions,
    data: str | None = None,
) -> None:
    """CLIP's YFCC-15M: subset list joined with the YFCC100M metadata, photos only."""
    from cloob.dataprep.config import SourceSpec
    from cloob.dataprep.layout import Layout
    from cloob.dataprep.sources import local_input
    from cloob.dataprep.sources.yfcc15m import (
        CAPTION_MODES,
        EXTRA_COLUMNS,
        SUBSET_URL,
        build_yfcc_list,
    )

    if caption not in CAPTION_MODES:
        raise UsageError(f"--caption must be one of {', '.join(CAPTION_MODES)}")
    subset = subset or SUBSET_URL

    def build(target: Path) -> str:
        sources = Layout(Path(out)).sources
        r = build_yfcc_list(
            local_input(subset, sources, "subset list"),
            local_input(metadata, sources, "YFCC100M metadata"),
            target,
            caption,
        )
        return (
            f"YFCC-15M list: {r.rows} photos ({r.subset_ids} subset ids, {r.missing} not in "
            f"the metadata, {r.videos} videos dropped)"
        )

    spec = SourceSpec(
        "yfcc15m",
        {"subset": _identity(subset), "metadata": _identity(metadata), "caption": caption},
        extra_columns=EXTRA_COLUMNS,
    )
    _run_fetch(out, spec, build, opts, force, data)


@fetch_app.command("urls")
@_with_download_options
def fetch_urls(
    input: Annotated[
        Path, typer.Option("--input", help="parquet/csv/tsv/jsonl (optionally .gz) with a header.")
    ],
    out: Out,
    url_col: Annotated[str, typer.Option(help="Column holding the image URL.")] = "url",
    caption_col: Annotated[str, typer.Option(help="Column holding the caption.")] = "caption",
    force: Force = False,
    *,
    opts: DownloadOptions,
    data: str | None = None,
) -> None:
    """Any url + caption list."""
    from cloob.dataprep.config import SourceSpec
    from cloob.dataprep.sources import local_input
    from cloob.dataprep.sources.urls import build_urls_list, input_format

    input_format(input)

    def build(target: Path) -> str:
        n = build_urls_list(
            local_input(str(input), target.parent, "url list"), url_col, caption_col, target
        )
        return f"url list: {n} rows"

    spec = SourceSpec(
        "urls", {"input": _identity(str(input)), "url_col": url_col, "caption_col": caption_col}
    )
    _run_fetch(out, spec, build, opts, force, data)


@fetch_app.command("demo")
def fetch_demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset directory to write (local).")],
    samples: Annotated[int, typer.Option(help="Training samples.")] = 20000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    per_class: Annotated[int, typer.Option(help="Benchmark images per class.")] = 50,
) -> None:
    """A generated, seeded shape-scene dataset plus held-out zero-shot benchmarks (no network)."""
    from cloob.common import storage
    from cloob.dataprep.sources.demo import build_demo

    if "://" in out:
        storage.location(out)  # names what is wrong with the URL itself first
        raise UsageError(f"{out}: fetch demo writes a local folder; build it there, then copy it")
    if min(samples, image_size, per_class) < 1:
        raise UsageError("--samples, --image-size and --per-class must be at least 1")
    demo = build_demo(
        Path(out).expanduser(),
        samples=samples,
        seed=seed,
        image_size=image_size,
        per_class=per_class,
    )
    typer.echo(
        f"demo dataset: {demo.shards_dir} ({samples} samples), benchmarks: "
        f"{', '.join(str(t.images_dir.parent) for t in demo.tasks.values())}"
    )


@app.command()
def stats(root: Dir, work: Work = None, storage_options: StorageOptions = None) -> None:
    """Counts, success rate, bytes, top errors and a per-shard table."""
    from cloob.dataprep.report import print_stats

    print_stats(_existing(root, work, storage_options))


@app.command()
def verify(root: Dir, work: Work = None, storage_options: StorageOptions = None) -> None:
    """Open every tar and check it against the manifest; exit 1 if any shard is bad."""
    from cloob.dataprep.report import verify_dir

    if not verify_dir(_existing(root, work, storage_options)):
        raise typer.Exit(1)


@app.command()
def retry(
    root: Dir,
    processes: Annotated[int | None, typer.Option(help="Download processes.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads per process.")] = None,
    retries: Annotated[int | None, typer.Option(help="HTTP retries per image.")] = None,
    timeout: Annotated[int | None, typer.Option(help="Download timeout in seconds.")] = None,
    work: Work = None,
    storage_options: StorageOptions = None,
) -> None:
    """Download the failed samples again into new shards and update the manifest."""
    from cloob.dataprep.fetch import IncompleteError
    from cloob.dataprep.fetch import retry as do_retry
    from cloob.dataprep.report import print_counts

    overrides = {
        k: v
        for k, v in {
            "processes": processes,
            "threads": threads,
            "retries": retries,
            "timeout": timeout,
        }.items()
        if v is not None
    }
    local, data = _where(root, work, storage_options)
    if data is None:
        _existing(root, None, None)
    try:
        counts = do_retry(local, overrides, data=data, say=_say)
    except IncompleteError as err:
        raise fail(str(err), code=1) from None
    print_counts(root, counts)


@app.command()
def query(
    root: Dir,
    sql: Annotated[str, typer.Argument(help="SQL over samples, attempts, shards, runs.")],
    limit: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
    work: Work = None,
    storage_options: StorageOptions = None,
) -> None:
    """Run SQL against the manifest and print the result as a table."""
    from cloob.dataprep.report import print_query

    print_query(_existing(root, work, storage_options), sql, limit)


def _existing(root: str, work: Path | None, storage_options: str | None):  # -> Layout
    """The dataset at `root`; a remote one's records are first brought into its working folder."""
    from cloob.common import storage
    from cloob.dataprep.layout import Layout, locked, pull_records

    local, data = _where(root, work, storage_options)
    layout = Layout(local, data)
    if data:
        storage.check_access(data)
        with locked(local):
            pull_records(layout)
    if not layout.shards.is_dir() or not layout.made_by_dataprep():
        raise UsageError(f"{root} is not a dataprep dataset directory (no shards/)")
    return layout


def _identity(path_or_url: str) -> str:
    """How an input is recorded in fetch.json: URLs as given, files by absolute path."""
    from cloob.common.download import is_url

    return path_or_url if is_url(path_or_url) else str(Path(path_or_url).expanduser().resolve())


def main() -> None:
    run_app(app)
