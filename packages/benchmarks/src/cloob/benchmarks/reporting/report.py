"""Results as JSON (one record per checkpoint × dataset), CSV, Markdown, a side-by-side table and a
PNG."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import pandas as pd

from cloob.benchmarks.reporting import paper, stats
from cloob.benchmarks.reporting.clip_benchmark_export import write_clip_benchmark

if TYPE_CHECKING:  # reporting stays below the options (which take a default from stats)
    from cloob.benchmarks.options import EvalOptions
from cloob.common.cli import package_version
from cloob.common.files import atomic_open, atomic_path, write_json

METRICS = ("acc1", "acc5", "mean_per_class_recall")
METRIC_TITLES = {"acc1": "top-1", "acc5": "top-5", "mean_per_class_recall": "mean-per-class"}
TITLES = {"zeroshot": "Zero-shot", "linear_probe": "Linear-probe"}  # record["task"] → words


UNCONVERGED = "†"  # marks a linear-probe number whose final fit stopped at --max-iter
UNCONVERGED_NOTE = (
    "† the final L-BFGS fit stopped at --max-iter before converging: this number can move "
    "with tiny feature changes (raise --max-iter; results.json `converged`)"
)


def unconverged(record: Mapping[str, Any]) -> str:
    """The mark for a record whose linear-probe fit did not converge, else ""."""
    return UNCONVERGED if record.get("converged") is False else ""


def _title(records: Sequence[Mapping[str, Any]]) -> str:
    return TITLES[records[0].get("task", "zeroshot")] if records else TITLES["zeroshot"]


def accuracy_line(record: Mapping[str, Any], details: str) -> str:
    """The one progress line per (checkpoint, dataset) of zero-shot and linear-probe runs."""
    m = record["metrics"]
    return (
        f"{record['label']} · {record['dataset']}: top-1 {100 * m['acc1']:.2f}  "
        f"top-5 {100 * m['acc5']:.2f}  mean-per-class {100 * m['mean_per_class_recall']:.2f}  "
        f"({details})"
    )


def software_versions() -> dict[str, str]:
    import open_clip
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "cloob-benchmarks": package_version("cloob-benchmarks"),
    }


class BaseRecord(TypedDict):
    """The fields every results record starts with (`base_record`); one TypedDict per evaluation
    below adds its own. The JSON files hold exactly these keys."""

    task: NotRequired[str]  # the evaluation: linear_probe, retrieval, analyze; absent: zero-shot
    label: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    checkpoint_format: str
    model: str
    method: str | None
    checkpoint_info: dict[str, Any]
    dataset: str
    precision: str
    device: str
    software: dict[str, str]
    # `stats.attach_intervals` (95% intervals, how they were drawn) where an evaluation has them
    intervals: NotRequired[dict[str, Any]]
    bootstrap: NotRequired[dict[str, Any]]
    # `stats.ITEMS`: the per-image items for the paired tests, taken out before the file is written
    _items: NotRequired[Any]


class ZeroshotRecord(BaseRecord):
    dataset_root: str
    n_images: int
    n_skipped: int
    n_classes: int
    metrics: dict[str, float]  # METRICS
    headline: str
    label_rule: str
    templates: list[str]
    images_per_s: float
    predictions: str | None  # the predictions file under --out, with --save-predictions
    source: Any  # what the dataset folder says of where it came from


# "lambda" is a Python keyword: these keys need the functional form
_ProbeFit = TypedDict(
    "_ProbeFit",
    {
        "lambda": float,  # the regularisation the search chose
        "C": float,  # scikit-learn's name for 1 / λ
        "lambda_search": list[dict[str, Any]],
        "grid": list[float],  # [first, last, count] of the λ grid
        "converged": bool,
        "iterations": int,
        "unconverged_search_fits": int,
    },
)


class ProbeRecord(BaseRecord, _ProbeFit):
    dataset_root: str
    n_images: int
    n_skipped: int
    skipped_by_split: dict[str, int]
    n_classes: int
    n_train: int
    n_val: int
    metrics: dict[str, float]  # METRICS
    headline: str
    label_rule: str
    features: str
    feature_description: str
    feature_dim: int
    splits: dict[str, Any]  # where train, validation and test came from
    features_cached: dict[str, bool]
    protocol: str
    seconds: NotRequired[float]  # the checkpoint's whole probe, set by the runner


class RetrievalRecord(BaseRecord):
    n_images: int
    n_skipped: int
    n_captions: int
    metrics: dict[str, float]  # Recall@K both ways, mean_recall
    headline: str
    source: dict[str, Any]
    protocol: str
    seconds: float


class AnalyzeRecord(BaseRecord):
    n_images: int
    n_skipped: int
    metrics: dict[str, float]
    spectra: dict[str, Any]
    projection: dict[str, Any]  # method, xy
    source: dict[str, Any]
    protocol: str


# what the writers take: records as the runners built them, or rows derived from them; the writers
# take `stats.ITEMS` out, so they need the records themselves, not a read-only view
WritableRecords = Sequence[BaseRecord | dict[str, Any]]


def base_record(
    loaded, label: str, dataset: str, cfg: EvalOptions, versions: dict, task: str | None = None
) -> BaseRecord:
    """The fields every results record starts with: which checkpoint (path, hash, format, model,
    method, what it says of itself) under which label, the dataset, and how it ran. `loaded` is a
    `LoadedModel`, `cfg` any `EvalOptions`; zero-shot records carry no `task` (readers default to
    zero-shot)."""
    record = BaseRecord(
        label=label,
        checkpoint=loaded.path,
        checkpoint_sha256=loaded.sha256,
        checkpoint_format=loaded.format,
        model=loaded.name,
        method=loaded.method,
        checkpoint_info=loaded.info,
        dataset=dataset,
        precision=cfg.precision,
        device=cfg.device,
        software=versions,
    )
    # `task` first, as the files have always had it
    return {"task": task, **record} if task else record


def flat(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "checkpoint": r["label"],
            "model": r["model"],
            "method": r.get("method") or "",
            "dataset": r["dataset"],
            "n_images": r["n_images"],
            "n_skipped": r.get("n_skipped", 0),
            "n_classes": r["n_classes"],
            **{m: r["metrics"][m] for m in METRICS},
            "headline": r["headline"],
            "precision": r["precision"],
            "checkpoint_path": r.get("checkpoint") or "",
            "checkpoint_sha256": r.get("checkpoint_sha256") or "",
            **_interval_columns(r, METRICS),
            **_probe_columns(r),
        }
        for r in records
    ]
    return pd.DataFrame(rows)


def _interval_columns(record: Mapping[str, Any], metrics) -> dict:
    """`<metric>_lo`, `<metric>_hi`: the 95% bootstrap interval (absent with --bootstrap 0)."""
    found = record.get("intervals") or {}
    return {
        f"{m}_{end}": found[m][i]
        for m in metrics
        if m in found
        for i, end in enumerate(("lo", "hi"))
    }


def _cell(record: Mapping[str, Any], metric: str) -> str:
    return stats.format_interval(
        record["metrics"][metric], (record.get("intervals") or {}).get(metric)
    )


def _probe_columns(record: Mapping[str, Any]) -> dict:
    if record.get("task") != "linear_probe":
        return {}
    return {
        "features": record["features"],
        "lambda": record["lambda"],
        "n_train": record["n_train"],
        "n_val": record["n_val"],
    }


def side_by_side(records: Sequence[Mapping[str, Any]], compare: str | None = None) -> pd.DataFrame:
    """Datasets × checkpoints, each cell the dataset's headline metric in %; paper columns
    optional."""
    table = pd.DataFrame({r["label"]: {} for r in records})
    for r in records:
        table.loc[r["dataset"], r["label"]] = 100 * r["metrics"][r["headline"]]
    if compare:
        for method, values in paper.published(compare).items():
            table[f"paper {compare} {method.upper()}"] = [
                values.get(d, float("nan")) for d in table.index
            ]
    table.index.name = "dataset"
    return table


def _boot_words(records: Sequence[Mapping[str, Any]]) -> str:
    n = stats.resamples_of(records)
    return f" over the test images ({n} seeded resamples)" if n else " (off: --bootstrap 0)"


def markdown(
    records: Sequence[Mapping[str, Any]],
    compare: str | None = None,
    paired: list[dict] | None = None,
) -> str:
    lines = [
        f"# {_title(records)} results",
        "",
        "Percentages; the headline metric of each dataset is in **bold**; "
        f"[lo, hi] is the 95% bootstrap interval{_boot_words(records)}.",
        "",
        "| checkpoint | model | dataset | images | skipped | classes | top-1 | top-5 | "
        "mean-per-class | precision |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        cells = [
            f"**{_cell(r, m)}**{unconverged(r)}" if m == r["headline"] else _cell(r, m)
            for m in METRICS
        ]
        lines.append(
            f"| {r['label']} | {r['model']} | {r['dataset']} | {r['n_images']} | "
            f"{r.get('n_skipped', 0)} | {r['n_classes']} | "
            + " | ".join(cells)
            + f" | {r['precision']} |"
        )
    if any(unconverged(r) for r in records):
        lines += ["", UNCONVERGED_NOTE]
    if len({r["label"] for r in records}) > 1 or compare:
        lines += [
            "",
            "## Side by side (headline metric, %)",
            "",
            _md_table(side_by_side(records, compare)),
        ]
    lines += stats.comparisons_markdown(paired or [])
    protocols = dict.fromkeys(r["protocol"] for r in records if r.get("protocol"))
    if protocols:
        lines += ["", "## Protocol", "", *(f"- {p}" for p in protocols)]
    return "\n".join(lines) + "\n"


def _md_table(table: pd.DataFrame) -> str:
    head = "| dataset | " + " | ".join(map(str, table.columns)) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [
        f"| {idx} | " + " | ".join("" if pd.isna(v) else f"{v:.2f}" for v in row) + " |"
        for idx, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    return "\n".join([head, rule, *rows])


def bar_chart(
    records: Sequence[Mapping[str, Any]], target: Path, compare: str | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    table = side_by_side(records, compare)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 1.2 * len(table) * max(1, len(table.columns)) / 2), 4.5)
    )
    table.plot.bar(ax=ax, rot=30, width=0.8, yerr=_error_bars(records, table), capsize=3)
    ax.set_ylabel(f"{_title(records).lower()} accuracy (%)")
    ax.set_title(f"{_title(records)} headline metric per dataset")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return target


def _error_bars(records: Sequence[Mapping[str, Any]], table: pd.DataFrame) -> pd.DataFrame:
    """Distances from each bar to its interval's ends, in matplotlib's (columns, 2, rows) layout."""
    import numpy as np

    err = np.zeros((len(table.columns), 2, len(table.index)))
    for r in records:
        interval = (r.get("intervals") or {}).get(r["headline"])
        if interval and r["label"] in table.columns:
            c, row = list(table.columns).index(r["label"]), list(table.index).index(r["dataset"])
            value = 100 * r["metrics"][r["headline"]]
            err[c, :, row] = [value - 100 * interval[0], 100 * interval[1] - value]
    return err


def _comparisons(records: WritableRecords, out: Path, written: dict[str, Path]) -> list[dict]:
    """Take the runners' per-image items out of the records, pair the checkpoints (stats), and
    write comparisons.csv when there is a pair."""
    paired = stats.comparisons(records, stats.take_items(records), stats.resamples_of(records))
    if paired:
        written["comparisons"] = out / "comparisons.csv"
        rows = [
            {
                **{k: v for k, v in p.items() if k != "interval"},
                "difference_lo": (p["interval"] or [None, None])[0],
                "difference_hi": (p["interval"] or [None, None])[1],
            }
            for p in paired
        ]
        with atomic_open(written["comparisons"], encoding="utf-8", newline="") as f:
            pd.DataFrame(rows).to_csv(f, index=False)
    return paired


def write_all(records: WritableRecords, out: Path, compare: str | None = None) -> dict[str, Path]:
    """results.json / .csv / .md and clip_benchmark/*.json, plus side_by_side.csv and a bar chart
    with several checkpoints (and comparisons.csv: the paired tests)."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    paired = _comparisons(records, out, written)
    write_json(
        written["json"], {"records": records, "compare_paper": compare, "comparisons": paired}
    )
    with atomic_open(written["csv"], encoding="utf-8", newline="") as f:
        flat(records).to_csv(f, index=False)
    with atomic_open(written["md"], encoding="utf-8") as f:
        f.write(markdown(records, compare, paired))
    _add_clip_benchmark(written, records, out)
    if len({r["label"] for r in records}) > 1 or compare:
        written["side_by_side"] = out / "side_by_side.csv"
        with atomic_open(written["side_by_side"], encoding="utf-8", newline="") as f:
            side_by_side(records, compare).to_csv(f, float_format="%.2f")
        written["png"] = bar_chart(records, out / "results.png", compare)
    return written


def write_records(
    records: Sequence[RetrievalRecord | dict[str, Any]],
    out: Path,
    title: str,
    columns: dict[str, str],
    percent: bool = True,
) -> dict[str, Path]:
    """results.json / .csv / .md (and clip_benchmark/*.json) for the tasks beyond zero-shot;
    `columns`: metric key → heading;
    `percent`: fractions shown ×100 in the Markdown (the CSV keeps the raw values)."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    paired = _comparisons(records, out, written)
    write_json(written["json"], {"records": records, "comparisons": paired})
    rows = [
        {
            "checkpoint": r["label"],
            "model": r["model"],
            "method": r.get("method") or "",
            "dataset": r["dataset"],
            "n_images": r.get("n_images"),
            "n_skipped": r.get("n_skipped", 0),
            **{k: r["metrics"][k] for k in columns},
            **_interval_columns(r, columns),
            "precision": r["precision"],
            "checkpoint_path": r.get("checkpoint") or "",
            "checkpoint_sha256": r.get("checkpoint_sha256") or "",
        }
        for r in records
    ]
    with atomic_open(written["csv"], encoding="utf-8", newline="") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    lines = [
        f"# {title}",
        "",
        "| checkpoint | model | dataset | " + " | ".join(columns.values()) + " |",
        "|---|---|---|" + "---:|" * len(columns),
    ]
    for r in records:
        cells = [_cell(r, k) if percent else f"{r['metrics'][k]:.4g}" for k in columns]
        lines.append(
            f"| {r['label']} | {r['model']} | {r['dataset']} | " + " | ".join(cells) + " |"
        )
    if stats.resamples_of(records):
        lines += ["", f"[lo, hi]: 95% bootstrap interval{_boot_words(records)}."]
    lines += stats.comparisons_markdown(paired)
    protocols = dict.fromkeys(r["protocol"] for r in records if r.get("protocol"))
    lines += [
        "",
        ("Percentages. " if percent else "") + "Protocol:",
        "",
        *(f"- {p}" for p in protocols),
    ]
    with atomic_open(written["md"], encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    _add_clip_benchmark(written, records, out)
    return written


def _add_clip_benchmark(
    written: dict[str, Path], records: Sequence[Mapping[str, Any]], out: Path
) -> None:
    folder = write_clip_benchmark(records, out)
    if folder is not None:
        written["clip_benchmark"] = folder


def predictions_frame(task_root: Path, samples: list[tuple[str, int]], pred) -> pd.DataFrame:
    """One row per evaluated image: path relative to the dataset root, label, top-5 indices and
    scores (images that did not decode have no row)."""
    kept = range(len(samples)) if pred.index is None else pred.index
    return pd.DataFrame(
        {
            "path": [Path(samples[i][0]).relative_to(task_root).as_posix() for i in kept],
            "label": pred.labels.astype("int32"),
            "top5_index": list(pred.topk_index.astype("int32")),
            "top5_score": list(pred.topk_score.astype("float32")),
        }
    )


def write_predictions(frame: pd.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=False)
    return target
