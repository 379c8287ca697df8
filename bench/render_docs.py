"""Write the measured tables of README.md and docs/*.md from bench/results/.

A table in a doc sits between two markers; the first names the results file (relative to
bench/results/) and how to show it:

    <!-- results: loss_scaling.json rows=cloob,clip -->
    (generated: do not edit)
    <!-- /results -->

`rows=a,b` keeps the rows whose first cell is one of those names, in the file's order. Kinds,
written after the file name (default `table`):

- `table`: the file's `columns` and `rows`;
- `stages`: loader.json's per-stage costs (ms per sample, one core);
- `measurements`: one row per entry of `measurements` (files that gather runs made apart);
- `spread`: demo_spread.json, the Quick start over methods × seeds × machines with intervals.

Every block ends with a line naming the script, commit, date and machine of its numbers. The docs
test (tests/test_docs.py) fails when a block differs from what its file renders to, or when a
rendered file is stale (bench/provenance.py). Standard library only.

    uv run python -m bench.render_docs            # rewrite every block
    uv run python -m bench.render_docs --check    # list the blocks that differ; exit 1 if any
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.provenance import RESULTS, ROOT, provenances

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
    re.S,
)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    file: str  # relative to bench/results/
    kind: str
    options: dict[str, str]
    body: str

    @property
    def where(self) -> str:
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc.name
        return f"{doc}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    return [_block(doc, text, m) for m in _BLOCK.finditer(text)]


def _block(doc: Path, text: str, m: re.Match[str]) -> Block:
    """`<!-- results: FILE [KIND] [key=value ...] -->`: the kind is the word without `=`."""
    file, *rest = m["spec"].split()
    kind = next((w for w in rest if "=" not in w), "table")
    options = dict(w.split("=", 1) for w in rest if "=" in w)
    line = text.count("\n", 0, m.start()) + 1
    return Block(doc, line, file, kind, options, m["body"])


def load(file: str, results: Path = RESULTS) -> dict[str, Any]:
    return json.loads((results / file).read_text(encoding="utf-8"))


def render(block: Block, results: Path = RESULTS) -> str:
    """The body the block's results file renders to (ends with a newline)."""
    payload = load(block.file, results)
    if block.kind not in KINDS:
        raise ValueError(f"{block.where}: unknown kind {block.kind!r} (one of {', '.join(KINDS)})")
    return KINDS[block.kind](payload, block.options)


# ----------------------------------------------------------------------------- cells


