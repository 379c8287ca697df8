"""The demo dataset: seeded shape scenes written exactly like a real fetch, plus zero-shot tasks.

Shards follow img2dataset's webdataset layout (`{key}.jpg`, `{key}.txt`, `{key}.json`, per-shard
parquet and `_stats.json`), so the manifest, sizes.json, verify and the trainer all run on it for
real. Training scenes never use the held-out (shape, colour) pairs; the benchmark images use only
those, so zero-shot accuracy on them measures transfer rather than recall.

Written with tarfile (not webdataset's TarWriter): importing webdataset imports torch, and
dataprep must stay torch-free. Each shard and each task draws from its own seeded generator, so
they are written by a pool of processes, one per core, and the bytes do not depend on how many.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import shutil
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cloob.common import storage
from cloob.common.cli import UsageError
from cloob.common.files import write_json
from cloob.dataprep.layout import Layout
from cloob.dataprep.synthetic import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    describe,
    held_out_pairs,
    random_scene,
    render,
    scene_with,
)

SAMPLES_PER_SHARD = 1000  # 20 shards for 20k samples: enough for several ranks × workers
FORMAT_VERSION = 2  # 2: a third task, backgrounds
TEMPLATES = {
    "shapes": (
        "a photo of a {} shape.",
        "a {} object.",
        "a drawing of a {}.",
        "a picture of a {}.",
        "an image showing a {}.",
        "a {} on a background.",
    ),
    "colours": (
        "a photo of a {} shape.",
        "a {} object.",
        "something coloured {}.",
        "a picture of a {} thing.",
        "an image showing something {}.",
        "a drawing of a {} shape.",
    ),
    "backgrounds": (
        "a {} background.",
        "a shape on a {} background.",
        "something over {}.",
        "a picture with a {} background.",
        "an image on a plain {} background.",
    ),
}


@dataclass(frozen=True)
class BenchmarkTask:
    images_dir: Path  # ImageFolder root: one folder per class name
    classnames_file: Path  # one class per line, sorted-folder order (== label order)
    templates_file: Path  # one prompt template per line, with `{}`


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    shards_dir: Path
    sizes_json: Path
    tasks: dict[str, BenchmarkTask]
    manifest: Path
    samples: int


def build_demo_folder(
    out: str, samples: int, seed: int = 0, image_size: int = 64, per_class: int = 50
) -> DemoDataset:
    """`dataprep fetch demo --out OUT`: the checks a user's values need, then `build_demo`."""
    if "://" in out:
        storage.location(out)  # names what is wrong with the URL itself first
        raise UsageError(f"{out}: fetch demo writes a local folder; build it there, then copy it")
    if min(samples, image_size, per_class) < 1:
        raise UsageError("--samples, --image-size and --per-class must be at least 1")
    return build_demo(
        Path(out).expanduser(),
        samples=samples,
        seed=seed,
        image_size=image_size,
        per_class=per_class,
    )


