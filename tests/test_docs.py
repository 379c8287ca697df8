"""Docs that cannot drift.

- Every `dataprep|trainer|benchmarks …` command in README.md and docs/*.md (fenced code blocks,
  line continuations joined, and inline `uv run …` spans) parses against the real CLI: click's
  own parser (`make_context`, resilient_parsing=False), so an unknown flag, a missing value or a
  renamed sub-command fails here. Nothing is invoked: no callback runs, no file is read.
- The module map in README.md names only paths that exist, and every module under packages/*/src.
- Each section of docs/performance.md that holds a number names the bench script that made it.
- Every measured table is rendered from its results file (bench/render_docs.py) and says so; a
  table that differs from its file, or a file whose measurement no longer describes the code
  (bench/provenance.py: the rule CONTRIBUTING.md states), fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import provenance, render_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BATCH_SCRIPTS = sorted((ROOT / "examples" / "slurm").glob("*.sbatch"))  # shell from top to end
TOOLS = {
    "dataprep": "cloob.dataprep.cli",
    "trainer": "cloob.trainer.cli",
    "benchmarks": "cloob.benchmarks.cli",
}
ELLIPSES = {"...", "…"}  # "the rest of the command": required options may then be missing
_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"`(uv run (?:dataprep|trainer|benchmarks)\b[^`]*)`")


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line, for the failure message
    tool: str
    args: tuple[str, ...]
    elided: bool  # the doc left part of it out ("…")

    def __str__(self) -> str:
        return f"{self.where}: {self.tool} {' '.join(self.args)}"


# ----------------------------------------------------------------------------- collecting


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of the shell code blocks, continuations joined; plus inline
    `uv run …` spans of the prose. A batch script (`.sbatch`) is one shell block."""
    out: list[tuple[int, str]] = []
    script = path.suffix == ".sbatch"
    in_block, lang, pending, start = script, "", "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = None if script else _FENCE.match(line.strip())
        if fence:
            in_block, lang = (not in_block, fence.group(1)) if not in_block else (False, "")
            continue
        if in_block and lang in ("", "bash", "sh", "shell", "console"):
            start = start or n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending, start = "", 0
        elif not in_block:
            out.extend((n, m.group(1)) for m in _INLINE.finditer(line))
    return out


def _commands_in(line: str) -> list[list[str]]:
    """Shell words of each simple command on the line (split at &&, ||, |, ;), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    commands: list[list[str]] = []
    try:
        for word in lexer:
            if word and set(word) <= set(";&|"):
                commands.append(words)
                words = []
            else:
                words.append(word)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    return [*commands, words]


def _tool_args(words: list[str]) -> tuple[str, list[str]] | None:
    """('trainer', args) for `[ENV=…] [uv run] trainer args`, for
    `… torchrun … -m -- cloob.trainer.cli args` and `python -m cloob.trainer.cli args`, each
    also after `srun [srun's options]`."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if words[:1] == ["srun"]:  # srun's options end at the program it starts
        starts = [i for i, w in enumerate(words) if w in (*TOOLS, "torchrun", "python", "python3")]
        words = words[starts[0] :] if starts else []
    if words[:2] == ["uv", "run"]:
        words = words[2:]
    if words and words[0] in TOOLS:
        return words[0], words[1:]
    for tool, module in TOOLS.items():
        if module in words and words[0] in ("torchrun", "python", "python3"):
            return tool, words[words.index(module) + 1 :]
    return None


def collect(paths: list[Path], root: Path = ROOT) -> list[DocCommand]:
    """The tool commands of the docs; `where` is relative to `root`."""
    found = []
    for path in paths:
        for n, line in _code_lines(path):
            for words in _commands_in(line):
                hit = _tool_args(words)
                if hit:
                    tool, args = hit
                    kept = tuple(a for a in args if a not in ELLIPSES)
                    found.append(
                        DocCommand(
                            f"{path.relative_to(root)}:{n}", tool, kept, len(kept) != len(args)
                        )
                    )
    return found


# ----------------------------------------------------------------------------- parsing


def _root_command(tool: str):
    import importlib

    import typer

    return typer.main.get_command(importlib.import_module(TOOLS[tool]).app)