def cell(v: object) -> str:
    """One number as the tables show it: 3 significant digits, thousands separated."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def markdown(columns: list[str], rows: list[list[object]], right: set[int] | None = None) -> str:
    """A markdown table; numeric columns (or those in `right`) right-aligned."""
    right = right if right is not None else _numeric_columns(rows)
    align = ["---:" if i in right else "---" for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _numeric_columns(rows: list[list[object]]) -> set[int]:
    return {
        i
        for i in range(max((len(r) for r in rows), default=0))
        if all(isinstance(r[i], int | float) or r[i] in (None, "—") for r in rows if i < len(r))
    }


def source_line(payload: dict[str, Any], prov: dict[str, Any] | None, extra: str = "") -> str:
    """Where the numbers come from: script, commit, date, machine (and load, when recorded)."""
    if not prov:
        return "*No provenance recorded.*\n"
    m = payload.get("machine") or {}
    where = ", ".join(
        s
        for s in (
            m.get("cpu"),
            f"{m['cores']} cores" if m.get("cores") else "",
            f"load {m['load_average']}" if m.get("load_average") is not None else "",
            f"torch {m['torch'].split('+')[0]}" if m.get("torch") else "",
        )
        if s
    )
    return (
        f"*`{prov['script']}` at {prov['commit'][:7]} ({prov['date']}){extra}"
        f"{'; ' + where if where else ''}.*\n"
    )


# ----------------------------------------------------------------------------- kinds


def kind_table(payload: dict[str, Any], options: dict[str, str]) -> str:
    rows = payload["rows"]
    if "rows" in options:
        keep = options["rows"].split(",")
        rows = [r for r in rows if str(r[0]) in keep]
    (_, prov), *_ = provenances(payload)
    title = payload.get("title", "")
    return markdown(payload["columns"], rows) + "\n" + source_line(payload, prov, f": {title}")


def kind_stages(payload: dict[str, Any], options: dict[str, str]) -> str:
    stages = payload["stage_ms_per_sample"]
    rows = [[name, ms] for name, ms in stages.items()]
    (_, prov), *_ = provenances(payload)
    return markdown(["stage (one core)", "ms per sample"], rows) + "\n" + source_line(payload, prov)


def kind_measurements(payload: dict[str, Any], options: dict[str, str]) -> str:
    columns = payload["columns"]
    entries = payload["measurements"]
    rows = [[e[c] for c in columns] for e in entries]
    lines = [source_line({"machine": e.get("machine")}, e.get("provenance")) for e in entries]
    lines = list(dict.fromkeys(lines))  # one line for the rows one run of the script wrote
    return markdown(columns, rows) + "\n" + "".join(f"{i + 1}. {s}" for i, s in enumerate(lines))


METHOD_NAMES = {"cloob": "CLOOB", "clip": "CLIP", "siglip": "SigLIP"}
TASK_ORDER = ["colours", "backgrounds", "shapes"]  # the demo's, easiest first


def kind_spread(payload: dict[str, Any], options: dict[str, str]) -> str:
    """Rows: method × machine × seed, a cell top-1 % [95% interval]; then a line per machine."""
    entries = payload["measurements"]
    found: dict[str, float] = {}
    for e in entries:
        for r in e["runs"]:
            for task, t in r["tasks"].items():
                found.setdefault(task, t["chance"])
    tasks = {t: found[t] for t in sorted(found, key=lambda t: (_rank(TASK_ORDER, t), t))}
    runs = [(i, r) for i, e in enumerate(entries) for r in e["runs"]]
    runs.sort(key=lambda ir: (_rank(list(METHOD_NAMES), ir[1]["method"]), ir[0], ir[1]["seed"]))
    columns = ["method", "machine", "seed", "wall"]
    columns += [f"{task} (chance {chance:.1f}%)" for task, chance in tasks.items()]
    rows: list[list[object]] = []
    for i, r in runs:
        method = METHOD_NAMES.get(r["method"], r["method"])
        rows.append([method, _machine_key(i), r["seed"], _minutes(r["wall_s"])])
        rows[-1] += [_with_interval(r["tasks"].get(task)) for task in tasks]
    table = markdown(columns, rows, right=set(range(2, len(columns))))
    machines = "".join(
        f"- {_machine_key(i)}: {_own_label(e)}"
        + source_line({"machine": e["machine"]}, e["provenance"], f", `{_command(e)}`")
        for i, e in enumerate(entries)
    )
    return table + "\n" + machines


def _command(entry: dict[str, Any]) -> str:
    """The runs' command as `trainer run …`: prose, not a line the docs test parses."""
    return entry["command"].strip().removeprefix("uv run ")


def _own_label(entry: dict[str, Any]) -> str:
    """A machine's label when it says more than its CPU and core count (which the line shows)."""
    m = entry["machine"]
    return (
        "" if entry["label"] == f"{m.get('cpu')}, {m.get('cores')} cores" else f"{entry['label']}; "
    )


def _rank(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def _machine_key(i: int) -> str:
    return chr(ord("A") + i)


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _with_interval(t: dict[str, Any] | None) -> str:
    if not t:
        return "—"
    lo, hi = t["interval"]
    return f"{t['top1']:.1f} [{lo:.1f}, {hi:.1f}]"


KINDS: dict[str, Callable[[dict[str, Any], dict[str, str]], str]] = {
    "table": kind_table,
    "stages": kind_stages,
    "measurements": kind_measurements,
    "spread": kind_spread,
}


# ----------------------------------------------------------------------------- rewrite / check


def rewrite(doc: Path, results: Path = RESULTS) -> bool:
    """Render every block of `doc` in place; True when something changed."""
    text = doc.read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        return m["open"] + render(_block(doc, text, m), results) + m["close"]

    new = _BLOCK.sub(fill, text)
    if new != text:
        doc.write_text(new, encoding="utf-8")
    return new != text


def differing(docs: list[Path] = DOCS, results: Path = RESULTS) -> list[str]:
    """The blocks whose text is not what their results file renders to."""
    return [
        f"{b.where}: table of {b.file} differs from what the file renders to"
        for doc in docs
        for b in blocks(doc)
        if b.body != render(b, results)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only list the blocks that differ")
    args = p.parse_args(argv)
    if args.check:
        problems = differing()
        print("\n".join(problems) or "every table matches its results file")
        return 1 if problems else 0
    for doc in DOCS:
        try:
            changed = rewrite(doc)
        except (OSError, ValueError, KeyError, TypeError) as err:  # a file or block that is wrong
            print(f"error: {doc.relative_to(ROOT)}: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
        if changed:
            print(f"rendered {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
