from __future__ import annotations

from pathlib import Path

import pytest

MICRO = str(
    Path(__file__).parent / "micro.json"
)  # a 1-layer, 32 px open_clip config for fast tests


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    """A dataprep-style output folder: 4 shards × 16 samples of 32 px scenes."""
    from support.shards import write_shards

    return write_shards(tmp_path_factory.mktemp("shards"), 4, 16, size=32)
