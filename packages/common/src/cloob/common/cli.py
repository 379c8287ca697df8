"""CLI conventions shared by `dataprep`, `trainer` and `benchmarks`.

Bad input must end in one line on stderr and exit code 2 — never a traceback. Library code raises
`UsageError` (or lets `FileNotFoundError`/`ValueError` surface from validation); `run_app` turns
those into that one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import typer

# Since 0.26 typer runs on its own copy of click and raises these classes (no public name for them
# yet); the `typer>=0.26` floor says so, and tests/test_dependency_floors.py keeps it true.
from typer._click.exceptions import ClickException, NoArgsIsHelpError


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2."""


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def make_app(name: str, help: str, dist: str) -> typer.Typer:  # typer's own word
    """A typer app with rich help, `-h`, `--version` and help when called without arguments."""
    app = typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {package_version(dist)}")
            raise typer.Exit()

    @app.callback()
    def _root(
        _version: bool = typer.Option(
            False,
            "--version",
            callback=show_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ) -> None:
        pass

    _root.__doc__ = help
    return app


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr; `raise fail(...)` ends the command with `code`."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of a library's exception message (at most `limit` characters), for
    quoting inside a toolkit error; the exception's type name when it has no message."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def run_app(app: typer.Typer | Callable[[], object]) -> None:
    """Run a typer app, turning expected failures into one-line errors with exit code 2."""
    try:
        _invoke(app) if isinstance(app, typer.Typer) else app()
    except UsageError as err:
        raise SystemExit(_one_line(err)) from None
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError) as err:
        raise SystemExit(_one_line(err)) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        raise SystemExit(130) from None


def _invoke(app: typer.Typer) -> None:
    # click's own usage errors (a non-integer, a value below `min=`, an unknown option) print a
    # usage block and a boxed message; every CLI of the toolkit promises one `error:` line instead.
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except NoArgsIsHelpError as err:  # a bare `dataprep`: the help, not an error
        if err.format_message().strip():  # rich help is already printed when it is built
            err.show()
        raise SystemExit(2) from None
    except ClickException as err:
        raise UsageError(err.format_message()) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _one_line(err: BaseException) -> int:
    text = " ".join(str(err).split()) or type(err).__name__
    typer.secho(f"error: {text}", err=True, fg=typer.colors.RED)
    sys.stderr.flush()
    return 2
