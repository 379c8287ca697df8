"""The `dataprep` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import typer

from cloob.dataprep import __version__

app = typer.Typer(
    name="dataprep",
    help="Turn caption datasets (CC3M, YFCC-15M, any url list) into webdataset shards with a DuckDB manifest.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dataprep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Turn caption datasets (CC3M, YFCC-15M, any url list) into webdataset shards with a DuckDB manifest."""


def main() -> None:
    app()
