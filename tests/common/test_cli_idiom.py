"""The three command lines are built one way: every option and argument of every command comes
from an `Options` group of `cloob.common.cli` (flags, help, panel, default declared once), typer
reads each command's signature as written (nothing in packages/ rewrites `__signature__`,
`__annotations__` or `__wrapped__`), and no private typer or click module is imported.

The checks read the real code: the package sources with `ast`, the commands as click builds them."""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from cloob.common.cli import Options, arg, flag_of, opt

ROOT = Path(__file__).resolve().parents[2]
CLIS = ("cloob.trainer.cli", "cloob.dataprep.cli", "cloob.benchmarks.cli")
REWRITTEN = {"__signature__", "__annotations__", "__wrapped__"}
TYPERS_OWN = {"install_completion", "show_completion"}  # typer adds these to every app
PRIVATE = re.compile(r"^(typer|click)(\.\w+)*\._")  # typer._click, click._compat, typer.x._y


# ----------------------------------------------------------------------------- the source scan


def source_problems(root: Path) -> list[str]:
    """Signature rewriting and private typer/click imports in the `*.py` files under `root`."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root)
        nodes = ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        found = sorted((getattr(n, "lineno", 0), p) for n in nodes for p in _node_problems(n, path))
        problems += [f"{where}:{line}: {problem}" for line, problem in found]
    return problems


def _node_problems(node: ast.AST, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"imports {a.name}" for a in node.names if PRIVATE.match(a.name)]
    if isinstance(node, ast.ImportFrom) and node.module:
        private = PRIVATE.match(node.module) or (
            node.module in ("typer", "click") and any(a.name.startswith("_") for a in node.names)
        )
        return [f"imports from {node.module}"] if private else []
    if isinstance(node, ast.Attribute):
        if isinstance(node.ctx, ast.Store) and node.attr in REWRITTEN:
            return [f"assigns {node.attr}"]
        if ast.unparse(node.value) in ("typer", "click") and node.attr.startswith("_"):
            return [f"uses {ast.unparse(node)}"]
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        texts = [a.value for a in node.args if isinstance(a, ast.Constant)]
        if name == "setattr" and any(t in REWRITTEN for t in texts):
            return [f"setattr {texts[0]!r}"]
        if name.endswith("import_module") and any(PRIVATE.match(str(t)) for t in texts):
            return [f"imports {texts[0]!s}"]
        if path.name == "cli.py" and name.split(".")[-1] in ("wraps", "update_wrapper"):
            return [f"{name}: a command's signature must be its own"]
    return []


def test_nothing_in_packages_rewrites_signatures_or_imports_private_typer_click():
    assert source_problems(ROOT / "packages") == []


def test_the_source_scan_can_fail(tmp_path):
    (tmp_path / "cli.py").write_text(
        "import functools, importlib, inspect\n"
        "import typer._click.core\n"
        "from typer._click.exceptions import ClickException\n"
        "from click import _compat\n"
        "def command(): pass\n"
        "command.__signature__ = inspect.Signature([])\n"
        "command.__annotations__ = {}\n"
        "setattr(command, '__wrapped__', print)\n"
        "error = typer._click.exceptions.UsageError\n"
        "importlib.import_module('click._termui_impl')\n"
        "@functools.wraps(print)\n"
        "def wrapper(): pass\n",
        encoding="utf-8",
    )
    assert [p.split(": ", 1)[1] for p in source_problems(tmp_path)] == [
        "imports typer._click.core",
        "imports from typer._click.exceptions",
        "imports from click",
        "assigns __signature__",
        "assigns __annotations__",
        "setattr '__wrapped__'",
        "uses typer._click",
        "imports click._termui_impl",
        "functools.wraps: a command's signature must be its own",
    ]


# ----------------------------------------------------------------------------- the commands


@dataclass
class Declared:
    """The options a CLI module declares: its `Options` groups (and common's root options)."""

    groups: list[Options] = field(default_factory=list)

    def explains(self, param) -> bool:
        """Whether some group declares `param` as click built it: same name, kind and help."""
        positional = param.param_type_name == "argument"
        return any(
            param.name in g
            and g.options[param.name].positional == positional
            and g.options[param.name].help == param.help
            for g in self.groups
        )


def declared_in(module) -> Declared:
    from cloob.common import cli as common

    groups = [v for v in vars(module).values() if isinstance(v, Options)]
    return Declared([*groups, common.version_options("any", "any")])


def commands(command, path: str = ""):
    """(command path, command) for `command` and every sub-command below it."""
    path = path or command.name or ""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, f"{path} {name}".strip())


