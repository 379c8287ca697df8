"""The `benchmarks` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import typer

from cloob.benchmarks import __version__

app = typer.Typer(
    name="benchmarks",
    help="Fetch the zero-shot datasets of the CLOOB paper and evaluate CLIP/CLOOB checkpoints.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"benchmarks {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Fetch the zero-shot datasets of the CLOOB paper and evaluate CLIP/CLOOB checkpoints."""


def main() -> None:
    app()
