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

import contextlib
import json
import os
import signal
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

from cloob.common.cli import UsageError  # noqa: E402
from cloob.dataprep.config import DownloadOptions  # noqa: E402
from cloob.dataprep.engines import explain, start_engine, stop_engine  # noqa: E402

if TYPE_CHECKING:
    from cloob.common.storage import RemotePath


class IncompleteError(Exception):
    """img2dataset stopped or some shards failed in it; re-running the command resumes them."""


class EngineError(IncompleteError):
    """img2dataset or its engine (Spark, Ray) raised; the message names the cause in one line."""


def run_img2dataset(
    inputs: Path,
    shards: Path | RemotePath,
    opts: DownloadOptions,
    *,
    extra_columns: tuple[str, ...],
    log: Path,
    extend: bool = False,
) -> None:
    """Download every row of the parquet parts under `inputs` into webdataset shards in `shards`.

    `extend=False` resumes (shards with a stats file are skipped); `extend=True` appends new shards
    after the last one (used by `retry`)."""
    shards.mkdir(parents=True, exist_ok=True)
    args_file = log.parent / ".img2dataset-args.json"  # beside the log: `shards` may be remote
    error_file = log.parent / ".img2dataset-error.txt"
    error_file.unlink(missing_ok=True)
    args_file.write_text(
        json.dumps(
            {
                "img2dataset": _img2dataset_args(inputs, shards, opts, extra_columns, extend),
                "error_file": str(error_file),
                "log": str(log),
                # where this run's part of the (appended) log starts: older runs' causes are not
                # ours
                "log_start": log.stat().st_size if log.exists() else 0,
            }
        )
    )
    env = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        # Ray's `uv run` detection would make workers run `uv run … python` in a copy of the
        # working directory; engines.py gives them this interpreter instead.
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0"),
        # Ray reports usage statistics over the internet unless told not to.
        "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
    }
    remote = not isinstance(shards, Path)
    if remote:
        env["DATAPREP_REMOTE_OUTPUT"] = "1"
    try:
        with open(log, "ab") as out:
            # -P: `python -m` would put the working directory first on sys.path, and a folder
            # there named like a package (`ray/`, `torch/`) would shadow the installed one.
            # Spark's JVM and Ray's processes write pages of logs to stderr: into the log too.
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "cloob.dataprep.download", str(args_file)],
                stdout=out,
                env=env,
                stderr=None if opts.distributor == "multiprocessing" else out,
                # its own process group, so that a stall stops all of it
                start_new_session=remote,
            )
            returncode = _wait(
                proc,
                None if isinstance(shards, Path) else shards,
                log,
                proc_stderr_is_ours=opts.distributor == "multiprocessing",
            )
        cause = error_file.read_text().strip() if error_file.exists() else None
    finally:
        args_file.unlink(missing_ok=True)
        error_file.unlink(missing_ok=True)
    if returncode < 0 or returncode == 130:
        raise KeyboardInterrupt
    if cause:
        raise EngineError(f"{cause} (traceback in {log})")
    if returncode != 0:
        raise IncompleteError(
            f"img2dataset failed (exit {returncode}, see {log}); re-run the same command to resume"
        )


def _wait(
    proc: subprocess.Popen, shards: RemotePath | None, log: Path, *, proc_stderr_is_ours: bool
) -> int:
    """The child's exit status. Writing to a store (`shards`), the child runs in its own process
    group: Ctrl-C is passed on to it, and when the store stops answering and the child stops
    moving (watchdog.py), the whole group is stopped and that is one UsageError line."""
    if shards is None:
        return proc.wait()
    from cloob.common.storage import call_limit_s
    from cloob.dataprep.watchdog import StoreWatch

    watch = StoreWatch(shards, log, call_limit_s())
    try:
        while True:
            try:
                return proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            if watch.stalled():
                _stop_group(proc, signal.SIGTERM)
                if proc_stderr_is_ours:  # end img2dataset's progress bar line: ours starts fresh
                    sys.stderr.write("\n")
                raise UsageError(
                    f"{shards}: the storage endpoint did not answer in time ({watch.last_error}; "
                    f"img2dataset made no progress for {watch.limit_s:.0f} s and was stopped); "
                    "re-run the same command once it answers: finished shards are kept"
                )
    except KeyboardInterrupt:
        _stop_group(proc, signal.SIGINT)
        raise


def _stop_group(proc: subprocess.Popen, sig: int, grace_s: float = 10) -> None:
    """Send `sig` to the child's process group (its workers too), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their leader, or all
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _img2dataset_args(
    inputs: Path,
    shards: Path | RemotePath,
    opts: DownloadOptions,
    extra_columns: tuple[str, ...],
    extend: bool,
) -> dict:
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
        Path(spec["error_file"]).write_text(
            explain(distributor, err, workers_python, _log_tail(spec["log"], spec["log_start"]))
        )
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
