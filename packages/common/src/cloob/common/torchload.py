"""Loading checkpoints without running code: `torch.load(weights_only=True)` with one-line errors.

Used by the trainer (resume) and benchmarks (evaluation). torch is imported lazily: `common` is
also used by `dataprep`, which must not need torch.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from cloob.common.cli import UsageError, first_line


def safe_load(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`. A missing file raises FileNotFoundError; a corrupt or
    code-carrying one a UsageError (both become one-line errors through `run_app`)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "global" in str(err).lower():
            raise UsageError(
                f"{path}: not a readable checkpoint: refusing to load objects other than "
                f"tensors and plain containers, which could execute code "
                f"({first_line(err)})"
            ) from None
        raise UsageError(f"{path}: not a readable checkpoint ({first_line(err)})") from None
    except Exception as err:  # torch's unpickler raises many types on garbage
        raise UsageError(f"{path}: not a readable checkpoint ({first_line(err)})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: not a checkpoint dict (got {type(obj).__name__})")
    return obj
