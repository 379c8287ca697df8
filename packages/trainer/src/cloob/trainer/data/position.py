"""Where a training epoch stands (`Position`): enough to continue it exactly after a resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloob.common.checkpoint import DataPosition


@dataclass
class Position:
    """Where a training epoch stands: enough to continue it exactly."""

    epoch: int = 0
    batch: int = 0  # batches consumed in this epoch (per rank)
    worker_pos: list[int] = field(default_factory=list)  # raw samples consumed, per logical worker
    next_worker: int = 0  # logical worker that delivers the next batch
    skipped: int = 0  # corrupt samples/shards skipped so far (this rank)

    def advance(self, batch: dict[str, Any], n_workers: int) -> None:
        self.batch += 1
        self.skipped += int(batch["errors"])
        if "worker" in batch:
            w = int(batch["worker"])
            if len(self.worker_pos) != n_workers:
                self.worker_pos = [0] * n_workers
            self.worker_pos[w] = int(batch["pos"])
            self.next_worker = (w + 1) % n_workers

    def end_epoch_if_done(self, batches_per_epoch: int) -> bool:
        """After a batch: if the epoch is complete, move to the start of the next one (the count
        of skipped samples runs on) and return True. The one place an epoch's end is decided."""
        if self.batch < batches_per_epoch:
            return False
        self.epoch, self.batch, self.worker_pos, self.next_worker = self.epoch + 1, 0, [], 0
        return True

    def state_dict(self) -> DataPosition:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "worker_pos": list(self.worker_pos),
            "next_worker": self.next_worker,
            "skipped": self.skipped,
        }

    @classmethod
    def from_state(cls, d: DataPosition) -> Position:
        return cls(
            int(d["epoch"]),
            int(d["batch"]),
            [int(x) for x in d["worker_pos"]],
            int(d["next_worker"]),
            int(d["skipped"]),
        )
