"""A loopback mirror with stand-in benchmark archives and metadata files, and a CLI runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from support.benchmark_data import (
    BIRD_COUNTS,
    BIRDS,
    FLOWERS,
    cloob_zip,
    imagenetv2_targz,
    sha256,
    standin_clip_prompts,
    standin_cloob_metadata,
)
from support.cli import run_main


@dataclass
class Mirror:
    url: str
    root: Path
    checksums: Path  # sha256sum-format file for the stand-in metadata (what a mirror user supplies)
    server: object


@pytest.fixture
def mirror(http_server, http_root, tmp_path) -> Mirror:
    lists = {
        "birdsnap": (BIRDS, ["a photo of a {}, a type of bird."]),
        "flowers102": (FLOWERS, ["a photo of a {}, a type of flower."]),
    }
    (http_root / "zeroshot_data.py").write_text(standin_cloob_metadata(lists))
    (http_root / "prompts.md").write_text(
        standin_clip_prompts(
            {"Birdsnap": (sorted(BIRDS), lists["birdsnap"][1]), "Flowers102": lists["flowers102"]}
        )
    )
    cloob_zip(http_root / "flowers102.zip", "flowers102", {name: 2 for name in FLOWERS}, seed=1)
    cloob_zip(http_root / "birdsnap.zip", "birdsnap", BIRD_COUNTS, seed=2)
    imagenetv2_targz(
        http_root / "imagenetv2-matched-frequency.tar.gz",
        {"0": 1, "1": 1, "2": 1, "10": 1, "100": 2, "999": 1},
        seed=3,
    )
    checksums = tmp_path / "checksums.sha256"
    checksums.write_text(
        "".join(f"{sha256(http_root / n)}  {n}\n" for n in ("zeroshot_data.py", "prompts.md"))
    )
    return Mirror(http_server.base_url, http_root, checksums, http_server)


@pytest.fixture
def cli(capsys):
    """Run the `benchmarks` CLI in-process: returns (exit code, stdout, stderr)."""
    from cloob.benchmarks.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = run_main(main, "benchmarks", *args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def open_clip_runs(tmp_path_factory):
    """Checkpoints OpenCLIP's own trainer wrote (GELU and QuickGELU tiny models), with their
    params.txt; the tiny configs are registered with open_clip in this process too."""
    from support.open_clip_runs import train

    runs = train(tmp_path_factory.mktemp("open_clip_runs"))
    runs.register()
    return runs


def record_problems(record: dict, kind: type) -> list[str]:
    """How a record read back from a results file differs from its TypedDict in
    `cloob.benchmarks.reporting.report`: keys it lacks, keys the type does not describe. The
    optional keys are read from the annotations (Python 3.11 does not tell `NotRequired` apart in
    postponed annotations)."""
    annotations = kind.__annotations__
    optional = {k for k, v in annotations.items() if "NotRequired[" in str(v)}
    required = set(annotations) - optional
    return [f"lacks {k}" for k in sorted(required - set(record))] + [
        f"undescribed {k}" for k in sorted(set(record) - set(annotations))
    ]
