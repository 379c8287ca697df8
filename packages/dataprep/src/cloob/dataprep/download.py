"""The one place that calls img2dataset.

img2dataset runs in a child Python process (`python -m cloob.dataprep.download ARGS.json`):
- start-up: webdataset imports torch when it can (5+ s in every process img2dataset spawns, and
  torch is never used for writing tars), img2dataset imports wandb (~2 s, unused here). This
  module, run as the main module, hides both before anything imports them; img2dataset's spawned
  workers re-import the main module first, so they skip them too;
- its noisy stdout goes to `DIR/img2dataset.log` while tqdm's progress stays on stderr; with Spark
  or Ray, stderr goes there too (JVM and Ray logs, executor tracebacks);
- its SIGINT handler exits with status 0 and would make a Ctrl-C look like success in-process;
- distributors: the Spark session or Ray connection is made here first (engines.py), so that
  executors and Ray workers run this interpreter;
- a failure writes one line naming its cause next to the args file and its traceback to the log;
  the parent raises that line as EngineError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import types
from pathlib import Path

if __name__ in ("__main__", "__mp_main__"):  # the child process and its spawned workers
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # → ModuleNotFoundError
    # img2dataset imports wandb unconditionally (~2 s per process); we never enable it.
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    if __name__ == "__mp_main__":
        # img2dataset's workers print the traceback of every failed shard to stderr, which is the
        # user's terminal (the progress bar is there): into the log (stdout) with the rest.
        sys.stderr = sys.stdout
    if os.environ.get("DATAPREP_REMOTE_OUTPUT"):  # its workers write through s3fs: bounded calls
        from cloob.common.storage import limit_s3fs_rounds

        limit_s3fs_rounds()

from typing import TYPE_CHECKING  # noqa: E402

from cloob.dataprep.config import DownloadOptions  # noqa: E402
from cloob.dataprep.engines import explain, start_engine, stop_engine  # noqa: E402

if TYPE_CHECKING:
    from cloob.common.storage import RemotePath


class IncompleteError(Exception):
    """img2dataset stopped or some shards failed in it; re-running the command resumes them."""


class EngineError(IncompleteError):
    """img2dataset or its engine (Spark, Ray) raised; the message names the cause in one line."""


def run_img2dataset(inputs: Path, shards: Path | RemotePath, opts: DownloadOptions, *,
                    extra_columns: tuple[str, ...], log: Path, extend: bool = False) -> None:
    """Download every row of the parquet parts under `inputs` into webdataset shards in `shards`.

    `extend=False` resumes (shards with a stats file are skipped); `extend=True` appends new shards
    after the last one (used by `retry`)."""
    shards.mkdir(parents=True, exist_ok=True)
    args_file = log.parent / ".img2dataset-args.json"  # beside the log: `shards` may be remote
    error_file = log.parent / ".img2dataset-error.txt"
    error_file.unlink(missing_ok=True)
    args_file.write_text(json.dumps({
        "img2dataset": _img2dataset_args(inputs, shards, opts, extra_columns, extend),
        "error_file": str(error_file), "log": str(log),
        # where this run's part of the (appended) log starts: older runs' causes are not ours
        "log_start": log.stat().st_size if log.exists() else 0}))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1",
           # Ray's `uv run` detection would make workers run `uv run … python` in a copy of the
           # working directory; engines.py gives them this interpreter instead.
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0"),
           # Ray reports usage statistics over the internet unless told not to.
           "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    if not isinstance(shards, Path):
        env["DATAPREP_REMOTE_OUTPUT"] = "1"
    try:
        with open(log, "ab") as out:
            # -P: `python -m` would put the working directory first on sys.path, and a folder
            # there named like a package (`ray/`, `torch/`) would shadow the installed one.
            # Spark's JVM and Ray's processes write pages of logs to stderr: into the log too.
            proc = subprocess.run([sys.executable, "-P", "-m", "cloob.dataprep.download",
                                   str(args_file)], stdout=out, env=env, check=False,
                                  stderr=None if opts.distributor == "multiprocessing" else out)
        cause = error_file.read_text().strip() if error_file.exists() else None
    finally:
        args_file.unlink(missing_ok=True)
        error_file.unlink(missing_ok=True)
    if proc.returncode < 0 or proc.returncode == 130:
        raise KeyboardInterrupt
    if cause:
        raise EngineError(f"{cause} (traceback in {log})")
    if proc.returncode != 0:
        raise IncompleteError(f"img2dataset failed (exit {proc.returncode}, see {log}); "
                              "re-run the same command to resume")


def _img2dataset_args(inputs: Path, shards: Path | RemotePath, opts: DownloadOptions,
                      extra_columns: tuple[str, ...], extend: bool) -> dict:
    return {
        "url_list": str(inputs),
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "save_additional_columns": ["source_id", *extra_columns],
        "output_format": "webdataset",
        "output_folder": str(shards),
        "image_size": opts.image_size,
        "resize_mode": opts.resize_mode,
        "encode_format": opts.encode_format,
        "processes_count": opts.processes,
        "thread_count": opts.threads,
        "number_sample_per_shard": opts.samples_per_shard,
        "retries": opts.retries,
        "timeout": opts.timeout,
        "distributor": opts.distributor,
        "user_agent_token": opts.user_agent_token,
        "compute_hash": "sha256",
        "incremental_mode": "extend" if extend else "incremental",
        "enable_wandb": False,
    }


def _main(args_file: str) -> int:
    spec = json.loads(Path(args_file).read_text())
    args, distributor = spec["img2dataset"], spec["img2dataset"]["distributor"]
    workers_python = None
    try:
        where, workers_python = start_engine(distributor, args["processes_count"])
        print(f"dataprep: {where}; workers run {workers_python}", flush=True)
        from img2dataset import download

        download(**args)
    except SystemExit:  # img2dataset's SIGINT handler
        return 130
    except Exception as err:  # noqa: BLE001 - any failure becomes one line plus the log
        traceback.print_exc(file=sys.stdout)  # stdout is the log
        sys.stdout.flush()
        Path(spec["error_file"]).write_text(explain(distributor, err, workers_python,
                                                    _log_tail(spec["log"], spec["log_start"])))
        return 3
    finally:
        stop_engine(distributor)
    return 0


def _log_tail(log: str, start: int, size: int = 1 << 20) -> str:
    """The end of this run's part of the engine's log (the JVM writes its own causes there)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(start, os.path.getsize(log) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
