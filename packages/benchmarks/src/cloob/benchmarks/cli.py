"""The `benchmarks` command line: option groups declared once, commands that call the library."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cloob.benchmarks.models.choice import ModelChoice
from cloob.benchmarks.options import MAX_BOOT, EvalOptions
from cloob.common.cli import Options, arg, make_app, opt, run_app

app = make_app(
    "benchmarks",
    "Fetch the zero-shot datasets of the CLOOB paper and evaluate CLIP/CLOOB checkpoints.",
    "cloob-benchmarks",
)
console = Console(stderr=True)

ROOT = opt(
    "Folder holding one sub-folder per dataset (where `benchmarks fetch` puts them).",
    default=Path("data/benchmarks"),
    place="local",
)
# What every evaluation command takes: the models first in --help, the run knobs last.
MODELS = Options(
    None,
    ModelChoice,
    ckpt=opt(
        "Checkpoint (trainer, CLOOB release or open_clip), a path or s3://bucket/key; repeatable.",
        default=None,
        place="storage",
    ),
    model=opt(
        "An open_clip model name (with --pretrained); with --ckpt alone, the architecture of "
        "open_clip checkpoints whose run left no params.txt (e.g. RN50-quickgelu)."
    ),
    pretrained=opt("open_clip pretrained tag or weights file."),
)
RUN = Options(
    None,
    EvalOptions,
    precision=opt("fp32 (reference) | amp | amp_bf16 | pure_bf16 | fp16 | auto."),
    batch_size=opt("Images (or texts) per forward pass.", min=1),
    workers=opt("Data-loader worker processes.", min=0),
    device=opt("auto (cuda if available, else cpu), cpu, cuda or cuda:N.", default="auto"),
    progress=opt("Show progress bars.", "--progress/--no-progress"),
    bootstrap=opt(
        "Resamples of the test images for each number's 95% interval and the paired differences "
        "(seeded; 0: off).",
        min=0,
        max=MAX_BOOT,
    ),
)
FETCH = Options(
    names=arg("Dataset names, or 'all' (default).", default=None),
    root=ROOT,
    imagenet=opt(
        "ImageNet val: a val/<wnid>/ folder, or the raw ILSVRC2012_img_val.tar with "
        "ILSVRC2012_devkit_t12.tar.gz beside it.",
        default=None,
        place="local",
    ),
    base_url=opt(
        "Mirror serving the archives and metadata files side by side (env "
        "CLOOB_BENCHMARKS_MIRROR).",
        default=None,
    ),
    checksums=opt(
        "sha256sum-format file of expected checksums; overrides the pinned ones (env "
        "CLOOB_BENCHMARKS_CHECKSUMS).",
        default=None,
        place="local",
    ),
    force=opt("Download again even if present (still verified).", default=False),
    keep_archives=opt("Keep the archives in ROOT/.downloads.", default=False),
    linear_probe=opt(
        "Fetch the train splits for linear probing (official train/val/test of Country211, "
        "Flowers102, GTSRB) into ROOT/<name>-probe/ instead of the zero-shot test sets.",
        default=False,
    ),
    train_dir=opt(
        "Link a local train folder (class sub-folders) for linear probing of ONE dataset "
        "(ImageNet train/<wnid>/, Birdsnap, Cars, UCF101).",
        default=None,
        place="local",
    ),
    progress=opt("Show progress bars.", "--progress/--no-progress", default=True),
)
ZEROSHOT = Options(
    datasets=opt("Names (comma-separated or repeated) or 'all'.", default=None),
    root=ROOT,
    dataset_dir=opt("A custom ImageFolder (or task dir).", default=None, place="local"),
    classnames=opt("Class names for --dataset-dir, one per line.", default=None, place="local"),
    templates=opt(
        "Templates with {} for --dataset-dir, one per line.", default=None, place="local"
    ),
    out=opt("Results folder.", default=Path("results/zeroshot"), place="local"),
    compare_paper=opt(
        "Add the paper's numbers: cc-rn50, cc-rn50-e128, yfcc-rn50, yfcc-rn101, yfcc-rn50x4.",
        default=None,
    ),
    save_predictions=opt("Per-image top-5 parquet files.", default=False),
)
PROBE = Options(
    datasets=opt(
        "Names (comma-separated or repeated) or 'all' (those whose train split is present).",
        default=None,
    ),
    root=ROOT,
    train_dir=opt(
        "A custom ImageFolder train split (with --test-dir).", default=None, place="local"
    ),
    test_dir=opt("Its test split: the same class folders.", default=None, place="local"),
    name=opt("Dataset name for --train-dir/--test-dir in the results.", default=None),
    features=opt(
        "pre-projection (CLIP's linear probes) or embedding (the joint-space output).",
        default="pre-projection",
    ),
    out=opt("Results folder.", default=Path("results/linear-probe"), place="local"),
    compare_paper=opt("Add the paper's numbers: yfcc-rn50-linear.", default=None),
    val_fraction=opt(
        "Share of each class carved from train for λ selection (datasets with their own "
        "validation split use it instead).",
        default=0.2,
        min=0.01,
        max=0.9,
    ),
    max_iter=opt("L-BFGS iterations per fit.", default=1000, min=1),
    seed=opt("Seed of the validation carve.", default=0),
    feature_cache=opt("Feature cache folder (default OUT/.features).", default=None, place="local"),
)
IMAGES = opt("The image folder the Karpathy JSON's filenames are in.", default=None, place="local")
PAIRS_NAME = opt("Dataset name in the results.", default=None)
RETRIEVAL = Options(
    data=opt(
        "A dataprep output folder, a folder of .tar shards, or shard files (repeatable); one "
        "caption per image.",
        default=None,
        place="local",
    ),
    karpathy=opt(
        "Karpathy-split JSON (dataset_coco.json, dataset_flickr30k.json): several captions per "
        "image.",
        default=None,
        place="local",
    ),
    images=IMAGES,
    split=opt("Karpathy split to evaluate.", default="test"),
    name=PAIRS_NAME,
    out=opt("Results folder.", default=Path("results/retrieval"), place="local"),
)
ANALYZE = Options(
    data=opt(
        "A dataprep output folder, a folder of .tar shards, or shard files (repeatable).",
        default=None,
        place="local",
    ),
    karpathy=opt("Karpathy-split JSON (first caption of each image).", default=None, place="local"),
    images=IMAGES,
    split=opt("Karpathy split to use.", default="test"),
    name=PAIRS_NAME,
    max_images=opt("Seeded subsample (pairwise terms grow as N²).", default=2000, min=3),
    projection=opt("pca, or umap (needs umap-learn installed).", default="pca"),
    out=opt("Results folder.", default=Path("results/analyze"), place="local"),
)
LIST = Options(root=ROOT)

RETRIEVAL_COLUMNS = {
    "i2t_r1": "image→text R@1",
    "i2t_r5": "R@5",
    "i2t_r10": "R@10",
    "t2i_r1": "text→image R@1",
    "t2i_r5": "R@5",
    "t2i_r10": "R@10",
    "mean_recall": "mean",
}


@app.command("list")
def list_datasets(root: Path = LIST.root) -> None:
    """The eight datasets, whether each is present under --root, image and class counts; then where
    each one's linear-probe train split comes from (downloadable, or a local folder to link)."""
    from cloob.benchmarks.data import inventory
    from cloob.benchmarks.reporting.console import show_table

    numbers = ("images", "classes")
    show_table(
        f"Zero-shot datasets under {root}",
        inventory.TEST_SET_COLUMNS,
        inventory.test_sets(root),
        numbers,
    )
    show_table(
        "Linear-probe train splits", inventory.TRAIN_SPLIT_COLUMNS, inventory.train_splits(root)
    )


