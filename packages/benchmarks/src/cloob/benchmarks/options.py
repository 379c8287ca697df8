"""What every evaluation (zero-shot, linear probe, retrieval, analysis) is run with: one dataclass
that each command's config extends, so the shared knobs are defined once."""

from __future__ import annotations

from dataclasses import dataclass

from cloob.benchmarks.reporting.stats import DEFAULT_BOOT


@dataclass(kw_only=True)  # keyword-only: each command's own fields stay positional before these
class EvalOptions:
    device: str = "cpu"
    batch_size: int = 64
    workers: int = 2
    precision: str = "fp32"
    progress: bool = True
    bootstrap: int = DEFAULT_BOOT  # resamples for the 95% intervals and paired tests (0: none)
