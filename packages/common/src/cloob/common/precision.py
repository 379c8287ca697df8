"""The numeric precisions, defined once for training and evaluation.

| name      | weights                                   | autocast | inputs | loss scaling |
|-----------|-------------------------------------------|----------|--------|--------------|
| fp32      | fp32                                      | —        | fp32   | —            |
| amp       | fp32                                      | fp16     | fp32   | GradScaler   |
| amp_bf16  | fp32                                      | bf16     | fp32   | —            |
| pure_bf16 | all bf16                                  | —        | bf16   | —            |
| fp16      | conv/linear/attention fp16, norms fp32    | —        | fp16   | —            |
| bf16      | conv/linear/attention bf16, norms fp32    | —        | bf16   | —            |
| pure_fp16 | all fp16                                  | —        | fp16   | —            |

`fp16` is the reference's (OpenAI's `convert_weights`, open_clip's `fp16`): the model itself is
half precision, no master copy, no loss scaling. `amp` means fp16 autocast on every device, so a
CPU run exercises the same path as a GPU one (CPU autocast supports fp16). Every name open_clip's
trainer accepts works here (`amp_bfloat16` is its
other spelling of `amp_bf16`), so its launch lines need no edit. `auto` resolves to `amp`
on CUDA and `fp32` elsewhere; the device `auto` (`resolve_device`) is CUDA where there is one.
torch/open_clip are imported lazily: `common` is also used by
`dataprep`, which must not need torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from cloob.common.cli import UsageError


@dataclass(frozen=True)
class Precision:
    name: str
    autocast_dtype: str | None  # torch dtype name under torch.autocast, None = no autocast
    input_dtype: str  # what images are cast to before the model
    open_clip: str  # open_clip's `precision` argument that builds these weights
    grad_scaler: bool  # scale the loss (fp16 autocast gradients underflow otherwise)

    @property
    def low_precision_weights(self) -> bool:
        return self.open_clip != "fp32"

    def autocast(self, device: Any) -> contextlib.AbstractContextManager:
        """A fresh autocast context (or a no-op) for `device` (a torch.device or its name)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(torch.device(device).type, dtype=getattr(torch, self.autocast_dtype))

    def cast_input(self, images: Any) -> Any:
        """Images in the dtype the weights expect (a no-op unless the weights are low precision)."""
        import torch

        return images.to(getattr(torch, self.input_dtype))

    def cast_model(self, model: Any) -> Any:
        """Bring an fp32 open_clip model to these weights, as open_clip's factory does."""
        import open_clip
        import torch

        if self.open_clip in ("fp16", "bf16"):
            dtype = torch.float16 if self.open_clip == "fp16" else torch.bfloat16
            open_clip.convert_weights_to_lp(model, dtype=dtype)
        elif self.open_clip in ("pure_bf16", "pure_fp16"):
            model.to(torch.bfloat16 if self.open_clip == "pure_bf16" else torch.float16)
        return model


_ALL = (
    Precision("fp32", None, "float32", "fp32", False),
    Precision("amp", "float16", "float32", "fp32", True),
    Precision("amp_bf16", "bfloat16", "float32", "fp32", False),
    Precision("pure_bf16", None, "bfloat16", "pure_bf16", False),
    Precision("fp16", None, "float16", "fp16", False),
    Precision("bf16", None, "bfloat16", "bf16", False),
    Precision("pure_fp16", None, "float16", "pure_fp16", False),
)
PRECISIONS: dict[str, Precision] = {p.name: p for p in _ALL}
ALIASES = {"amp_bfloat16": "amp_bf16"}  # open_clip_train's second spelling
CHOICES = (*PRECISIONS, *ALIASES, "auto")  # what the CLIs accept


def resolve_device(name: str) -> str:
    """`auto` → `cuda` where a GPU is visible, else `cpu`; other names checked with torch."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is visible (use auto or cpu)")
    return name


def resolve(name: str, device: Any = "cpu") -> Precision:
    """The precision called `name` (`auto`: amp on CUDA, fp32 elsewhere); UsageError if unknown."""
    name = ALIASES.get(name, name)
    if name == "auto":
        import torch

        name = "amp" if torch.device(device).type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}: choose from {', '.join(CHOICES)}")
    return PRECISIONS[name]