@app.command()
def fetch(
    names: list[str] | None = FETCH.names,
    root: Path = FETCH.root,
    imagenet: Path | None = FETCH.imagenet,
    base_url: str | None = FETCH.base_url,
    checksums: Path | None = FETCH.checksums,
    force: bool = FETCH.force,
    keep_archives: bool = FETCH.keep_archives,
    linear_probe: bool = FETCH.linear_probe,
    train_dir: Path | None = FETCH.train_dir,
    progress: bool = FETCH.progress,
) -> None:
    """Download, verify and unpack datasets into ROOT/<name>/ (resumable; SOURCE.json records
    sha256)."""
    from cloob.benchmarks.data.fetch import FetchConfig, fetch_test_sets, read_checksums
    from cloob.benchmarks.data.train_splits import fetch_train_splits

    cfg = FetchConfig(root, base_url, read_checksums(checksums), force, keep_archives, progress)
    if linear_probe or train_dir is not None:
        fetch_train_splits(names, cfg, train_dir, say=console.print)
    else:
        fetch_test_sets(names, cfg, imagenet, say=console.print)


@app.command()
def zeroshot(
    ckpt: list[str] | None = MODELS.ckpt,
    model: str | None = MODELS.model,
    pretrained: str | None = MODELS.pretrained,
    datasets: list[str] | None = ZEROSHOT.datasets,
    root: Path = ZEROSHOT.root,
    dataset_dir: Path | None = ZEROSHOT.dataset_dir,
    classnames: Path | None = ZEROSHOT.classnames,
    templates: Path | None = ZEROSHOT.templates,
    out: Path = ZEROSHOT.out,
    compare_paper: str | None = ZEROSHOT.compare_paper,
    save_predictions: bool = ZEROSHOT.save_predictions,
    precision: str = RUN.precision,
    batch_size: int = RUN.batch_size,
    workers: int = RUN.workers,
    device: str = RUN.device,
    progress: bool = RUN.progress,
    bootstrap: int = RUN.bootstrap,
) -> None:
    """CLIP's zero-shot protocol on the datasets; writes results.json/.md/.csv (+ side-by-side,
    PNG)."""
    from cloob.benchmarks.reporting import paper, report
    from cloob.benchmarks.reporting.console import show_accuracy
    from cloob.benchmarks.tasks.zeroshot.run import ZeroshotRunConfig, run, tasks_for

    args = locals()
    cfg = ZeroshotRunConfig(out, save_predictions, compare_paper, **RUN.build(args).resolved())
    if compare_paper:
        paper.published(compare_paper)  # fail before any work
    models = MODELS.build(args)
    models.require()
    tasks = tasks_for(datasets, root, dataset_dir, classnames, templates, warn=_warn)
    records = run(models.load(cfg.precision), tasks, cfg, echo=console.print)
    written = report.write_all(records, out, compare_paper)
    show_accuracy(records, compare_paper)
    _wrote(written)


