"""CLI conventions shared by `dataprep`, `trainer` and `benchmarks`: one way to declare options,
one way to fail.

Options are declared once, in `Options` groups: each option's help, its flags (`--its-name` unless
given), its `--help` panel (the group's) and its default (the group's config dataclass field, unless
given). A command lists the options it takes as ordinary parameters, `name: type = GROUP.name`, so
typer reads the signature exactly as written, and its body fills the config from them:
`GROUP.build(locals())`. Several commands (and panels) share a group by naming its options.

Bad input must end in one line on stderr and exit code 2 — never a traceback. Library code raises
`UsageError` (or lets `FileNotFoundError`/`ValueError` surface from validation); `run_app` turns
those, and click's own usage errors, into that one line.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, TypeVar, overload

import typer

C = TypeVar("C")


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()  # "no default given here": the config's field default, else required


@dataclass(frozen=True)
class Opt:
    """One option as `--help` shows it. Build it with `opt()` or `arg()`."""

    help: str
    flags: tuple[str, ...] = ()  # () → `--name-with-dashes` (and no `--no-` twin for a bool)
    default: Any = UNSET
    positional: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)  # click's checks: min=, max=, ...


def opt(
    help: str, *flags: str, default: Any = UNSET, place: str | None = None, **settings: Any
) -> Opt:
    """An option: `opt("Images per batch.", min=1)`; flags only where they differ from the name
    (an alias, a short flag, an `--on/--off` pair). An option that names a file or folder says
    which places it takes: `place=` one of PLACES."""
    return Opt(help, flags, default, False, _with_place(settings, place))


def arg(help: str, *, default: Any = UNSET, place: str | None = None, **settings: Any) -> Opt:
    """A positional argument (`place=` as for `opt`)."""
    return Opt(help, (), default, True, _with_place(settings, place))


# Where a path option may point, beside local paths: the URL schemes it takes. A URL given to an
# option that takes none of them is refused while the command line is parsed, in one line: read as
# a local path, `s3://bucket/x` would become the folder `./s3:/bucket/x`, a silent wrong place.
PLACES: dict[str, tuple[str, ...]] = {
    "local": (),
    "storage": ("s3",),  # what cloob.common.storage reads and writes
    "download": ("http", "https"),  # files the toolkit may fetch (cloob.common.download)
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # also `s3:/x`: what Path("s3://x") keeps


def url_scheme(value: object) -> str | None:
    """The scheme of a URL-looking value (`s3` of `s3://b/k`), None for a plain path."""
    found = _SCHEME.match(str(value))
    return found.group(1).lower() if found else None


def _with_place(settings: dict[str, Any], place: str | None) -> dict[str, Any]:
    if place is None:
        return settings
    if place not in PLACES or "callback" in settings:
        raise TypeError(f"place={place!r}: one of {', '.join(PLACES)}, and no callback of its own")
    return {**settings, "callback": _place_check(place)}


def _place_check(place: str) -> Callable[[Any, Any, Any], Any]:
    allowed = PLACES[place]

    def check(ctx: Any, param: Any, value: Any) -> Any:
        for item in value if isinstance(value, list | tuple) else [value]:
            scheme = url_scheme(item) if item is not None else None
            if scheme is not None and scheme not in allowed:
                raise typer.BadParameter(_refusal(str(item), scheme, allowed))
        return value

    return check


def _refusal(text: str, scheme: str, allowed: tuple[str, ...]) -> str:
    shown = re.sub(r"^([^:/]+):/+", r"\1://", text)  # as typed, before Path folded the slashes
    takes = " or ".join(["a local path", *(f"{s}://" for s in allowed)])
    return f"{shown} is a {scheme}:// URL; this option takes {takes}"


class Options(Generic[C]):
    """A group of options declared once. `GROUP.name` is the typer parameter for option `name`
    (use it as a command parameter's default); `GROUP.build(args)` fills the config dataclass from
    a command's arguments, `GROUP.values(args)` gives them as a dict.

    With a `config`, every option is one of its fields and takes the field's default."""

    @overload
    def __init__(
        self: Options[Any], panel: str | None = None, config: None = None, **options: Opt
    ) -> None: ...

    @overload
    def __init__(self, panel: str | None, config: type[C], **options: Opt) -> None: ...

    def __init__(self, panel: str | None = None, config: type[C] | None = None, **options: Opt):
        if config is not None:
            fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
            if set(options) - fields:
                raise TypeError(f"{config.__name__} has no field {sorted(set(options) - fields)}")
        self.panel, self.config, self.options = panel, config, options

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options", {})
        if name not in options:
            raise AttributeError(f"no option {name!r} in this group ({', '.join(options)})")
        return self.parameter(name)

    def parameter(self, name: str) -> Any:
        """The typer parameter of option `name` (what a command signature holds)."""
        spec = self.options[name]
        default = self.default(name)
        if spec.positional:
            return typer.Argument(default, help=spec.help, **spec.settings)
        flags = spec.flags or (flag_of(name),)
        return typer.Option(
            default, *flags, help=spec.help, rich_help_panel=self.panel, **spec.settings
        )

    def default(self, name: str) -> Any:
        """The option's own default, else its config field's, else `...` (typer's "required")."""
        if self.options[name].default is not UNSET:
            return self.options[name].default
        fields = dataclasses.fields(self.config) if self.config else ()  # type: ignore[arg-type]
        f = next((f for f in fields if f.name == name), None)
        if f is not None and f.default is not dataclasses.MISSING:
            return f.default
        if f is not None and f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return ...

    def values(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """This group's options from a command's arguments: `locals()` at the top of its body, the
        values as typer converted them (`ctx.params` holds click's raw ones on older typer: a Path
        option as a str)."""
        missing = [name for name in self.options if name not in args]
        if missing:
            raise TypeError(f"the command does not take {', '.join(map(flag_of, missing))}")
        # click hands repeated options over as tuples; the configs hold lists
        return {n: list(v) if isinstance(v, tuple) else v for n, v in args.items() if n in self}

    def build(self, args: Mapping[str, Any]) -> C:
        if self.config is None:
            raise TypeError("this group has no config dataclass to build")
        return self.config(**self.values(args))

    def __contains__(self, name: object) -> bool:
        return name in self.options


def flag_of(name: str) -> str:
    """The flag of an option named `name` (a parameter or config field): `--name-with-dashes`."""
    return "--" + name.replace("_", "-")


def given(ctx: typer.Context) -> set[str]:
    """The options the user gave (command line or environment), as opposed to left at default."""
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def make_app(name: str, help: str, dist: str | None = None) -> typer.Typer:  # typer's own word
    """A typer app with rich help and `-h`; called without a command it shows its help and exits 2.
    With `dist` (a top-level app, not a group like `dataprep fetch`) it also has `--version`."""
    app = typer.Typer(
        name=name,
        help=help,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    # Help without a command comes from a callback rather than click's `no_args_is_help`, whose
    # exception class typer does not export.
    if dist is None:

        @app.callback(invoke_without_command=True)
        def _group(ctx: typer.Context) -> None:
            _help_without_command(ctx)

        _group.__doc__ = help
    else:
        top = version_options(name, dist)

        @app.callback(invoke_without_command=True)
        def _top(ctx: typer.Context, version: bool = top.version) -> None:
            _help_without_command(ctx)

        _top.__doc__ = help
    return app


def version_options(name: str, dist: str) -> Options:
    """A top-level app's own option: `--version` prints `NAME VERSION` and exits."""

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {package_version(dist)}")
            raise typer.Exit()

    return Options(
        version=opt(
            "Show the version and exit.", default=False, callback=show_version, is_eager=True
        )
    )


def _help_without_command(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        text = ctx.get_help()  # rich help prints itself while it is built and returns ""
        if text.strip():
            typer.echo(text)
        raise typer.Exit(2)


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
    # `typer.TyperException` is the public base of those errors (typer >= 0.28).
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except typer.TyperException as err:
        raise UsageError(err.format_message()) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _one_line(err: BaseException) -> int:
    text = " ".join(str(err).split()) or type(err).__name__
    typer.secho(f"error: {text}", err=True, fg=typer.colors.RED)
    sys.stderr.flush()
    return 2
