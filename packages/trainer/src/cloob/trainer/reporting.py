"""What a run shows and writes about itself: the log (stderr + out.log), metrics.jsonl with
tensorboard (+ wandb) under OpenCLIP's tags, the training progress bar, and at the end
`curves.png` and the final zero-shot table. Rank 0 reports; every other rank is silent."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, Any

from cloob.common.progress import ProgressBar
from cloob.trainer.config import TrainConfig
from cloob.trainer.openclip_compat import dashboard_tag, report_targets

log = logging.getLogger("cloob.trainer")


class Logger:
    """metrics.jsonl + tensorboard (+ wandb) on rank 0; a no-op elsewhere."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, enabled: bool) -> None:
        self.enabled = enabled
        self.last: dict[str, float] = {}  # the latest value of every key (the run's result)
        self.tb: Any = None
        self.wandb: Any = None
        self.jsonl: IO[str] | None = None
        if not enabled:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        targets = report_targets(cfg.run.report_to)
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in targets:
            import wandb

            self.wandb = wandb.init(
                project="cloob-toolkit",
                name=run_dir.name,
                config=cfg.to_dict(),
                dir=str(run_dir),
                resume="allow",
            )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.last.update(values)
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        tagged = {dashboard_tag(k): v for k, v in values.items()}  # OpenCLIP's tags: runs overlay
        if self.tb is not None:
            for tag, v in tagged.items():
                self.tb.add_scalar(tag, v, step)
        if self.wandb is not None:
            self.wandb.log(tagged, step=step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
            if self.wandb is not None:
                self.wandb.finish()


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    """The `cloob.trainer` log: INFO on rank 0 (to stderr and run_dir/out.log), warnings
    elsewhere."""
    logger = logging.getLogger("cloob.trainer")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.handlers.clear()
    logger.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(stream)
    if run_dir is not None:
        logfile = logging.FileHandler(run_dir / "out.log")
        logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(logfile)


def progress(enabled: bool, total: int, done: int) -> ProgressBar:
    """The training bar on rank 0 (silent elsewhere); `show_stats` fills its stats column."""
    return ProgressBar(enabled, "train", total, done=done, stats=True, transient=False).start()


def show_stats(bar: ProgressBar, v: dict[str, float]) -> None:
    bar.show(
        f"loss {v['loss']:.4f}  lr {v['lr']:.2e}  τ⁻¹ {v['inv_tau']:.1f}  "
        f"β {v['beta']:.2f}  {v['samples_per_s']:.1f} samples/s"
    )


def plot_curves(run_dir: Path) -> Path:
    """curves.png from metrics.jsonl: loss, learning rate and zero-shot accuracy against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in ((axes[0], "loss", "training loss"), (axes[1], "lr", "learning rate")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True))
        ax.set_title(title)
        ax.set_xlabel("step")
    zs = sorted({k for r in rows for k in r if k.startswith("zeroshot/") and k.endswith("/acc1")})
    for key in zs:
        pts = [(r["step"], 100 * r[key]) for r in rows if key in r]
        axes[2].plot(*zip(*pts, strict=True), marker="o", label=key.split("/")[1])
    if zs:
        axes[2].legend()
    axes[2].set_title("zero-shot top-1 (%)")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def finish(run_dir: Path, metrics: dict[str, float]) -> None:
    """End of run on rank 0: curves.png, the final zero-shot table and the run folder."""
    from rich.console import Console
    from rich.table import Table

    try:
        plot_curves(run_dir)
    except Exception as err:  # a plot must never fail a finished run
        log.warning("could not draw curves.png: %s", err)
    console = Console(stderr=False)
    tasks = sorted({k.split("/")[1] for k in metrics if k.startswith("zeroshot/")})
    if tasks:
        table = Table(title="zero-shot (final)")
        for col in ("task", "classes", "chance %", "acc1 %", "acc5 %", "mean per-class recall %"):
            table.add_column(col, justify="left" if col == "task" else "right")
        for t in tasks:
            n = metrics.get(f"zeroshot/{t}/n_classes", float("nan"))
            table.add_row(
                t,
                f"{n:.0f}",
                f"{100 / n:.2f}",
                *(
                    f"{100 * metrics.get(f'zeroshot/{t}/{k}', float('nan')):.2f}"
                    for k in ("acc1", "acc5", "mean_per_class_recall")
                ),
            )
        console.print(table)
    console.print(f"run folder: {run_dir}")