@app.command("linear-probe")
def linear_probe(
    ckpt: list[str] | None = MODELS.ckpt,
    model: str | None = MODELS.model,
    pretrained: str | None = MODELS.pretrained,
    datasets: list[str] | None = PROBE.datasets,
    root: Path = PROBE.root,
    train_dir: Path | None = PROBE.train_dir,
    test_dir: Path | None = PROBE.test_dir,
    name: str | None = PROBE.name,
    features: str = PROBE.features,
    out: Path = PROBE.out,
    compare_paper: str | None = PROBE.compare_paper,
    val_fraction: float = PROBE.val_fraction,
    max_iter: int = PROBE.max_iter,
    seed: int = PROBE.seed,
    feature_cache: Path | None = PROBE.feature_cache,
    precision: str = RUN.precision,
    batch_size: int = RUN.batch_size,
    workers: int = RUN.workers,
    device: str = RUN.device,
    progress: bool = RUN.progress,
    bootstrap: int = RUN.bootstrap,
) -> None:
    """CLIP's linear-probe protocol on frozen image features; writes results.json/.md/.csv."""
    from cloob.benchmarks.data.probe_data import probes_for
    from cloob.benchmarks.models.features import check_feature_kind
    from cloob.benchmarks.reporting import paper, report
    from cloob.benchmarks.reporting.console import show_accuracy
    from cloob.benchmarks.tasks.linear_probe.protocol import ProbeConfig
    from cloob.benchmarks.tasks.linear_probe.run import ProbeRunConfig, run

    args = locals()
    probe = ProbeConfig(max_iter, val_fraction, seed)
    options = RUN.build(args).resolved()
    cfg = ProbeRunConfig(out, features, feature_cache, probe, **options)
    check_feature_kind(features)
    if compare_paper:
        paper.published(compare_paper)  # fail before any work
    models = MODELS.build(args)
    models.require()
    probes = probes_for(datasets, root, train_dir, test_dir, name)
    records = run(models.load(cfg.precision), probes, cfg, echo=_say_one_line)
    written = report.write_all(records, out, compare_paper)
    show_accuracy(records, compare_paper, "Linear-probe accuracy (%) — headline in bold")
    _wrote(written)


