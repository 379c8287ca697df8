"""The run folder under `--logs`: one training at a time writes into it (`locked`), and bad input
found while setting up leaves `--logs` as it was (`removed_on_bad_input`)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from cloob.common import folder_lock
from cloob.common.cli import UsageError
from cloob.trainer import distributed
from cloob.trainer.config import RunConfig

log = logging.getLogger("cloob.trainer")


@contextlib.contextmanager
def locked(run: RunConfig, info: distributed.DistInfo) -> Iterator[None]:
    """Rank 0 holds the run folder's lock (`RUN/.lock`) for the `with`: a second training with the
    same --logs/--name, started while this one runs, stops on every rank with one error line and
    changes nothing. The OS frees the lock when the holder exits, however it exits."""
    assert run.name is not None  # `name_run` came first
    folder = Path(run.logs) / run.name
    with contextlib.ExitStack() as held:
        locks = distributed.on_rank0(
            info,
            lambda: held.enter_context(
                folder_lock.held(
                    folder,
                    "another training",
                    "wait for it to end, or choose another --name",
                    children_hold=False,  # loader workers outlive a killed trainer by seconds
                )
            ),
        )
        if locks is False:  # rank 0's filesystem has no locks
            log.warning(
                "%s: this filesystem offers no file locks; two trainings given the same --name "
                "would not be stopped",
                folder,
            )
        yield


@contextlib.contextmanager
def removed_on_bad_input(run: RunConfig) -> Iterator[None]:
    """Some bad input only shows once the model and data are built, after the run folder exists
    (a global batch larger than the data, a CSV whose images cannot be read). Then remove what
    this call created — the run folder, and `--logs` itself if it is new — never a folder that
    was there before (a resumed run's)."""
    logs = Path(run.logs)
    new_dirs = [p for p in (logs, *logs.parents) if not p.exists()]
    existing = {p.name for p in logs.iterdir()} if logs.is_dir() else set()
    try:
        yield
    except UsageError:
        if run.name and run.name not in existing and (logs / run.name).is_dir():
            _close_logs_under(logs / run.name)
            shutil.rmtree(logs / run.name, ignore_errors=True)
        for d in new_dirs:  # innermost first; a folder another process wrote to stays
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _close_logs_under(folder: Path) -> None:
    logger = logging.getLogger("cloob.trainer")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(
            folder.resolve()
        ):
            handler.close()
            logger.removeHandler(handler)