def build_demo(
    out: Path,
    samples: int = 20000,
    seed: int = 0,
    image_size: int = 64,
    per_class: int = 50,
    processes: int | None = None,
) -> DemoDataset:
    """Build (or reuse) the demo dataset in `out`; idempotent and safe against kills.

    `processes` write shards and tasks at once (default: one per core this process may use); the
    output is the same for any number. They are spawned: a script that calls this needs the
    `if __name__ == "__main__":` guard, as for any spawned pool.

    A complete build with the same options is reused. Otherwise everything is written to a temp
    directory beside `out` and renamed into place, so a half-built directory is never taken for
    a finished one. An existing demo build with other options is replaced; any other non-empty
    directory is refused."""
    out = Path(out)
    options = {
        "samples": samples,
        "seed": seed,
        "image_size": image_size,
        "per_class": per_class,
        "version": FORMAT_VERSION,
    }
    marker = out / "demo.json"
    if marker.exists() and _read_json(marker) == options:
        return _dataset(out, samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several ranks may call this at once: one builds, the others wait and then reuse its build.
    with open(out.with_name(f".{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and _read_json(marker) == options:
            return _dataset(out, samples)
        _build(out, options, processes or len(os.sched_getaffinity(0)))
    return _dataset(out, samples)


def _build(out: Path, options: dict, processes: int) -> None:
    samples, seed, image_size = options["samples"], options["seed"], options["image_size"]
    if out.exists() and any(out.iterdir()) and not (out / "demo.json").exists():
        raise UsageError(f"{out} exists and is not a demo dataset: use a new or empty directory")
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # killed builds; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    started = datetime.now()
    shards = Layout(tmp).shards
    assert isinstance(shards, Path)  # the demo is built locally, then renamed into place
    shards.mkdir(parents=True)
    jobs: list[tuple[Callable[..., None], tuple]] = [
        (_write_shard, (shards, shard, rows, seed, image_size))
        for shard, rows in enumerate(_shard_rows(samples))
    ]
    jobs += [
        (_write_task, (tmp / "benchmark" / task, task, seed, image_size, options["per_class"]))
        for task in TEMPLATES
    ]
    _run_all(jobs, processes)
    _finish(Layout(tmp), options, started)
    write_json(tmp / "demo.json", options)  # last: marks the build complete
    _swap_in(tmp, out)


def _dataset(out: Path, samples: int) -> DemoDataset:
    layout = Layout(out)
    tasks = {
        task: BenchmarkTask(
            out / "benchmark" / task / "images",
            out / "benchmark" / task / "classnames.txt",
            out / "benchmark" / task / "templates.txt",
        )
        for task in TEMPLATES
    }
    shards, sizes = layout.shards, layout.sizes_json
    assert isinstance(shards, Path) and isinstance(sizes, Path)  # Layout(out) is a local folder
    return DemoDataset(out, shards, sizes, tasks, layout.manifest, samples)


def _shard_rows(samples: int) -> list[range]:
    """The sample indices of each shard, SAMPLES_PER_SHARD to a shard."""
    return [
        range(first, min(samples, first + SAMPLES_PER_SHARD))
        for first in range(0, samples, SAMPLES_PER_SHARD)
    ]


def _run_all(jobs: list[tuple[Callable[..., None], tuple]], processes: int) -> None:
    """Run every `(function, args)`, in `processes` processes when more than one. Spawned, not
    forked: the caller may be the trainer, with torch's threads running, and a forked child of a
    threaded process can hang on a lock one of those threads held."""
    workers = min(processes, len(jobs))
    if workers <= 1:
        for function, args in jobs:
            function(*args)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for done in [pool.submit(function, *args) for function, args in jobs]:
            done.result()  # a worker's exception is raised here


def _write_shard(shards: Path, shard: int, rows: range, seed: int, image_size: int) -> None:
    """One shard in img2dataset's layout: tar, parquet (one row per sample), stats last."""
    start = time.time()
    rng = random.Random(f"demo-{seed}-{shard}")
    name = f"{shard:05d}"
    oom = math.ceil(math.log10(SAMPLES_PER_SHARD))
    metas = []
    with tarfile.open(shards / f"{name}.tar", "w") as tar:
        for i, index in enumerate(rows):
            key = f"{shard * 10**oom + i:0{oom + 5}d}"  # img2dataset's key: a position, no dots
            scene = random_scene(rng, held_out=False)
            caption = describe(scene, rng)
            buf = io.BytesIO()
            render(scene, rng, image_size).save(buf, format="JPEG", quality=95)
            image = buf.getvalue()
            meta = {
                "url": f"demo://{index}",
                "caption": caption,
                "source_id": index,
                "shape": scene.shape,
                "colour": scene.colour,
                "key": key,
                "status": "success",
                "error_message": None,
                "width": image_size,
                "height": image_size,
                "original_width": image_size,
                "original_height": image_size,
                "exif": None,
                "sha256": hashlib.sha256(image).hexdigest(),
            }
            for ext, data in (
                ("jpg", image),
                ("txt", caption.encode()),
                ("json", json.dumps(meta, indent=4).encode()),
            ):
                member = tarfile.TarInfo(f"{key}.{ext}")
                member.size, member.mode = len(data), 0o444
                tar.addfile(member, io.BytesIO(data))
            metas.append(meta)
    pq.write_table(pa.Table.from_pylist(metas), shards / f"{name}.parquet")
    n = len(metas)
    write_json(
        shards / f"{name}_stats.json",
        {
            "count": n,
            "successes": n,
            "failed_to_download": 0,
            "failed_to_resize": 0,
            "duration": time.time() - start,
            "start_time": start,
            "end_time": time.time(),
            "status_dict": {"success": n},
        },
    )


def _write_task(root: Path, task: str, seed: int, image_size: int, per_class: int) -> None:
    """ImageFolder of held-out (shape, colour) pairs only; class = shape, colour or background.
    Folder names have `_` for spaces ("pale_blue"); classnames.txt has the words, in folder
    order."""
    rng = random.Random(f"benchmark-{task}-{seed}")
    pairs = sorted(held_out_pairs())
    attribute = {"shapes": 0, "colours": 1}.get(task)  # position in a (shape, colour) pair
    classes = sorted(
        {"shapes": SHAPES, "colours": COLOURS, "backgrounds": BACKGROUNDS}[task], key=_folder
    )
    for cls in classes:
        # shapes/colours: the held-out pairs of this class; backgrounds: all of them
        options = pairs if attribute is None else [p for p in pairs if p[attribute] == cls]
        folder = root / "images" / _folder(cls)
        folder.mkdir(parents=True)
        for n in range(per_class):
            scene = scene_with(rng, *options[n % len(options)])
            if task == "backgrounds":
                scene = replace(scene, background=cls)
            render(scene, rng, image_size).save(folder / f"{n}.png", format="PNG")
    (root / "classnames.txt").write_text("".join(f"{c}\n" for c in classes))
    (root / "templates.txt").write_text("".join(f"{t}\n" for t in TEMPLATES[task]))


def _folder(name: str) -> str:
    return name.replace(" ", "_")


def _finish(layout: Layout, options: dict, started: datetime) -> None:
    from cloob.dataprep.manifest import build_manifest, record_run
    from cloob.dataprep.shards import write_sizes

    sizes = write_sizes(layout)
    n = sum(sizes.values())
    record_run(layout, "fetch demo", options, started, {"rows": n, "success": n, "failed": 0})
    build_manifest(layout)


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
