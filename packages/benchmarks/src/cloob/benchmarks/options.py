"""What every evaluation (zero-shot, linear probe, retrieval, analysis) is run with: one dataclass
that each command's config extends, so the shared knobs are defined once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DEFAULT_BOOT = 1000  # measured < 5% of an evaluation's wall time (docs/statistics.md)
# A percentile interval's Monte Carlo error shrinks as 1/sqrt(resamples): 100x the default is
# already below any digit we print, while each resample costs a pass over the test items (10**9
# would run for days and hold an index array per resample).
MAX_BOOT = 100 * DEFAULT_BOOT


@dataclass(kw_only=True)  # keyword-only: each command's own fields stay positional before these
class EvalOptions:
    device: str = "cpu"
    batch_size: int = 64
    workers: int = 2
    precision: str = "fp32"
    progress: bool = True
    bootstrap: int = DEFAULT_BOOT  # resamples for the 95% intervals and paired tests (0: none)

    def resolved(self) -> dict[str, Any]:
        """These options with `auto` device and precision made concrete (and checked), as keyword
        arguments for a command's config."""
        from cloob.common.precision import resolve, resolve_device

        device = resolve_device(self.device)
        precision = resolve(self.precision, device).name
        return {**dataclasses.asdict(self), "device": device, "precision": precision}


def in_process(**fields: Any) -> EvalOptions:
    """Options for a caller in Python (the trainer, tests, bench scripts): no worker processes and
    no progress bars unless `fields` ask for them; the other defaults as `EvalOptions`."""
    return EvalOptions(**{"workers": 0, "progress": False, **fields})
