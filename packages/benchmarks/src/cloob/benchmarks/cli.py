"""The `benchmarks` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cloob.benchmarks.data import registry
from cloob.common.cli import UsageError, make_app, run_app

app = make_app(
    "benchmarks",
    "Fetch the zero-shot datasets of the CLOOB paper and evaluate CLIP/CLOOB checkpoints.",
    "cloob-benchmarks",
)
console = Console(stderr=True)

PRECISION_HELP = "fp32 (reference) | amp | amp_bf16 | pure_bf16 | fp16 | auto."
ROOT = typer.Option(
    Path("data/benchmarks"),
    "--root",
    help="Folder holding one sub-folder per dataset (where `benchmarks fetch` puts them).",
)

# Options every evaluation command shares (typer only reads them when it builds the commands).
CKPT = typer.Option(
    None,
    "--ckpt",
    help="Checkpoint (trainer, CLOOB release or open_clip), a path or s3://bucket/key; repeatable.",
)
MODEL = typer.Option(
    None,
    "--model",
    help="An open_clip model name (with --pretrained); with --ckpt alone, the "
    "architecture of open_clip checkpoints whose run left no params.txt (e.g. RN50-quickgelu).",
)
PRETRAINED = typer.Option(None, "--pretrained", help="open_clip pretrained tag or weights file.")
PRECISION = typer.Option("fp32", "--precision", help=PRECISION_HELP)
BATCH_SIZE = typer.Option(64, "--batch-size", min=1, help="Images (or texts) per forward pass.")
WORKERS = typer.Option(2, "--workers", min=0, help="Data-loader worker processes.")
DEVICE = typer.Option(
    "auto", "--device", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N."
)
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
BOOTSTRAP = typer.Option(
    1000,
    "--bootstrap",
    min=0,
    help="Resamples of the test images for each "
    "number's 95% interval and the paired differences (seeded; 0: off).",
)
# (name, type, typer option): the models come first in --help, the run knobs last.
_MODEL_OPTIONS = (("ckpt", list[str], CKPT), ("model", str, MODEL), ("pretrained", str, PRETRAINED))
_RUN_OPTIONS = (
    ("precision", str, PRECISION),
    ("batch_size", int, BATCH_SIZE),
    ("workers", int, WORKERS),
    ("device", str, DEVICE),
    ("progress", bool, PROGRESS),
    ("bootstrap", int, BOOTSTRAP),
)


@dataclass
class Evaluation:
    """What every evaluation command gets from the shared options: the models to load and the
    run knobs (device and precision resolved), as keyword arguments for an EvalOptions config."""

    ckpt: list[str]
    model: str | None
    pretrained: str | None
    options: dict[str, Any]

    def require_models(self) -> None:
        if not self.ckpt and not self.model:
            raise UsageError(
                "give at least one --ckpt PATH, or --model NAME --pretrained TAG_OR_PATH"
            )

    def load_models(self) -> list:
        """--ckpt files, then --model/--pretrained, with the weights in the run's precision.

        `--ckpt PATH --model NAME` (no --pretrained): NAME is the architecture of the plain
        open_clip
        checkpoints whose run left no params.txt, not a model of its own."""
        from cloob.benchmarks.models.checkpoints import load_checkpoint, load_open_clip

        self.require_models()
        precision = self.options["precision"]
        architecture = self.model if self.pretrained is None else None
        models = [load_checkpoint(p, precision=precision, model=architecture) for p in self.ckpt]
        if self.model and (self.pretrained is not None or not self.ckpt):
            models.append(load_open_clip(self.model, self.pretrained, precision=precision))
        return models


def evaluation_command(
    name: str | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(ev: Evaluation, **own_options)` as a command whose options are the shared model
    and run options around its own (typer builds commands from the signature, so the wrapper gets
    one that lists them all)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "ev"]

        def command(**kwargs: Any) -> None:
            from cloob.common.precision import resolve, resolve_device

            models = {n: kwargs.pop(n) for n, _, _ in _MODEL_OPTIONS}
            run = {n: kwargs.pop(n) for n, _, _ in _RUN_OPTIONS}
            run["device"] = resolve_device(run["device"])
            run["precision"] = resolve(run["precision"], run["device"]).name
            fn(
                Evaluation(models["ckpt"] or [], models["model"], models["pretrained"], run),
                **kwargs,
            )

        shared = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t)
            for n, t, d in (*_MODEL_OPTIONS, *_RUN_OPTIONS)
        ]
        params = [
            *shared[: len(_MODEL_OPTIONS)],
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
            *shared[len(_MODEL_OPTIONS) :],
        ]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {
            **fn.__annotations__,
            **{n: t for n, t, _ in (*_MODEL_OPTIONS, *_RUN_OPTIONS)},
        }
        command.__annotations__.pop("ev", None)
        command.__doc__, command.__name__ = fn.__doc__, fn.__name__
        return app.command(name)(command)

    return register


@app.command("list")
def list_datasets(root: Path = ROOT) -> None:
    """The eight datasets, whether each is present under --root, image and class counts; then where
    each one's linear-probe train split comes from (downloadable, or a local folder to link)."""
    from cloob.benchmarks.data.folders import probe_folder
    from cloob.benchmarks.data.registry import TRAIN_SOURCES

    table = Table(title=f"Zero-shot datasets under {root}")
    for col in ("name", "dataset", "present", "images", "classes", "label rule", "headline"):
        table.add_column(col, justify="right" if col in ("images", "classes") else "left")
    probe = Table(title="Linear-probe train splits")
    for col in ("name", "train split", "source"):
        probe.add_column(col)
    for spec in registry.DATASETS.values():
        source = root / spec.name / "SOURCE.json"
        info = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}
        table.add_row(
            spec.name,
            spec.title,
            "[green]yes[/]" if info else "[dim]no[/]",
            str(info.get("n_images", "")),
            str(info.get("n_classes", spec.n_classes)),
            info.get("label_rule", spec.label_rule),
            spec.headline,
        )
        train = TRAIN_SOURCES[spec.name]
        probe.add_row(
            spec.name,
            _train_split_words(train, probe_folder(root, train.train_from or spec.name)),
            train.note,
        )
    Console().print(table)
    Console().print(probe)


