"""Class names and prompt templates from the pinned public sources.

- CLOOB's `zeroshot_data.py` (Python source: read with `ast`, never executed) gives the lists in
  the order of the CLOOB zips' folders — for Birdsnap that is species-id order, not CLIP's
  alphabetical order.
- OpenAI CLIP's `prompts.md` gives the same datasets as `## Name` sections with fenced Python
  blocks; we use it as a cross-check of the templates and as a fallback.
- ImageNet (and V2) names and the 80 templates ship inside open_clip.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from cloob.common.cli import UsageError

CLIP_PROMPTS_URL = (
    "https://raw.githubusercontent.com/openai/CLIP/"
    "e184f608c5d5e58165682f7c332c3a8b4c1545f2/data/prompts.md"
)
CLOOB_DATA_URL = (
    "https://raw.githubusercontent.com/ml-jku/cloob/"
    "d1312e3897b2a6df586e70b7b395799a7245312a/src/training/zeroshot_data.py"
)


@dataclass(frozen=True)
class PinnedFile:
    """A metadata file fetched at run time and checked against its pinned sha256."""

    filename: str
    url: str
    sha256: str


PINNED = {
    "prompts.md": PinnedFile(
        "prompts.md",
        CLIP_PROMPTS_URL,
        "f98d2d25e78cc1fee650240b519f7cb58a83cfcc5aa538cde52514809cf4a1c9",
    ),
    "zeroshot_data.py": PinnedFile(
        "zeroshot_data.py",
        CLOOB_DATA_URL,
        "0bc2e409e39774e48ad185f23acc5c2e472aeaf928b660a81bf21efac64e8226",
    ),
}


@dataclass(frozen=True)
class ClassList:
    classnames: list[str]
    templates: list[str]  # each with one `{}`


def imagenet_classnames() -> list[str]:
    from open_clip import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet_templates() -> list[str]:
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores them as `lambda c: f'…{c}…'`; calling with "{}" gives format strings.
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def parse_cloob(source: str) -> dict[str, ClassList]:
    """`<key>_classnames = [...]` and `<key>_templates = [lambda c: f'…{c}…', ...]` → by key."""
    tree = ast.parse(source)
    names: dict[str, list[str]] = {}
    templates: dict[str, list[str]] = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.List | ast.Tuple)
        ):
            continue
        var = node.targets[0].id
        if var.endswith("_classnames"):
            names[var.removesuffix("_classnames")] = [_string(e) for e in node.value.elts]
        elif var.endswith("_templates"):
            templates[var.removesuffix("_templates")] = [
                _lambda_template(e) for e in node.value.elts
            ]
    return {k: ClassList(names[k], templates[k]) for k in names if k in templates}


def _string(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise UsageError(f"zeroshot_data.py line {node.lineno}: expected a string literal")


def _lambda_template(node: ast.expr) -> str:
    """`lambda c: f'a photo of a {c}.'` → 'a photo of a {}.' (a plain string is taken as is)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Lambda) and isinstance(node.body, ast.JoinedStr):
        arg = node.args.args[0].arg
        parts = []
        for piece in node.body.values:
            if isinstance(piece, ast.Constant):
                parts.append(str(piece.value).replace("{", "{{").replace("}", "}}"))
            elif (
                isinstance(piece, ast.FormattedValue)
                and isinstance(piece.value, ast.Name)
                and piece.value.id == arg
            ):
                parts.append("{}")
            else:
                break
        else:
            return "".join(parts)
    raise UsageError(f"zeroshot_data.py line {node.lineno}: unsupported template expression")


_SECTION = re.compile(r"^##\s+(.+?)\s*$", re.M)
_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)```", re.S)  # any language tag


def parse_clip_prompts(text: str) -> dict[str, ClassList]:
    """CLIP's prompts.md: `## Name` sections, each with a fenced
    `classes = [...]`/`templates = [...]`."""
    out: dict[str, ClassList] = {}
    heads = list(_SECTION.finditer(text))
    for i, head in enumerate(heads):
        body = text[head.end() : heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        values: dict[str, list[str]] = {}
        for block in _FENCE.findall(body):
            for node in ast.parse(block).body:
                if (
                    isinstance(node, ast.Assign)
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ("classes", "templates")
                ):
                    values[node.targets[0].id] = list(ast.literal_eval(node.value))
        if "classes" in values and "templates" in values:
            out[head.group(1)] = ClassList(values["classes"], values["templates"])
    return out


def load_cloob(path: Path) -> dict[str, ClassList]:
    return parse_cloob(Path(path).read_text(encoding="utf-8"))


def load_clip(path: Path) -> dict[str, ClassList]:
    return parse_clip_prompts(Path(path).read_text(encoding="utf-8"))