@app.command()
def retrieval(
    ckpt: list[str] | None = MODELS.ckpt,
    model: str | None = MODELS.model,
    pretrained: str | None = MODELS.pretrained,
    data: list[Path] | None = RETRIEVAL.data,
    karpathy: Path | None = RETRIEVAL.karpathy,
    images: Path | None = RETRIEVAL.images,
    split: str = RETRIEVAL.split,
    name: str | None = RETRIEVAL.name,
    out: Path = RETRIEVAL.out,
    precision: str = RUN.precision,
    batch_size: int = RUN.batch_size,
    workers: int = RUN.workers,
    device: str = RUN.device,
    progress: bool = RUN.progress,
    bootstrap: int = RUN.bootstrap,
) -> None:
    """Image→text and text→image Recall@1/5/10; writes results.json/.md/.csv."""
    from cloob.benchmarks.data.pairs import resolve_pairs
    from cloob.benchmarks.reporting import report
    from cloob.benchmarks.reporting.console import show_columns
    from cloob.benchmarks.tasks.retrieval import RetrievalConfig, run

    args = locals()
    cfg = RetrievalConfig(**RUN.build(args).resolved())
    models = MODELS.build(args)
    models.require()
    pairs = resolve_pairs(data, karpathy, images, split, name)
    records = run(models.load(cfg.precision), pairs, cfg, echo=console.print)
    title = "Image–text retrieval (Recall@K, %)"
    written = report.write_records(records, out, title, RETRIEVAL_COLUMNS)
    show_columns(records, "Retrieval recall (%)", RETRIEVAL_COLUMNS)
    _wrote(written)


@app.command()
def analyze(
    ckpt: list[str] | None = MODELS.ckpt,
    model: str | None = MODELS.model,
    pretrained: str | None = MODELS.pretrained,
    data: list[Path] | None = ANALYZE.data,
    karpathy: Path | None = ANALYZE.karpathy,
    images: Path | None = ANALYZE.images,
    split: str = ANALYZE.split,
    name: str | None = ANALYZE.name,
    max_images: int = ANALYZE.max_images,
    projection: str = ANALYZE.projection,
    out: Path = ANALYZE.out,
    precision: str = RUN.precision,
    batch_size: int = RUN.batch_size,
    workers: int = RUN.workers,
    device: str = RUN.device,
    progress: bool = RUN.progress,
    bootstrap: int = RUN.bootstrap,
) -> None:
    """Alignment, uniformity, modality gap, eigen-spectra/effective rank, positive vs
    hardest-negative
    cosine; writes analysis.json, results.json/.md/.csv, spectra.png and projection.png."""
    from cloob.benchmarks.data.pairs import resolve_pairs
    from cloob.benchmarks.reporting.console import show_columns
    from cloob.benchmarks.tasks import analyze as geometry

    args = locals()
    cfg = geometry.AnalyzeConfig(out, max_images, 0, projection, **RUN.build(args).resolved())
    geometry.check_projection(projection)  # fail before any work
    models = MODELS.build(args)
    models.require()
    pairs = resolve_pairs(data, karpathy, images, split, name)
    records = geometry.run(models.load(cfg.precision), pairs, cfg, echo=console.print)
    written = geometry.write(records, out)
    show_columns(records, "Embedding geometry", geometry.COLUMNS, scale=1.0)
    _wrote(written)


def _warn(message: str) -> None:
    console.print(f"[yellow]{message}[/]")


def _say_one_line(line: str) -> None:
    console.print(line, soft_wrap=True)


def _wrote(written: dict[str, Path]) -> None:
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


def main() -> None:
    run_app(app)
