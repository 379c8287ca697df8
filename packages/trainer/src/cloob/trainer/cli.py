"""The `trainer` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import typer

from cloob.trainer import __version__

app = typer.Typer(
    name="trainer",
    help="Train CLIP and CLOOB from webdataset shards, on CPU or with torchrun on GPUs.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trainer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Train CLIP and CLOOB from webdataset shards, on CPU or with torchrun on GPUs."""


@app.command()
def run(
    method: str = typer.Option("cloob", help="Objective: cloob or clip."),
    train_data: str | None = typer.Option(None, help="Shards, a dataprep output folder or a CSV."),
) -> None:
    """Train CLIP or CLOOB."""
    if train_data is None:
        typer.echo("error: no --train-data given; make shards with `dataprep fetch` and pass "
                   "--train-data DIR", err=True)
        raise typer.Exit(2)


def main() -> None:
    app()
