"""Options of a fetch, as dataclasses. Only `identity()` decides whether a re-run may resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cloob.common.cli import UsageError

DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass
class DownloadOptions:
    """What img2dataset is asked to do."""

    image_size: int = 256
    resize_mode: str = "border"
    processes: int = 1
    threads: int = 32
    samples_per_shard: int = 10000
    max_samples: int | None = None
    retries: int = 0
    timeout: int = 10
    distributor: str = "multiprocessing"
    user_agent_token: str | None = None
    encode_format: str = "jpg"

    def check(self) -> None:
        """Refuse values img2dataset would fail on late (or silently misread)."""
        if self.resize_mode not in RESIZE_MODES:
            raise UsageError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}")
        if self.distributor not in DISTRIBUTORS:
            raise UsageError(f"--distributor must be one of {', '.join(DISTRIBUTORS)}")
        for flag, value in (
            ("--image-size", self.image_size),
            ("--processes", self.processes),
            ("--threads", self.threads),
            ("--samples-per-shard", self.samples_per_shard),
            ("--timeout", self.timeout),
            ("--max-samples", 1 if self.max_samples is None else self.max_samples),
        ):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1")
        if self.retries < 0:
            raise UsageError("--retries must be at least 0")

    def identity(self) -> dict:
        """The options that change which samples end up in which shard, and how they look.

        Speed knobs (processes, threads, retries, timeout, distributor) may change between a run
        and its resume; these may not."""
        keep = ("image_size", "resize_mode", "samples_per_shard", "max_samples", "encode_format")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class SourceSpec:
    """Which source list a directory is built from: a name plus its arguments."""

    name: str
    args: dict = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()  # carried into the shards next to source_id