def parse_error(cmd: DocCommand) -> str | None:
    """Why click refuses the command line, or None. Walks the sub-commands the way click does
    before invoking (Group.resolve_command, then the sub-command's make_context); no callback of
    a command runs. `--help` ends the walk cleanly (typer.Exit(0))."""
    from typer import Exit, TyperException  # the public base of click's errors

    group = _root_command(cmd.tool)
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            ctx = group.make_context(cmd.tool, list(cmd.args), resilient_parsing=False)
            args = ctx._protected_args + ctx.args
            while hasattr(ctx.command, "resolve_command"):
                if not args:
                    return f"{cmd}: no sub-command"
                name, sub, args = ctx.command.resolve_command(ctx, args)
                ctx = sub.make_context(name, args, parent=ctx, resilient_parsing=False)
                args = ctx._protected_args + ctx.args
    except Exit as done:
        return None if done.exit_code == 0 else f"{cmd}: exit {done.exit_code}"
    except TyperException as err:
        missing = err.format_message().startswith("Missing ")  # a value left out of a "..." line
        return None if missing and cmd.elided else f"{cmd}: {err.format_message()}"
    return None


DOC_COMMANDS = collect([*DOCS, *BATCH_SCRIPTS])


def test_every_batch_script_holds_a_trainer_command():
    """A script whose trainer line the collector did not recognise would be checked for nothing."""
    assert BATCH_SCRIPTS
    for script in BATCH_SCRIPTS:
        where = str(script.relative_to(ROOT))
        found = [c for c in DOC_COMMANDS if c.where.startswith(f"{where}:")]
        assert [c.tool for c in found] == ["trainer"], where


def test_the_docs_hold_commands_for_every_tool():
    tools = {c.tool for c in DOC_COMMANDS}
    assert tools == set(TOOLS), f"no documented command for {set(TOOLS) - tools}"
    assert len(DOC_COMMANDS) > 30


@pytest.mark.parametrize("cmd", DOC_COMMANDS, ids=[c.where for c in DOC_COMMANDS])
def test_documented_command_parses(cmd: DocCommand):
    assert parse_error(cmd) is None, parse_error(cmd)


@pytest.mark.parametrize(
    "line, why",
    [
        ("uv run trainer run --method cloob --no-such-flag 3", "No such option"),
        ("uv run dataprep fetch cc3m --tsv a.tsv --out d --processes", "requires an argument"),
        ("uv run benchmarks zeroshot-all --ckpt x", "No such command"),
        ("uv run dataprep stats", "Missing argument"),
        (
            "DATAPREP_SPARK_MASTER=spark://h:7077 uv run dataprep fetch cc3m --tsv a --out b "
            "--distributer ray",
            "No such option",
        ),
        (
            "uv run torchrun --nproc-per-node 2 -m -- cloob.trainer.cli run --epochz 3",
            "No such option",
        ),
        ("srun --ntasks-per-node=4 trainer run --epochz 3", "No such option"),
        (
            'srun torchrun --nnodes "$SLURM_NNODES" -m -- cloob.trainer.cli run --epochz 3',
            "No such option",
        ),
    ],
)
def test_a_wrong_command_in_a_doc_fails(tmp_path, line, why):
    """The check can fail: a doc with a flag that does not exist is reported, with its line."""
    doc = tmp_path / "bad.md"
    doc.write_text(f"# bad\n\n```bash\n{line}\n```\n", encoding="utf-8")
    (cmd,) = collect([doc], root=tmp_path)
    error = parse_error(cmd)
    assert error is not None and why in error and error.startswith("bad.md:4:"), error


def test_collect_joins_continuations_chains_and_inline_spans(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `uv run trainer run --help` first.\n\n"
        "```bash\n"
        "uv run trainer run --method clip --name clip && uv run benchmarks list   # comment\n"
        "uv run dataprep fetch demo \\\n    --out d --samples 10\n"
        "trainer run … --resume latest\n"
        "```\n\n```python\nimport dataprep\n```\n",
        encoding="utf-8",
    )
    got = [(c.where, c.tool, c.args, c.elided) for c in collect([doc], root=tmp_path)]
    assert got == [
        ("x.md:1", "trainer", ("run", "--help"), False),
        ("x.md:4", "trainer", ("run", "--method", "clip", "--name", "clip"), False),
        ("x.md:4", "benchmarks", ("list",), False),
        ("x.md:5", "dataprep", ("fetch", "demo", "--out", "d", "--samples", "10"), False),
        ("x.md:7", "trainer", ("run", "--resume", "latest"), True),
    ]