def undeclared(app: typer.Typer, declared: Declared) -> list[str]:
    """The parameters of `app`'s commands that no group of the module declares."""
    return [
        f"{where} {param.name}"
        for where, command in commands(typer.main.get_command(app))
        for param in command.params
        if param.name not in TYPERS_OWN and not declared.explains(param)
    ]


@pytest.mark.parametrize("name", CLIS)
def test_every_option_of_every_command_comes_from_a_group(name):
    module = importlib.import_module(name)
    found = list(commands(typer.main.get_command(module.app)))
    assert sum(len(c.params) for _, c in found) > 10  # the walk reaches the commands' options
    assert undeclared(module.app, declared_in(module)) == []


@pytest.mark.parametrize("name", CLIS)
def test_cli_modules_declare_no_typer_parameter_of_their_own(name):
    """The groups are the only way in: no `typer.Option`/`typer.Argument`/`Annotated` in a
    cli.py (a parameter declared there would carry its own flags, help and default)."""
    path = Path(importlib.import_module(name).__file__ or "")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = [
        f"{path.name}:{n.lineno}: {ast.unparse(n)[:60]}"
        for n in ast.walk(tree)
        if (isinstance(n, ast.Attribute) and ast.unparse(n) in ("typer.Option", "typer.Argument"))
        or (isinstance(n, ast.Name) and n.id in ("Annotated", "Option", "Argument"))
    ]
    assert own == []


def test_the_command_check_can_fail():
    group = Options(size=opt("Images per batch.", default=8), path=arg("Where."))
    app = typer.Typer()

    @app.command()
    def good(path: str = group.path, size: int = group.size) -> None: ...

    @app.command()
    def bad(
        path: str = group.path,
        size: int = typer.Option(8, "--size", help="Images per batch, said again."),
        other: int = typer.Option(1, help="Declared here alone."),
        renamed: int = group.size,  # a group's option under another parameter name
    ) -> None: ...

    assert undeclared(app, Declared([group])) == ["bad size", "bad other", "bad renamed"]


# ----------------------------------------------------------------------------- the idiom itself


@dataclass
class Knobs:
    batch_size: int = 64
    tags: list[str] = field(default_factory=list)
    name: str | None = None


def test_a_group_takes_flags_help_panel_and_default_from_its_config():
    group = Options("Knobs", Knobs, batch_size=opt("Per step.", min=1), tags=opt("Tags.", "--tag"))
    size, tags = group.batch_size, group.tags
    assert (size.default, size.param_decls, size.help) == (64, ("--batch-size",), "Per step.")
    assert (size.rich_help_panel, size.min) == ("Knobs", 1)
    assert (tags.default, tags.param_decls) == ([], ("--tag",))
    assert flag_of("save_every_n_steps") == "--save-every-n-steps"


def test_a_group_fills_its_config_by_name():
    group = Options(None, Knobs, batch_size=opt("Per step."), tags=opt("Tags."))
    args = {"batch_size": 8, "tags": ("a", "b"), "unrelated": 1}  # click: repeated → tuple
    assert group.build(args) == Knobs(batch_size=8, tags=["a", "b"])
    assert group.values(args) == {"batch_size": 8, "tags": ["a", "b"]}


def test_declaration_mistakes_fail_at_import():
    with pytest.raises(TypeError, match="no field"):
        Options(None, Knobs, batch_sise=opt("A typo of a field."))
    group = Options(None, Knobs, batch_size=opt("Per step."))
    with pytest.raises(AttributeError, match="no option 'batchsize'"):
        _ = group.batchsize
    with pytest.raises(TypeError, match="does not take --batch-size"):
        group.build({"tags": []})  # a command that forgot to list one of the group's options
    assert Options(out=opt("Where.")).out.default is ...  # no default anywhere: required
