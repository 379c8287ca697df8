"""Ends img2dataset's child process when the object store it writes to stops answering.

Every S3 call we make, and those of img2dataset's workers, has a connect and a read timeout and
bounded retries. Yet a worker can still wait without end inside a call (seen: the upload that
closes a shard's tar, in s3fs → aiobotocore → aiohttp, whose timeouts do not cover every wait). So
the parent watches the child, whatever it waits in:

- progress is the child's log growing (img2dataset's output, each failed shard's traceback) or
  the shards folder changing (a tar, a stats file, a size);
- the store is asked (one LIST, one try, in a thread of its own) only when the child has been quiet
  for one call's time limit (`call_limit_s`), and then every such interval;
- the child is stalled when the store has failed every question for one more call limit and the
  child made no progress meanwhile. A long shard download with a store that answers is never a
  stall: the store answers, whatever the child does. A store that stays silent for longer than
  one of our calls may take cannot take the shard in progress either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloob.common.storage import RemotePath


@dataclass
class StoreWatch:
    shards: RemotePath
    log: Path
    limit_s: float  # the longest one storage call may take
    clock: Callable[[], float] = time.monotonic
    _log_size: int = -1
    _listing: dict[str, int] | None = None
    _last_progress: float = field(default=0.0)
    _last_ask: float = float("-inf")
    _failing_since: float | None = None
    last_error: str = ""

    def __post_init__(self) -> None:
        self._last_progress = self.clock()

    def stalled(self) -> bool:
        """Look once (call every second or so); True when the child should be stopped."""
        now = self.clock()
        size = self.log.stat().st_size if self.log.exists() else 0
        if size != self._log_size:
            self._log_size, self._last_progress = size, now
        if now - self._last_progress < self.limit_s:
            return False
        if now - self._last_ask >= self.limit_s:
            self._ask(now)
        quiet_since = max(self._failing_since or now, self._last_progress)
        return self._failing_since is not None and self.clock() - quiet_since >= self.limit_s

    def _ask(self, now: float) -> None:
        self._last_ask = now
        listing, error = _ask_store(self.shards, self.limit_s)
        if error is not None:
            self.last_error = error
            if self._failing_since is None:
                self._failing_since = now
            return
        self._failing_since = None
        if listing != self._listing:
            if self._listing is not None:
                self._last_progress = self.clock()
            self._listing = listing


def _ask_store(shards: RemotePath, limit_s: float) -> tuple[dict[str, int] | None, str | None]:
    """(listing, None), or (None, why) when the store failed or did not answer within limit_s.
    In a daemon thread: a question that waits past its own timeouts is abandoned, not waited on."""
    from cloob.common.storage import listing

    result: list = []

    def ask() -> None:
        try:
            result.append((listing(shards), None))
        except Exception as err:  # noqa: BLE001 - any failure means the store is not usable now
            result.append((None, f"a listing failed: {type(err).__name__}"))

    thread = threading.Thread(target=ask, daemon=True, name="store-watch")
    thread.start()
    thread.join(limit_s)
    return result[0] if result else (None, f"a listing got no answer in {limit_s:.0f} s")
