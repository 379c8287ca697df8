"""The repository speaks of itself alone: a reader has the files, nothing else.

No file names the process that produced it — work sessions, tracker issue numbers, branch
nicknames, notes to a colleague, the tools of the place where it was written — nor a path outside
the repository. Words that libraries own are allowed where they mean that (pytest's
`scope="session"`, Spark's session, a process's own session).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPE = (
    "README.md",
    "CHANGELOG.md",
    "CONTRIBUTING.md",
    "pyproject.toml",
    ".pre-commit-config.yaml",
    ".ci",
    "docs",
    "bench",
    "packages",
    "tests",
)
_RULES = {
    "an issue number": r"\bissues? ?#?\d+",
    "a work session": r"\bsessions?\b",
    "a note to a person": r"<!--\s*(?:lead|todo|note)\b|\bthe lead\b|\bhelper engineers?\b",
    "the people at work": r"\b(?:other|\d+|several|three|two) engineers\b|\bengineers'",
    "a workplace tool": r"\bthe run tool\b|\blent (?:gpu )?machine\b|\bdevice time\b|\bworkplace\b",
    "a branch nickname": r"\bbranch i\d+\b|\bi\d\d(?:trainer|docs|cli)?\b(?=[' ])",
    "a path outside the repository": r"\.\./shared/|(?<![\w.])/work/",
}
RULES = {why: re.compile(pattern, re.I) for why, pattern in _RULES.items()}
# Library words that contain a forbidden one (matched case-insensitively, then ignored).
ALLOWED = re.compile(
    r"""scope=["']session["']|sparksession|spark session|own session|new session"""
    r"""|session[_-]?(?:id|token)""",
    re.I,
)


_SPLIT_ISSUE = re.compile(r"\bissues?$", re.I)
_NUMBER_START = re.compile(r"^[\s#*/>-]*#?\d")


def findings(text: str, where: str) -> list[str]:
    """`where:line: why: the words` for every forbidden word of `text` (an issue number wrapped
    onto the next line too)."""
    found = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        clean = ALLOWED.sub("", line)
        for why, rule in RULES.items():
            for m in rule.finditer(clean):
                found.append(f"{where}:{n}: {why}: {m.group(0)!r}")
        wrapped = n < len(lines) and _NUMBER_START.match(lines[n])
        if _SPLIT_ISSUE.search(clean.rstrip()) and wrapped:
            found.append(
                f"{where}:{n}: an issue number: {line.split()[-1] + ' ' + lines[n].strip()!r}"
            )
    return found


def tracked_files(root: Path = ROOT) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *SCOPE],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [root / p for p in listed.split("\0") if p and (root / p).is_file()]


def test_no_file_speaks_of_how_it_was_made():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, wheels
        if path != Path(__file__):
            found += findings(text, str(path.relative_to(ROOT)))
    assert found == []


def test_the_check_finds_each_kind_and_spares_library_words():
    text = "\n".join(
        [
            "Measured in issue 24; see Issue #7. A split issue",
            "# 25 too.",
            "No GPU in this session.",
            "<!-- lead: re-run this -->",
            "with three other engineers' test runs",
            "The run tool sends the checkout; the lent machine has no uv.",
            "measured on branch i25",
            "Source: ../shared/reference/gpu-machine.md, /work/wt-docs",
            '@pytest.fixture(scope="session")  # one SparkSession; the child in its own session',
        ]
    )
    whys = [f.split(": ", 2)[1] for f in findings(text, "x.md")]
    assert whys == [
        "an issue number",
        "an issue number",
        "an issue number",
        "a work session",
        "a note to a person",
        "the people at work",
        "a workplace tool",
        "a workplace tool",
        "a branch nickname",
        "a path outside the repository",
        "a path outside the repository",
    ]