def _train_split_words(source, folder: Path) -> str:
    if (folder / "SOURCE.json").is_file():
        info = json.loads((folder / "SOURCE.json").read_text(encoding="utf-8"))
        return f"[green]yes[/] ({info.get('kind')}, {info.get('n_images')} images)"
    if source.kind == "download":
        return "fetch --linear-probe"
    if source.train_from:
        return f"from {source.train_from}"
    return "[yellow]local folder needed[/] (--train-dir)"


@app.command()
def fetch(
    names: list[str] = typer.Argument(None, help="Dataset names, or 'all' (default)."),
    root: Path = ROOT,
    imagenet: Path = typer.Option(
        None,
        "--imagenet",
        help="ImageNet val: a val/<wnid>/ folder, or the raw "
        "ILSVRC2012_img_val.tar with ILSVRC2012_devkit_t12.tar.gz beside it.",
    ),
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="Mirror serving the archives and metadata files "
        "side by side (env CLOOB_BENCHMARKS_MIRROR).",
    ),
    checksums: Path = typer.Option(
        None,
        "--checksums",
        help="sha256sum-format file of expected checksums; "
        "overrides the pinned ones (env CLOOB_BENCHMARKS_CHECKSUMS).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Download again even if present (still verified)."
    ),
    keep_archives: bool = typer.Option(
        False, "--keep-archives", help="Keep the archives in ROOT/.downloads."
    ),
    linear_probe: bool = typer.Option(
        False,
        "--linear-probe",
        help="Fetch the train splits for linear probing "
        "(official train/val/test of Country211, Flowers102, GTSRB) into "
        "ROOT/<name>-probe/ instead of the zero-shot test sets.",
    ),
    train_dir: Path = typer.Option(
        None,
        "--train-dir",
        help="Link a local train folder (class sub-folders) for "
        "linear probing of ONE dataset (ImageNet train/<wnid>/, Birdsnap, Cars, UCF101).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Download, verify and unpack datasets into ROOT/<name>/ (resumable; SOURCE.json records
    sha256)."""
    from cloob.benchmarks.data.fetch import (
        FetchConfig,
        fetch_dataset,
        fetch_metadata,
        prepare_imagenet,
        read_checksums,
    )

    cfg = FetchConfig(root, base_url, read_checksums(checksums), force, keep_archives, progress)
    specs = registry.select(names)
    explicit = bool(names) and names != ["all"]
    if train_dir is not None or linear_probe:
        _fetch_probe_splits(specs, cfg, train_dir, explicit)
        return
    files = None
    for spec in specs:
        if spec.name == "imagenet":
            if imagenet is not None:
                result = prepare_imagenet(imagenet, cfg)
            elif (root / "imagenet" / "SOURCE.json").is_file():
                console.print("imagenet: present")
                continue
            elif explicit:
                raise UsageError(
                    "ImageNet is not downloadable: pass --imagenet PATH (a val/<wnid>/ folder, "
                    "or the raw val tar + devkit)"
                )
            else:
                console.print("[yellow]imagenet: skipped[/] (pass --imagenet PATH to prepare it)")
                continue
        else:
            needs_metadata = spec.metadata == "cloob" and (
                force or not (root / spec.name / "SOURCE.json").is_file()
            )
            if needs_metadata and files is None:
                files = fetch_metadata(cfg)
            result = fetch_dataset(spec, cfg, files)
        console.print(f"{spec.name}: {result.status}, {result.n_images} images → {result.path}")


def _fetch_probe_splits(
    specs: list[registry.DatasetSpec], cfg, train_dir: Path | None, explicit: bool
) -> None:
    from cloob.benchmarks.data.fetch import fetch_metadata
    from cloob.benchmarks.data.train_splits import OFFICIAL, fetch_probe_splits, link_train_folder

    if train_dir is not None:
        if len(specs) != 1 or not explicit:
            raise UsageError("--train-dir links the train folder of one dataset: name exactly one")
        result = link_train_folder(specs[0], train_dir, cfg)
        console.print(f"{result.name}: {result.status}, {result.n_images} images → {result.path}")
        return
    files = None
    for spec in specs:
        if spec.name not in OFFICIAL and not explicit:
            console.print(
                f"[yellow]{spec.name}: skipped[/] (no downloadable train split; link one with "
                f"benchmarks fetch {spec.name} --root {cfg.root} --train-dir PATH)"
            )
            continue
        if (
            spec.name in OFFICIAL
            and files is None
            and (cfg.force or not (cfg.root / f"{spec.name}-probe" / "SOURCE.json").is_file())
        ):
            files = fetch_metadata(cfg)
        result = fetch_probe_splits(spec, cfg, files)
        console.print(f"{result.name}: {result.status}, {result.n_images} images → {result.path}")


@evaluation_command()
def zeroshot(
    ev: Evaluation,
    datasets: list[str] = typer.Option(
        None, "--datasets", help="Names (comma-separated or repeated) or 'all'."
    ),
    root: Path = ROOT,
    dataset_dir: Path = typer.Option(
        None, "--dataset-dir", help="A custom ImageFolder (or task dir)."
    ),
    classnames: Path = typer.Option(
        None, "--classnames", help="Class names for --dataset-dir, one per line."
    ),
    templates: Path = typer.Option(
        None, "--templates", help="Templates with {} for --dataset-dir, one per line."
    ),
    out: Path = typer.Option(Path("results/zeroshot"), "--out", help="Results folder."),
    compare_paper: str = typer.Option(
        None,
        "--compare-paper",
        help="Add the paper's numbers: cc-rn50, cc-rn50-e128, yfcc-rn50, yfcc-rn101, yfcc-rn50x4.",
    ),
    save_predictions: bool = typer.Option(
        False, "--save-predictions", help="Per-image top-5 parquet files."
    ),
) -> None:
    """CLIP's zero-shot protocol on the datasets; writes results.json/.md/.csv (+ side-by-side,
    PNG)."""
    from cloob.benchmarks.reporting import paper, report
    from cloob.benchmarks.tasks.zeroshot.run import ZeroshotRunConfig, run, tasks_for

    if compare_paper:
        paper.published(compare_paper)  # fail before any work
    ev.require_models()
    tasks = tasks_for(
        datasets,
        root,
        dataset_dir,
        classnames,
        templates,
        warn=lambda msg: console.print(f"[yellow]{msg}[/]"),
    )
    models = ev.load_models()
    cfg = ZeroshotRunConfig(out, save_predictions, compare_paper, **ev.options)
    records = run(models, tasks, cfg, echo=console.print)
    written = report.write_all(records, out, compare_paper)
    _show(records, compare_paper)
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


@evaluation_command("linear-probe")
def linear_probe(
    ev: Evaluation,
    datasets: list[str] = typer.Option(
        None,
        "--datasets",
        help="Names (comma-separated or repeated) or 'all' (those whose train split is present).",
    ),
    root: Path = ROOT,
    train_dir: Path = typer.Option(
        None, "--train-dir", help="A custom ImageFolder train split (with --test-dir)."
    ),
    test_dir: Path = typer.Option(
        None, "--test-dir", help="Its test split: the same class folders."
    ),
    name: str = typer.Option(
        None, "--name", help="Dataset name for --train-dir/--test-dir in the results."
    ),
    features: str = typer.Option(
        "pre-projection",
        "--features",
        help="pre-projection (CLIP's linear probes) or embedding (the joint-space output).",
    ),
    out: Path = typer.Option(Path("results/linear-probe"), "--out", help="Results folder."),
    compare_paper: str = typer.Option(
        None, "--compare-paper", help="Add the paper's numbers: yfcc-rn50-linear."
    ),
    val_fraction: float = typer.Option(
        0.2,
        "--val-fraction",
        min=0.01,
        max=0.9,
        help="Share of each class carved from train for λ selection "
        "(datasets with their own validation split use it instead).",
    ),
    max_iter: int = typer.Option(1000, "--max-iter", min=1, help="L-BFGS iterations per fit."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation carve."),
    feature_cache: Path = typer.Option(
        None, "--feature-cache", help="Feature cache folder (default OUT/.features)."
    ),
) -> None:
    """CLIP's linear-probe protocol on frozen image features; writes results.json/.md/.csv."""
    from cloob.benchmarks.data.probe_data import probes_for
    from cloob.benchmarks.models.features import FEATURE_KINDS
    from cloob.benchmarks.reporting import paper, report
    from cloob.benchmarks.tasks.linear_probe.protocol import ProbeConfig
    from cloob.benchmarks.tasks.linear_probe.run import ProbeRunConfig, run

    if features not in FEATURE_KINDS:
        raise UsageError(
            f"unknown feature kind {features!r}; choose from {', '.join(FEATURE_KINDS)}"
        )
    if compare_paper:
        paper.published(compare_paper)  # fail before any work
    ev.require_models()
    probes = probes_for(datasets, root, train_dir, test_dir, name)
    models = ev.load_models()
    cfg = ProbeRunConfig(
        out, features, feature_cache, ProbeConfig(max_iter, val_fraction, seed), **ev.options
    )
    records = run(
        models, probes, cfg, echo=lambda line: console.print(line, soft_wrap=True)
    )  # one line each
    written = report.write_all(records, out, compare_paper)
    _show(records, compare_paper, "Linear-probe accuracy (%) — headline in bold")
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


