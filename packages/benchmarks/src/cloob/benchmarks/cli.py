"""The `benchmarks` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

from cloob.common.cli import make_app, run_app

app = make_app("benchmarks", "Fetch the zero-shot datasets of the CLOOB paper and evaluate CLIP/CLOOB checkpoints.", "cloob-benchmarks")


def main() -> None:
    run_app(app)
