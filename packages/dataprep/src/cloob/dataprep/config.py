"""Options of a fetch, as dataclasses. Only `identity()` decides whether a re-run may resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
