"""The one place that calls img2dataset.

img2dataset does the downloading, resizing, hashing and shard writing. Around it we handle what it
leaves to the caller: its noisy stdout goes to `DIR/img2dataset.log` (tqdm progress stays on
stderr), its SIGINT handler (which exits with status 0) is undone, and its `*.json` glob over the
output folder must not meet our sizes.json.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from cloob.dataprep.config import DownloadOptions

# albumentations (imported by img2dataset) phones home at import time without this.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def run_img2dataset(inputs: Path, shards: Path, opts: DownloadOptions, *,
                    extra_columns: tuple[str, ...], log: Path, extend: bool = False) -> None:
    """Download every row of the parquet parts under `inputs` into webdataset shards in `shards`.

    `extend=False` resumes (shards with a stats file are skipped); `extend=True` appends new shards
    after the last one (used by `retry`)."""
    from img2dataset import download  # heavy import (~5 s): only when really downloading

    shards.mkdir(parents=True, exist_ok=True)
    previous = signal.getsignal(signal.SIGINT)
    with _stdout_to(log):
        try:
            download(
                url_list=str(inputs),
                input_format="parquet",
                url_col="url",
                caption_col="caption",
                save_additional_columns=["source_id", *extra_columns],
                output_format="webdataset",
                output_folder=str(shards),
                image_size=opts.image_size,
                resize_mode=opts.resize_mode,
                encode_format=opts.encode_format,
                processes_count=opts.processes,
                thread_count=opts.threads,
                number_sample_per_shard=opts.samples_per_shard,
                retries=opts.retries,
                timeout=opts.timeout,
                distributor=opts.distributor,
                user_agent_token=opts.user_agent_token,
                compute_hash="sha256",
                incremental_mode="extend" if extend else "incremental",
                enable_wandb=False,
            )
        except SystemExit:
            # img2dataset's own SIGINT handler calls sys.exit(0): a Ctrl-C is not a success.
            raise KeyboardInterrupt from None
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _stdout_to(log: Path) -> Iterator[None]:
    """Send file descriptor 1 (ours and the worker processes') to `log` for the duration."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
