"""How much of each training step waits for data, and one warning when the run is data-bound.

OpenCLIP prints `Data (t)` next to `Batch (t)`; here the same two times are logged per window
(`data_time`, `batch_time`: seconds per optimizer step) with their ratio `data_time_fraction`, and
the first window after warm-up that spends more than `THRESHOLD` of its time blocked on the loader
gets one log line naming --workers and the rates measured: what the workers delivered and what the
model would take without waiting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("cloob.trainer")

THRESHOLD = 0.2  # fraction of step time waiting for data above which a run is called data-bound
WARMUP_STEPS = 20  # steps after each loader start (worker spawn, prefetch, shuffle fill) not judged

Item = TypeVar("Item")


@dataclass
class DataWait:
    """Seconds blocked on the loader since the last window; `warned` makes the warning once per
    run."""

    waited: float = 0.0
    steps_since_start: int = 0
    judged: bool = False  # whether the current window started after warm-up
    warned: bool = False

    def timed(self, batches: Iterable[Item]) -> Iterator[Item]:
        """`batches`, with the time each `next()` blocks added to the window's wait. A new loader
        (every epoch) restarts the warm-up."""
        self.steps_since_start = 0
        self.judged = False
        it = iter(batches)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.waited += time.perf_counter() - t0
            self.steps_since_start += 1
            yield item

    def window(
        self, *, elapsed: float, steps: int, samples_per_step: int, workers: int
    ) -> dict[str, float]:
        """The window's values for metrics.jsonl/tensorboard; warns once when data-bound. Resets
        the wait for the next window."""
        waited, self.waited = min(self.waited, elapsed), 0.0
        fraction = waited / max(elapsed, 1e-9)
        values = {
            "data_time": waited / max(steps, 1),
            "batch_time": elapsed / max(steps, 1),
            "data_time_fraction": fraction,
        }
        if self.judged and not self.warned and fraction > THRESHOLD:
            self.warned = True
            log.warning(
                starving_message(fraction, elapsed, waited, steps * samples_per_step, workers)
            )
        self.judged = self.steps_since_start >= WARMUP_STEPS  # the next window is past warm-up
        return values


def starving_message(
    fraction: float, elapsed: float, waited: float, samples: int, workers: int
) -> str:
    """One line: how data-bound, what the workers give (per worker), what the model takes."""
    delivered = samples / max(elapsed, 1e-9)  # the loader's rate while the model waited on it
    wanted = samples / max(elapsed - waited, 1e-9)  # the model's rate were the data always ready
    if workers > 0:
        need = math.ceil(workers * wanted / max(delivered, 1e-9))
        who = (
            f"{workers} worker{'s' if workers > 1 else ''} give ~{delivered:,.0f} samples/s "
            f"(~{delivered / workers:,.0f} per worker)"
        )
        fix = (
            f"raise --workers (about {need} would keep up) if cores are free, else give each "
            f"GPU more cores"
        )
    else:
        who = f"the main process (--workers 0) gives ~{delivered:,.0f} samples/s"
        fix = "set --workers to the free cores"
    return (
        f"data-bound: {100 * fraction:.0f}% of each step waits for data; {who}, the model takes "
        f"~{wanted:,.0f}: {fix}"
    )
