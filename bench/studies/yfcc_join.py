"""Benchmark: building the YFCC-15M url list (subset ⋈ 25-column bz2 metadata) at 1M / 10M rows.

Generates synthetic inputs of realistic shape (25 URL-encoded columns, ~450 bytes a line, half the
descriptions empty, some HTML, ~5% videos, a subset of 14.8% of the ids plus ids missing from the
metadata; bz2 like the published files), then times `build_yfcc_list` in a fresh process and reads
its peak resident memory. Prints a rich table and writes bench/results/yfcc_join.json: one
measurement per size, each with its machine and provenance, merged by size so that sizes can be
run separately. Inputs are cached under $BENCH_CACHE (default /tmp/cloob-bench-cache).

    uv run python -m bench.studies.yfcc_join                   # 1M and 10M
    uv run python -m bench.studies.yfcc_join --sizes 1000000
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import random
import resource
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import quote_plus

from rich.console import Console
from rich.table import Table

from bench._common import machine
from bench.provenance import RESULTS, head, record

CHUNK = 500_000
SUBSET_FRACTION = 14_829_396 / 100_000_000
OUT = RESULTS / "yfcc_join.json"
TITLE = "yfcc_join: subset ⋈ 25-column bz2 metadata → url list (parquet)"
COLUMNS = (
    "metadata_rows",
    "subset_rows",
    "output_rows",
    "bz2_mb",
    "raw_mb",
    "seconds",
    "rows_per_s",
    "peak_rss_mb",
    "projected_100m_min",
)
MEASURES = ("packages/dataprep/src/cloob/dataprep/sources/yfcc15m.py",)
_VOCABULARY = (
    "the a of on in at with and my our old new red blue green sunset beach city street "
    "park dog cat bird tree river lake mountain snow winter summer spring autumn night "
    "light bridge church house garden flower sky cloud sea boat train car festival "
    "wedding party family friends trip holiday vacation museum market castle tower "
    "paris london tokyo new york berlin rome beautiful view from near during after"
)
WORDS = _VOCABULARY.split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _pools(seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    html = '<a href="http://www.flickr.com/photos/{}/">see more</a> <b>{}</b>'
    descs = []
    for i in range(20000):
        d = _text(rng, 5, 90)
        if i % 5 == 0:
            d = html.format(rng.randint(1, 10**8), _text(rng, 1, 4)) + " " + d
        descs.append(quote_plus(d))
    return {
        "title": [quote_plus(_text(rng, 1, 8)) for _ in range(20000)],
        "desc": descs,
        "tags": [
            ",".join(quote_plus(_text(rng, 1, 2)) for _ in range(rng.randint(0, 12)))
            for _ in range(20000)
        ],
    }


def _chunk(args: tuple[int, int, int, str]) -> tuple[int, list[int]]:
    """Write rows [start, start+n) as one bz2 stream; return (uncompressed bytes, photo ids)."""
    start, n, seed, path = args
    rng = random.Random(seed * 7919 + start)
    pools = _pools(seed)
    lines, ids = [], []
    for i in range(start, start + n):
        pid = 2_000_000_000 + i * 97 + rng.randint(0, 96)
        ids.append(pid)
        desc = rng.choice(pools["desc"]) if rng.random() < 0.5 else ""
        geo = (
            (f"{rng.uniform(-180, 180):.6f}", f"{rng.uniform(-90, 90):.6f}", "16")
            if rng.random() < 0.4
            else ("", "", "")
        )
        secret = f"{rng.getrandbits(40):010x}"
        server, farm = rng.randint(1, 9999), rng.randint(1, 9)
        lines.append(
            "\t".join(
                (
                    str(i),
                    str(pid),
                    f"{rng.getrandbits(128):032x}",
                    f"{rng.randint(10**7, 10**8)}@N0{farm}",
                    quote_plus(_text(rng, 1, 2)),
                    "2010-07-12+14%3A33%3A01.0",
                    str(1200000000 + i),
                    "Canon+EOS+400D+Digital" if rng.random() < 0.7 else "",
                    rng.choice(pools["title"]) if rng.random() < 0.9 else "",
                    desc,
                    rng.choice(pools["tags"]),
                    "",
                    *geo,
                    f"http://www.flickr.com/photos/{farm}{pid % 10**8}@N00/{pid}/",
                    f"http://farm{farm}.staticflickr.com/{server}/{pid}_{secret}.jpg",
                    "Attribution-NonCommercial-ShareAlike License",
                    "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                    str(server),
                    str(farm),
                    secret,
                    f"{rng.getrandbits(40):010x}",
                    "jpg",
                    "1" if rng.random() < 0.05 else "0",
                )
            )
        )
    data = ("\n".join(lines) + "\n").encode()
    Path(path).write_bytes(bz2.compress(data, 9))
    return len(data), ids


def generate(n: int, cache: Path, seed: int = 0) -> dict:
    """Metadata (multi-stream bz2, like pbzip2 output) and subset list for `n` rows, cached."""
    folder = cache / f"yfcc-{n}"
    info_file = folder / "info.json"
    if info_file.exists():
        return json.loads(info_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (s, min(CHUNK, n - s), seed, str(folder / f"part-{s:010d}.bz2")) for s in range(0, n, CHUNK)
    ]
    t0 = time.time()
    raw = 0
    subset: list[int] = []
    rng = random.Random(seed)
    with get_context("spawn").Pool(2) as pool:
        for size, ids in pool.imap(_chunk, jobs):
            raw += size
            subset.extend(pid for pid in ids if rng.random() < SUBSET_FRACTION)
    missing = [3_000_000_000 + i for i in range(len(subset) // 200)]  # not in the metadata
    subset_ids = subset + missing
    rng.shuffle(subset_ids)
    meta = folder / "yfcc100m_dataset.bz2"
    with open(meta, "wb") as out:
        for _, _, _, part in jobs:
            out.write(Path(part).read_bytes())
            Path(part).unlink()
    sub = folder / "yfcc100m_subset_data.tsv.bz2"
    sub.write_bytes(
        bz2.compress(
            "".join(f"{i}\t{pid}\t{pid:032x}\n" for i, pid in enumerate(subset_ids)).encode()
        )
    )
    info = {
        "rows": n,
        "subset_rows": len(subset_ids),
        "metadata": str(meta),
        "subset": str(sub),
        "raw_bytes": raw,
        "bz2_bytes": meta.stat().st_size,
        "generate_s": time.time() - t0,
    }
    info_file.write_text(json.dumps(info))
    return info


def measure(info: dict, work: Path) -> dict:
    """Run the list building in a fresh process; wall time and that process's peak RSS."""
    target = work / f"list-{info['rows']}.parquet"
    target.unlink(missing_ok=True)
    code = (
        "import sys, json; from pathlib import Path; "
        "from cloob.dataprep.sources.yfcc15m import build_yfcc_list; "
        "r = build_yfcc_list(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])); "
        "print(json.dumps(r.__dict__))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, info["subset"], info["metadata"], str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(out.stdout.strip().splitlines()[-1])
    target.unlink(missing_ok=True)
    return {
        "metadata_rows": info["rows"],
        "subset_rows": info["subset_rows"],
        "output_rows": report["rows"],
        "bz2_mb": round(info["bz2_bytes"] / 1e6, 1),
        "raw_mb": round(info["raw_bytes"] / 1e6, 1),
        "seconds": round(seconds, 1),
        "rows_per_s": round(info["rows"] / seconds),
        "peak_rss_mb": round(max(peak_kib, before) / 1024),
        "projected_100m_min": round(seconds * 100_000_000 / info["rows"] / 60, 1),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/cloob-bench-cache"))
    started_at = head()
    payload = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = {m["metadata_rows"]: m for m in payload.get("measurements", [])}
    console = Console(width=150)
    for n in args.sizes:
        with console.status(f"generating {n:,} metadata rows"):
            info = generate(n, cache)
        with console.status(f"building the list from {n:,} rows"):
            runs[n] = {
                **measure(info, cache),
                "machine": machine(),
                "provenance": record(None, MEASURES, commit=started_at),
            }
        payload = {
            "benchmark": "yfcc_join",
            "title": TITLE,
            "columns": list(COLUMNS),
            "measurements": [runs[k] for k in sorted(runs)],
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(payload, indent=2) + "\n")
    table = Table(title=TITLE)
    for c in COLUMNS:
        table.add_column(c, justify="right")
    for r in payload["measurements"]:
        table.add_row(*(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in COLUMNS))
    console.print(table)
    console.print(f"written to {OUT}")


if __name__ == "__main__":
    main()