RETRIEVAL_COLUMNS = {
    "i2t_r1": "image→text R@1",
    "i2t_r5": "R@5",
    "i2t_r10": "R@10",
    "t2i_r1": "text→image R@1",
    "t2i_r5": "R@5",
    "t2i_r10": "R@10",
    "mean_recall": "mean",
}


@evaluation_command()
def retrieval(
    ev: Evaluation,
    data: list[Path] = typer.Option(
        None,
        "--data",
        help="A dataprep output folder, a folder of .tar shards, or "
        "shard files (repeatable); one caption per image.",
    ),
    karpathy: Path = typer.Option(
        None,
        "--karpathy",
        help="Karpathy-split JSON (dataset_coco.json, "
        "dataset_flickr30k.json): several captions per image.",
    ),
    images: Path = typer.Option(
        None, "--images", help="The image folder the Karpathy JSON's filenames are in."
    ),
    split: str = typer.Option("test", "--split", help="Karpathy split to evaluate."),
    name: str = typer.Option(None, "--name", help="Dataset name in the results."),
    out: Path = typer.Option(Path("results/retrieval"), "--out", help="Results folder."),
) -> None:
    """Image→text and text→image Recall@1/5/10; writes results.json/.md/.csv."""
    from cloob.benchmarks.data.pairs import resolve_pairs
    from cloob.benchmarks.reporting import report
    from cloob.benchmarks.tasks.retrieval import RetrievalConfig, run

    ev.require_models()
    pairs = resolve_pairs(data, karpathy, images, split, name)
    models = ev.load_models()
    cfg = RetrievalConfig(**ev.options)
    records = run(models, pairs, cfg, echo=console.print)
    written = report.write_records(
        records, out, "Image–text retrieval (Recall@K, %)", RETRIEVAL_COLUMNS
    )
    _show_columns(records, "Retrieval recall (%)", RETRIEVAL_COLUMNS)
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


