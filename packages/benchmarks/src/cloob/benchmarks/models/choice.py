"""Which models an evaluation command runs: `--ckpt` files, then `--model`/`--pretrained`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloob.common.cli import UsageError

if TYPE_CHECKING:  # loading needs torch: imported when the models are loaded, not before
    from cloob.benchmarks.models.checkpoints import LoadedModel


@dataclass
class ModelChoice:
    ckpt: list[str] = field(default_factory=list)  # paths or s3:// URLs
    model: str | None = None  # open_clip model name (or the architecture of a bare checkpoint)
    pretrained: str | None = None  # open_clip pretrained tag or weights file

    def __post_init__(self) -> None:
        self.ckpt = list(self.ckpt or [])

    def require(self) -> None:
        if not self.ckpt and not self.model:
            raise UsageError(
                "give at least one --ckpt PATH, or --model NAME --pretrained TAG_OR_PATH"
            )

    def load(self, precision: str) -> list[LoadedModel]:
        """--ckpt files, then --model/--pretrained, with the weights in `precision`.

        `--ckpt PATH --model NAME` (no --pretrained): NAME is the architecture of the plain
        open_clip checkpoints whose run left no params.txt, not a model of its own."""
        from cloob.benchmarks.models.checkpoints import load_checkpoint, load_open_clip

        self.require()
        architecture = self.model if self.pretrained is None else None
        models = [load_checkpoint(p, precision=precision, model=architecture) for p in self.ckpt]
        if self.model and (self.pretrained is not None or not self.ckpt):
            models.append(load_open_clip(self.model, self.pretrained, precision=precision))
        return models