def test_a_batch_script_is_read_as_shell(tmp_path):
    script = tmp_path / "x.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --nodes=2\nhead=$(scontrol show hostnames | head -n 1)\n"
        'srun torchrun --nnodes 2 --rdzv-endpoint "$head:29500" \\\n'
        "    -m -- cloob.trainer.cli run \\\n    --name x --resume latest  # the same name\n",
        encoding="utf-8",
    )
    got = [(c.where, c.tool, c.args) for c in collect([script], root=tmp_path)]
    assert got == [("x.sbatch:4", "trainer", ("run", "--name", "x", "--resume", "latest"))]


# ----------------------------------------------------------------------------- the module map


def module_map(readme: Path = ROOT / "README.md") -> tuple[list[str], list[str]]:
    """(folders, files) named in the README's map: the first code block after 'How it fits
    together'. A line starting with a folder (`packages/…/`, `tests/`, `bench/`) names it and makes
    it the base for the `*.py` / `*.json` words that follow, on that line and the next ones."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## How it fits together", 1)[1]
    block = section.split("```", 2)[1]
    folders, files, base = [], [], ""
    for line in block.splitlines()[1:]:
        words = line.split()
        if words and words[0].endswith("/") and not line.startswith(" "):
            base = words[0]
            folders.append(base)
            words = words[1:]
        files += [
            base + w.strip("·,;()") for w in words if re.fullmatch(r"[\w/.-]+\.(py|json)[·,;)]*", w)
        ]
    return folders, files


def map_problems(readme: Path = ROOT / "README.md", root: Path = ROOT) -> list[str]:
    """Paths the map names that do not exist, and modules under packages/*/src it leaves out."""
    folders, files = module_map(readme)
    problems = [f"no such path: {p}" for p in folders + files if not (root / p).exists()]
    modules = {
        str(p.relative_to(root))
        for p in root.glob("packages/*/src/**/*.py")
        if p.name != "__init__.py"
    }
    problems += [f"not on the map: {m}" for m in sorted(modules - set(files))]
    return problems if files else ["no module map found"]


def test_module_map_names_existing_paths_and_every_module():
    assert map_problems() == []


def test_module_map_check_can_fail(tmp_path):
    pkg = tmp_path / "packages/x/src/cloob/x"
    pkg.mkdir(parents=True)
    for name in ("cli.py", "new.py", "__init__.py"):
        (pkg / name).write_text("")
    readme = tmp_path / "README.md"
    readme.write_text(
        "## How it fits together\n\n```\npackages/x/src/cloob/x/   the x\n"
        "  cli.py   commands        gone.py  removed\n```\n",
        encoding="utf-8",
    )
    assert map_problems(readme, tmp_path) == [
        "no such path: packages/x/src/cloob/x/gone.py",
        "not on the map: packages/x/src/cloob/x/new.py",
    ]


# ----------------------------------------------------------------------------- performance.md


def performance_problems(text: str, root: Path = ROOT) -> list[str]:
    """Sections (`## …`) of performance.md with numbers but no `bench/<script>`, and cited
    scripts that do not exist."""
    problems = []
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    for section in sections:
        title = section.splitlines()[0]
        body = re.sub(r"`[^`]*`", "", section.split("\n", 1)[-1])  # numbers in prose and tables
        scripts = re.findall(r"bench/[\w/]+\.(?:py|sh)", section)
        if re.search(r"\d", body) and not scripts:
            problems.append(f"'{title}': numbers without the bench script that made them")
        problems += [f"'{title}': {s} does not exist" for s in scripts if not (root / s).is_file()]
    return problems if sections else ["no sections"]


def test_every_performance_number_names_its_bench_script():
    assert (
        performance_problems((ROOT / "docs" / "performance.md").read_text(encoding="utf-8")) == []
    )


def test_performance_check_can_fail():
    text = (
        "# Performance\n\n## Loader\n\n| a | b |\n|---|---|\n| ours | 1.27 |\n\n"
        "## Loss\n\n`uv run python bench/no_such.py`: 3 ms\n"
    )
    assert performance_problems(text) == [
        "'Loader': numbers without the bench script that made them",
        "'Loss': bench/no_such.py does not exist",
    ]