@evaluation_command()
def analyze(
    ev: Evaluation,
    data: list[Path] = typer.Option(
        None,
        "--data",
        help="A dataprep output folder, a folder of .tar shards, or shard files (repeatable).",
    ),
    karpathy: Path = typer.Option(
        None, "--karpathy", help="Karpathy-split JSON (first caption of each image)."
    ),
    images: Path = typer.Option(
        None, "--images", help="The image folder the Karpathy JSON's filenames are in."
    ),
    split: str = typer.Option("test", "--split", help="Karpathy split to use."),
    name: str = typer.Option(None, "--name", help="Dataset name in the results."),
    max_images: int = typer.Option(
        2000, "--max-images", min=3, help="Seeded subsample (pairwise terms grow as N²)."
    ),
    projection: str = typer.Option(
        "pca", "--projection", help="pca, or umap (needs umap-learn installed)."
    ),
    out: Path = typer.Option(Path("results/analyze"), "--out", help="Results folder."),
) -> None:
    """Alignment, uniformity, modality gap, eigen-spectra/effective rank, positive vs
    hardest-negative
    cosine; writes analysis.json, results.json/.md/.csv, spectra.png and projection.png."""
    from cloob.benchmarks.data.pairs import resolve_pairs
    from cloob.benchmarks.tasks import analyze as geometry

    geometry.check_projection(projection)  # fail before any work
    ev.require_models()
    pairs = resolve_pairs(data, karpathy, images, split, name)
    models = ev.load_models()
    cfg = geometry.AnalyzeConfig(out, max_images, 0, projection, **ev.options)
    records = geometry.run(models, pairs, cfg, echo=console.print)
    written = geometry.write(records, out)
    _show_columns(records, "Embedding geometry", geometry.COLUMNS, scale=1.0)
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


