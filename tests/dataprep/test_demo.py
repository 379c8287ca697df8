"""The demo dataset: real shard layout, manifest, held-out benchmark, idempotent and kill-safe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cloob.dataprep.sources.demo import build_demo
from cloob.dataprep.synthetic import BACKGROUNDS, COLOURS, SHAPES, held_out_pairs

DEMO_OPTIONS = {"samples": 2300, "seed": 3, "image_size": 32, "per_class": 4}
TIMED = ("runs.json", "_stats.json")  # when the build ran and how long each shard took


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "ds", processes=2, **DEMO_OPTIONS)


def test_one_process_writes_the_same_bytes_as_two(demo, tmp_path):
    serial = build_demo(tmp_path / "ds", processes=1, **DEMO_OPTIONS)
    files = sorted(p.relative_to(serial.root) for p in serial.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(demo.root) for p in demo.root.rglob("*") if p.is_file())
    compared = [f for f in files if not f.name.endswith(TIMED) and f.name != "manifest.duckdb"]
    assert sum(f.suffix in (".tar", ".parquet") for f in compared) == 2 * 3  # 3 shards
    assert sum(f.suffix == ".png" for f in compared) == 4 * (6 + 8 + 6)  # the three tasks
    for rel in compared:
        assert (serial.root / rel).read_bytes() == (demo.root / rel).read_bytes(), rel
    tables = "SELECT * FROM samples ORDER BY source_id", "SELECT * FROM shards ORDER BY shard"
    with (
        duckdb.connect(str(serial.manifest), read_only=True) as one,
        duckdb.connect(str(demo.manifest), read_only=True) as two,
    ):
        for query in tables:
            assert one.execute(query).fetchall() == two.execute(query).fetchall(), query


def test_layout_sizes_and_manifest(demo):
    sizes = json.loads(demo.sizes_json.read_text())
    assert sizes == json.loads((demo.shards_dir / "sizes.json").read_text())
    assert sizes == {"00000.tar": 1000, "00001.tar": 1000, "00002.tar": 300}
    for name in ("00000.parquet", "00000_stats.json", "00002.tar"):
        assert (demo.shards_dir / name).exists()
    with duckdb.connect(str(demo.manifest), read_only=True) as con:
        assert con.execute(
            "SELECT count(*), count(DISTINCT source_id) FROM samples WHERE status = 'success'"
        ).fetchall() == [(2300, 2300)]
        assert con.execute("SELECT sum(n_success) FROM shards WHERE complete").fetchall() == [
            (2300,)
        ]


def test_manifest_opens_with_the_oldest_allowed_duckdb(demo):
    """pyproject allows duckdb>=1.1, and DuckDB 1.1 reads only storage version 64 ("Trying to read
    a database file with version number 999, but we can only read version 64" for a file the locked
    DuckDB 2.0 writes by default). Checked once by hand with duckdb 1.1.3 in a separate venv."""
    import struct
    import tomllib

    project = tomllib.loads(
        (Path(__file__).parents[2] / "packages/dataprep/pyproject.toml").read_text()
    )
    assert "duckdb>=1.1" in project["project"]["dependencies"]
    header = demo.manifest.read_bytes()[:20]
    assert header[8:12] == b"DUCK" and struct.unpack("<Q", header[12:20])[0] == 64


def test_training_data_never_shows_held_out_pairs(demo):
    rows = pq.read_table(demo.shards_dir / "00000.parquet", columns=["shape", "colour"]).to_pylist()
    seen = {(r["shape"], r["colour"]) for r in rows}
    assert not seen & held_out_pairs()
    assert len(seen) > 20


def test_benchmark_tasks(demo):
    assert set(demo.tasks) == {"shapes", "colours", "backgrounds"}
    for task, classes in (
        ("shapes", sorted(SHAPES)),
        ("colours", sorted(COLOURS)),
        ("backgrounds", sorted(BACKGROUNDS)),
    ):
        t = demo.tasks[task]
        assert t.classnames_file.read_text().splitlines() == classes
        folders = [c.replace(" ", "_") for c in classes]  # "pale blue" → pale_blue/
        assert sorted(p.name for p in t.images_dir.iterdir()) == folders
        templates = t.templates_file.read_text().splitlines()
        assert len(templates) >= 4 and all("{}" in line for line in templates)
        for folder in folders:
            files = sorted((t.images_dir / folder).glob("*.png"))
            assert len(files) == 4
            assert Image.open(files[0]).size == (32, 32)


def test_background_task_shows_its_class(demo):
    # The corner is background: plain, or the texture's 0.75 shade of it (stripes start at x = 0).
    t = demo.tasks["backgrounds"]
    for name, rgb in BACKGROUNDS.items():
        for f in sorted((t.images_dir / name.replace(" ", "_")).glob("*.png")):
            corner = Image.open(f).convert("RGB").getpixel((0, 0))
            assert any(
                all(abs(c - k * b) <= 12 for c, b in zip(corner, rgb, strict=True))
                for k in (1, 0.75)
            ), (name, corner)


def test_verify_and_stats_run_on_the_demo(demo, dataprep):
    assert dataprep("verify", demo.root).code == 0
    assert "2,300" in dataprep("stats", demo.root).out


def test_idempotent_and_kill_safe(demo, tmp_path):
    stamp = demo.sizes_json.stat().st_mtime_ns
    again = build_demo(demo.root, samples=2300, seed=3, image_size=32, per_class=4)
    assert again == demo and demo.sizes_json.stat().st_mtime_ns == stamp
    # A build killed half-way leaves only a temp dir beside the target, never a "complete" target.
    out = tmp_path / "ds"
    leftover = tmp_path / ".ds.tmp-99999"
    (leftover / "shards").mkdir(parents=True)
    small = build_demo(out, samples=50, per_class=1)
    assert json.loads(small.sizes_json.read_text()) == {"00000.tar": 50}
    assert not leftover.exists()  # cleaned up by the next build
    bigger = build_demo(out, samples=120, per_class=1)  # other options: rebuilt in place
    assert sum(json.loads(bigger.sizes_json.read_text()).values()) == 120


def test_dataprep_never_imports_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import cloob.dataprep.cli, cloob.dataprep.sources.demo, cloob.dataprep.fetch, "
        "cloob.dataprep.report\nprint('ok')"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "ok"
    )


def test_cli_demo(dataprep, tmp_path: Path):
    result = dataprep(
        "fetch",
        "demo",
        "--out",
        tmp_path / "d",
        "--samples",
        "30",
        "--per-class",
        "1",
        "--image-size",
        "16",
    )
    assert result.code == 0, result.err
    assert (tmp_path / "d" / "benchmark" / "shapes" / "classnames.txt").exists()