# ----------------------------------------------------------------------------- links

# Files linked before they exist (none today): checked once they do.
PENDING: set[str] = set()
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def link_problems(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Relative links (files, and #anchors into markdown files) that lead nowhere."""
    problems = []
    for path in paths:
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(root)} → {target}"
            if not dest.exists():
                if str(dest.relative_to(root)) not in PENDING:
                    problems.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"{where}: no such heading")
    return problems


def _anchors(md: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", md.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_doc_links_lead_somewhere():
    assert link_problems([*DOCS, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]) == []


def test_link_check_can_fail(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## Exact resume\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md#exact-resume) [x](a.md#resume) [y](c.md) [z](https://x.org/c.md)\n",
        encoding="utf-8",
    )
    assert link_problems([doc], tmp_path) == [
        "b.md → a.md#resume: no such heading",
        "b.md → c.md: no such file",
    ]


# ----------------------------------------------------------------------------- named code


_REPO_PATH = re.compile(r"`((?:packages|tests|bench)/[\w/.-]+\.(?:py|sh|json))`")
_MODULE = re.compile(r"`(cloob\.(?:common|dataprep|trainer|benchmarks)(?:\.\w+)+)")


def named_code_problems(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Repository files (`tests/…/x.py`, `bench/x.py`, …) and modules (`cloob.pkg.module…`)
    that the prose names in backticks but that do not exist. For a dotted name, its first three
    parts must be a module or package; what follows may be an attribute."""
    problems = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for file in _REPO_PATH.findall(text):
            if not (root / file).exists():
                problems.append(f"{path.relative_to(root)}: no file {file}")
        for dotted in _MODULE.findall(text):
            _, pkg, name = dotted.split(".")[:3]
            base = root / "packages" / pkg / "src" / "cloob" / pkg / name
            if not (base.with_suffix(".py").is_file() or base.is_dir()):
                problems.append(
                    f"{path.relative_to(root)}: no module {'.'.join(['cloob', pkg, name])}"
                )
    return problems


def test_named_files_and_modules_exist():
    assert named_code_problems([*DOCS, ROOT / "CONTRIBUTING.md"]) == []


def test_named_code_check_can_fail(tmp_path):
    (tmp_path / "packages/common/src/cloob/common").mkdir(parents=True)
    (tmp_path / "packages/common/src/cloob/common/files.py").write_text("")
    (tmp_path / "tests").mkdir()
    doc = tmp_path / "d.md"
    doc.write_text(
        "`cloob.common.files.atomic_path`, `cloob.common.gone`, `tests/test_x.py`\n",
        encoding="utf-8",
    )
    assert named_code_problems([doc], tmp_path) == [
        "d.md: no file tests/test_x.py",
        "d.md: no module cloob.common.gone",
    ]


# ----------------------------------------------------------------------------- measured tables


def test_every_rendered_table_matches_its_results_file():
    """`uv run python -m bench.render_docs` rewrites the tables that differ."""
    assert render_docs.differing() == []


def test_the_docs_render_their_measured_tables():
    files = {b.file for doc in render_docs.DOCS for b in render_docs.blocks(doc)}
    assert {"demo_spread.json", "train_step.json", "loader.json", "loss.json"} <= files


def test_every_rendered_results_file_still_describes_the_code():
    files = sorted({b.file for doc in render_docs.DOCS for b in render_docs.blocks(doc)})
    found = [p for f in files for p in provenance.problems(render_docs.load(f), f)]
    assert found == []


def test_every_results_file_records_where_it_came_from():
    for path in sorted(provenance.RESULTS.glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        for label, prov in provenance.provenances(payload):
            assert prov and {"commit", "script", "code"} <= set(prov), f"{path.name} {label}"


def _doc_with_block(tmp_path: Path, results: Path, kind: str = "") -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(f"# x\n\n<!-- results: r.json{kind} -->\n<!-- /results -->\n", "utf-8")
    assert render_docs.rewrite(doc, results)
    return doc


def test_a_number_changed_in_the_results_file_alone_fails(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    payload = render_docs.load("train_step.json")
    (results / "r.json").write_text(json.dumps(payload), "utf-8")
    doc = _doc_with_block(tmp_path, results)
    assert render_docs.differing([doc], results) == []
    payload["rows"][0][1] += 1.0
    (results / "r.json").write_text(json.dumps(payload), "utf-8")
    (problem,) = render_docs.differing([doc], results)
    assert problem.startswith("doc.md:3: table of r.json differs")


def test_a_number_edited_in_the_doc_alone_fails(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "r.json").write_text(json.dumps(render_docs.load("loader.json")), "utf-8")
    doc = _doc_with_block(tmp_path, results, " stages")
    text = doc.read_text("utf-8")
    edited = re.sub(r"\| (\d+)\.(\d+) \|", r"| \g<1>.9\2 |", text, count=1)
    assert edited != text
    doc.write_text(edited, "utf-8")
    assert len(render_docs.differing([doc], results)) == 1


def _git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(
        ["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def measured_repo(tmp_path):
    """A repository whose bench script measured `lib/code.py` at its first commit."""
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "bench" / "m.py").write_text('"""Measure."""\nimport os\n\nN = 3\n', "utf-8")
    (root / "lib" / "code.py").write_text("def f():\n    return 1\n", "utf-8")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    payload = {"provenance": provenance.record(root / "bench" / "m.py", ["lib"], root=root)}
    return root, payload


def test_a_fresh_measurement_is_current_whatever_its_comments_imports_and_types(measured_repo):
    root, payload = measured_repo
    script = root / "bench" / "m.py"
    assert payload["provenance"]["dirty"] == []
    script.write_text('"""Measure, now documented."""\nimport sys  # moved\n\nN: int = 3  # same\n')
    _git(root, "commit", "-qam", "comments, docstring, imports, annotations")
    assert provenance.problems(payload, "r.json", root) == []


def test_a_stale_measurement_fails(measured_repo):
    root, payload = measured_repo
    (root / "bench" / "m.py").write_text('"""Measure."""\nimport os\n\nN = 4\n', "utf-8")
    (root / "lib" / "code.py").write_text("def f():\n    return 2\n", "utf-8")
    assert provenance.problems(payload, "r.json", root) == [
        "r.json: bench/m.py changed since it measured (rerun it)",
        f"r.json: code it measures changed since {payload['provenance']['commit'][:10]}: "
        "lib/code.py",
    ]


def test_a_measurement_of_another_history_or_of_uncommitted_code_fails(measured_repo):
    root, payload = measured_repo
    (root / "lib" / "code.py").write_text("def f():\n    return 3\n", "utf-8")
    dirty = provenance.record(root / "bench" / "m.py", ["lib"], root=root)
    assert provenance.problems({"provenance": dirty}, "d.json", root)[0] == (
        "d.json: measured uncommitted changes to lib/code.py"
    )
    elsewhere = {"provenance": {**payload["provenance"], "commit": "0" * 40}}
    assert provenance.problems(elsewhere, "e.json", root) == [
        f"e.json: measured commit {'0' * 10} is not in this branch's history"
    ]
    assert provenance.problems({}, "n.json", root) == [
        "n.json: no provenance (which commit and script measured it?)"
    ]


# ----------------------------------------------------------------------------- adding an objective

TRAINER = ROOT / "packages" / "trainer" / "src" / "cloob" / "trainer"
THROWAWAY_LOSS = '''

def throwaway_loss(image_features, text_features, inv_tau, local=None):
    """Twice InfoNCE: a test's objective."""
    return 2 * clip_loss(image_features, text_features, inv_tau, local)


class ThrowawayLoss(ContrastiveLoss):
    def forward(self, image_features, text_features, inv_tau, local=None):
        return throwaway_loss(image_features, text_features, inv_tau, local)


'''


def _overlay(tmp_path: Path, steps: set[int]) -> Path:
    """A copy of cloob.trainer with the documented steps applied, found before the real one."""
    overlay = tmp_path / f"overlay{''.join(map(str, sorted(steps)))}"
    shutil.copytree(TRAINER, overlay / "cloob" / "trainer", ignore=shutil.ignore_patterns("*.pyc"))
    losses = overlay / "cloob" / "trainer" / "losses.py"
    methods = overlay / "cloob" / "trainer" / "methods.py"
    if 2 in steps:  # name it in methods.DESCRIPTIONS
        text = methods.read_text("utf-8")
        anchor = "DESCRIPTIONS: dict[str, str] = {\n"
        assert anchor in text
        methods.write_text(text.replace(anchor, anchor + '    "throwaway": "twice InfoNCE",\n'))
    if 3 in steps:  # the function and its ContrastiveLoss, added to _LOSSES under the same name
        text = losses.read_text("utf-8")
        anchor = "_LOSSES: dict[str, type[ContrastiveLoss]] = {\n"
        assert anchor in text
        text = text.replace(anchor, THROWAWAY_LOSS + anchor + '    "throwaway": ThrowawayLoss,\n')
        losses.write_text(text)
    return overlay


def _python(overlay: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(overlay), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )


def _objective_steps() -> str:
    doc = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    return doc.split("### Adding an objective", 1)[1].split("###", 1)[0]


def test_the_objective_steps_name_what_the_code_has():
    """Fast: every name the steps use exists where they say (the slow test below follows them)."""
    steps = _objective_steps()
    methods = (TRAINER / "methods.py").read_text("utf-8")
    losses = (TRAINER / "losses.py").read_text("utf-8")
    for name, where in (
        ("cloob.trainer.methods.DESCRIPTIONS", "DESCRIPTIONS: dict[str, str] = {" in methods),
        ("_OWN_INV_TAU", "_OWN_INV_TAU = {" in methods),
        ("ContrastiveLoss", "class ContrastiveLoss(nn.Module):" in losses),
        ("_LOSSES", "_LOSSES: dict[str, type[ContrastiveLoss]] = {" in losses),
        ("must list the same", "must list the same methods" in losses),
    ):
        assert name in steps, f"the steps no longer name {name}"
        assert where, f"the code no longer has {name} where the steps say"


@pytest.mark.slow  # two processes that import torch, one of them trains: ~1 min on 2 busy cores
def test_the_documented_steps_add_an_objective(tmp_path):
    """docs/architecture.md's "Adding an objective", followed on a throwaway objective: with
    step 2 alone the trainer refuses to import; with steps 2 and 3 `--method throwaway` trains."""
    half = _python(_overlay(tmp_path, {2}), "-c", "import cloob.trainer.losses")
    assert half.returncode != 0
    assert "cloob.trainer.methods and _LOSSES must list the same methods" in half.stderr

    model = str(ROOT / "tests" / "trainer" / "micro.json")
    run = _python(
        _overlay(tmp_path, {2, 3}),
        "-m",
        "cloob.trainer.cli",
        "run",
        *("--method", "throwaway", "--model", model, "--dataset-type", "synthetic"),
        *("--train-num-samples", "16", "--batch-size", "8", "--max-steps", "2", "--workers", "0"),
        *("--logs", str(tmp_path / "logs"), "--name", "t", "--no-progress"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    config = json.loads((tmp_path / "logs" / "t" / "config.json").read_text())
    assert config["model"]["method"] == "throwaway"


# ----------------------------------------------------------------------------- CONTRIBUTING


def unlisted_helpers(contributing: Path = ROOT / "CONTRIBUTING.md", root: Path = ROOT) -> list[str]:
    """tests/support modules that CONTRIBUTING's list of test helpers does not name."""
    text = contributing.read_text(encoding="utf-8")
    section = text.split("helpers in `tests/support/`", 1)[-1].split("\n- **", 1)[0]
    modules = sorted(p.name for p in (root / "tests" / "support").glob("*.py"))
    return [m for m in modules if m != "__init__.py" and f"`{m}`" not in section]


def test_contributing_lists_every_test_helper():
    assert unlisted_helpers() == []


def test_helper_list_check_can_fail(tmp_path):
    (tmp_path / "tests" / "support").mkdir(parents=True)
    for name in ("__init__.py", "server.py", "new.py"):
        (tmp_path / "tests" / "support" / name).write_text("")
    doc = tmp_path / "C.md"
    doc.write_text("- helpers in `tests/support/`: `server.py`.\n- **Next.** `new.py`\n", "utf-8")
    assert unlisted_helpers(doc, tmp_path) == ["new.py"]


def test_bench_docs_links_and_named_files_lead_somewhere():
    docs = [ROOT / "bench" / "gpu" / "README.md", ROOT / "bench" / "NOTES.md"]
    assert link_problems(docs) == []
    assert named_code_problems([docs[0]]) == []
