"""A package's import graph read from its source with `ast`: module- and function-level imports
alike (both run), not those under `if TYPE_CHECKING:` (they never do). No import of the package
is needed, so a layout test takes milliseconds. Used by the layout tests of benchmarks and
trainer."""

from __future__ import annotations

import ast
from pathlib import Path


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name below `package` (`data.registry`; a package: `tasks.zeroshot`) → file."""
    root = src / package.replace(".", "/")
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def imported_names(path: Path, name: str, package: str, *, module_level: bool = False) -> set[str]:
    """Every absolute module name `path` imports (relative imports resolved against `package`);
    with `module_level`, only those that run when the module is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _under_type_checking(node, parents) or (module_level and _in_function(node, parents)):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([package, *here, *filter(None, [base])])
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports(
    path: Path, name: str, known: dict[str, Path], package: str, *, module_level: bool = False
) -> set[str]:
    """The modules of `package` (names as in `modules`) that `path` imports."""
    found: set[str] = set()
    for target in imported_names(path, name, package, module_level=module_level):
        if not target.startswith(package + "."):
            continue
        dotted = target[len(package) + 1 :]
        while dotted and dotted not in known:  # `from pkg.mod import function` → pkg.mod
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            found.add(dotted)
    return found


def graph(src: Path, package: str, *, module_level: bool = False) -> dict[str, set[str]]:
    known = modules(src, package)
    return {
        name: imports(path, name, known, package, module_level=module_level)
        for name, path in known.items()
    }


def floors(g: dict[str, set[str]]) -> dict[str, int]:
    """1 for a module that imports nothing of the package, else one more than its highest import.
    Raises AssertionError naming the cycle when there is one."""
    floor: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> int:
        if name in chain:
            raise AssertionError("import cycle: " + " → ".join([*chain[chain.index(name) :], name]))
        if name not in floor:
            floor[name] = 1 + max((visit(d, (*chain, name)) for d in g[name]), default=0)
        return floor[name]

    for name in g:
        visit(name, ())
    return floor


def too_many_floors(g: dict[str, set[str]], most: int) -> list[str]:
    """[] or the one problem line naming the modules above floor `most`."""
    deepest = floors(g)
    over = {n: f for n, f in deepest.items() if f > most}
    if not over:
        return []
    return [
        f"{max(deepest.values())} import floors (at most {most}): "
        + ", ".join(f"{n} on floor {f}" for n, f in sorted(over.items()))
    ]