def _show_columns(
    records: list[dict], title: str, columns: dict[str, str], scale: float = 100.0
) -> None:
    table = Table(title=title)
    for col in ("checkpoint", "dataset", *columns.values()):
        table.add_column(col, justify="left" if col in ("checkpoint", "dataset") else "right")
    for r in records:
        table.add_row(
            r["label"],
            r["dataset"],
            *(
                f"{scale * r['metrics'][k]:.2f}" if scale != 1.0 else f"{r['metrics'][k]:.3f}"
                for k in columns
            ),
        )
    Console().print(table)


def _show(
    records: list[dict],
    compare: str | None,
    title: str = "Zero-shot accuracy (%) — headline in bold",
) -> None:
    from cloob.benchmarks.reporting import report

    table = Table(title=title)
    for col in ("checkpoint", "dataset", "images", "skipped", "top-1", "top-5", "mean-per-class"):
        table.add_column(col, justify="left" if col in ("checkpoint", "dataset") else "right")
    for r in records:
        cells = [
            f"[bold]{100 * r['metrics'][m]:.2f}[/]{report.unconverged(r)}"
            if m == r["headline"]
            else f"{100 * r['metrics'][m]:.2f}"
            for m in report.METRICS
        ]
        table.add_row(
            r["label"], r["dataset"], str(r["n_images"]), str(r.get("n_skipped", 0)), *cells
        )
    Console().print(table)
    if any(report.unconverged(r) for r in records):
        Console().print(report.UNCONVERGED_NOTE)
    if len({r["label"] for r in records}) > 1 or compare:
        side = report.side_by_side(records, compare)
        grid = Table(title="Side by side (headline %)")
        grid.add_column("dataset")
        for col in side.columns:
            grid.add_column(str(col), justify="right")
        for name, row in side.iterrows():
            grid.add_row(str(name), *("" if v != v else f"{v:.2f}" for v in row))
        Console().print(grid)


def main() -> None:
    run_app(app)
