"""The `trainer` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import typer

from cloob.common.cli import fail, make_app, run_app

app = make_app("trainer", "Train CLIP and CLOOB from webdataset shards, on CPU or with torchrun on GPUs.", "cloob-trainer")


@app.command()
def run(
    method: str = typer.Option("cloob", help="Objective: cloob or clip."),
    train_data: str | None = typer.Option(None, help="Shards, a dataprep output folder or a CSV."),
) -> None:
    """Train CLIP or CLOOB."""
    if train_data is None:
        raise fail("no --train-data given; make shards with `dataprep fetch` and pass "
                   "--train-data DIR")


def main() -> None:
    run_app(app)
