"""The toolkit's checkpoint format, "cloob-toolkit/1": marker, typed payload, writer and reader.

One home for the contract between the trainer (writes, resumes) and benchmarks (evaluates): a
`torch.save`d dict of tensors and plain containers, so `torch.load(weights_only=True)` reads it.
`state_dict` is in open_clip's key layout (no `module.` prefix, `logit_scale` = ln τ⁻¹), so
`open_clip.create_model(name, pretrained=path)` loads it; beside it the model config, the method,
τ⁻¹, β (siglip: its bias) and everything an exact resume needs (optimizer, scheduler, scaler, step,
epoch, RNG states,
every rank's data position, the resolved config).

The TypedDicts below are the description: the validator walks their annotations, so a field added
here is checked on read without a second list. Required keys are those a reader cannot do without
(checkpoints written before a NotRequired field existed still load).

torch is imported lazily: `common` is also used by `dataprep`, which must not need torch. No
`from __future__ import annotations` here: TypedDict reads NotRequired only from real annotations.
"""

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NewType, NotRequired, TypedDict

from cloob.common.cli import UsageError
from cloob.common.files import atomic_path
from cloob.common.torchload import safe_load

FORMAT = "cloob-toolkit/1"

if TYPE_CHECKING:
    from torch import Tensor
else:
    # a torch.Tensor: a marker at run time, so the description imports no torch (checked lazily on
    # read); the type checker sees torch's class, so readers index and compare tensors as such
    Tensor = NewType("Tensor", object)


class _Weights(TypedDict):
    """The weights and how to build the model around them: what every reader needs."""

    format: str  # FORMAT
    model_name: str  # the trainer's name for the architecture
    model_cfg: dict[str, Any]  # open_clip model config (embed_dim, vision_cfg, text_cfg, ...)
    state_dict: dict[str, Tensor]  # open_clip key layout


class _Readout(TypedDict, total=False):
    """Scalars for readers (reports, benchmarks' result records); training uses exact states."""

    name: str  # the run's name
    inv_tau: float  # exp(logit_scale)
    hopfield_beta: float  # the Hopfield β
    logit_bias: float  # siglip's bias b (exact in loss_state)
    epoch: int


class ModelCheckpoint(_Weights, _Readout, total=False):
    """What an evaluator reads (and what a test or converter writes): weights plus config."""

    method: str  # clip | cloob | infoloob | hopfield_infonce | siglip
    step: int


class DataPosition(TypedDict):
    """One rank's position in its shard stream (cloob.trainer.data.Position.state_dict)."""

    epoch: int
    batch: int
    worker_pos: list[int]
    next_worker: int
    skipped: int


class DataState(TypedDict):
    ranks: list[DataPosition]  # one per rank, in rank order
    global_batch: int
    n_workers: int
    accum_freq: NotRequired[int]


class OptimizerState(TypedDict):
    state: dict[Any, Any]
    param_groups: list[Any]


class RngState(TypedDict):
    torch: Tensor
    numpy: dict[str, Any]
    python: dict[str, Any]
    cuda: NotRequired[list[Any]]


class TrainerCheckpoint(_Weights, _Readout):
    """Everything `trainer run` writes; the required keys are what `--resume` reads."""

    method: str
    step: int
    loss_state: dict[str, Tensor]  # exact ln β (the float `hopfield_beta` is for readers)
    optimizer: OptimizerState
    data: DataState
    rng: RngState
    scheduler: NotRequired[dict[str, Any]]
    scaler: NotRequired[dict[str, Any]]  # {} when no grad scaler is used
    precision: NotRequired[str]
    config: NotRequired[dict[str, Any]]  # the resolved run config


def write(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Stamp the marker and write atomically (temp file, fsync, rename): a kill leaves the old file
    or the new one. `payload` is a TrainerCheckpoint (the trainer) or a ModelCheckpoint (weights
    only, as tests and converters write)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **{k: v for k, v in payload.items() if k != "format"}}, tmp)
    return path


def is_toolkit(ckpt: Mapping[str, Any]) -> bool:
    """Whether a loaded dict carries this format's marker."""
    return ckpt.get("format") == FORMAT


def read(path: str | Path) -> TrainerCheckpoint:
    """A checkpoint a resume can continue from: loaded with weights_only=True (a pickle that wants
    to run code is refused), then checked against TrainerCheckpoint; problems are one UsageError."""
    ckpt = safe_load(path)
    return typing.cast(TrainerCheckpoint, check(ckpt, path, TrainerCheckpoint))


def check(ckpt: Any, path: str | Path, kind: type = ModelCheckpoint) -> dict[str, Any]:
    """`ckpt` if it is a `kind` (ModelCheckpoint or TrainerCheckpoint), else a one-line
    UsageError."""
    if not isinstance(ckpt, dict) or not is_toolkit(ckpt):
        raise UsageError(f"{path} is not a {FORMAT} checkpoint")
    problem = _problem(ckpt, kind, "")
    if problem:
        raise UsageError(f"{path} is not a complete {FORMAT} checkpoint: {problem}")
    return ckpt


def _problem(value: Any, kind: Any, name: str) -> str | None:
    """Why `value` is not a `kind`, or None; `name` is its dotted path for the message."""
    if _is_typeddict(kind):
        if not isinstance(value, dict):
            return f"{name!r} is a {type(value).__name__}, not a dict"
        return _typeddict_problem(value, kind, name)
    if kind is Tensor:
        import torch

        return None if isinstance(value, torch.Tensor) else f"{name!r} is not a tensor"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict and args and args[1] is Tensor:
        import torch

        ok = isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())
        return None if ok else f"{name!r} is not a mapping of names to tensors"
    if origin is list and args and _is_typeddict(args[0]):
        ok = isinstance(value, list) and all(_problem(v, args[0], name) is None for v in value)
        return None if ok else f"{name!r} does not hold {_plural(args[0])}"
    expected = _runtime_type(kind)
    if expected is None or isinstance(value, expected):
        return None
    wanted = _type_name(expected)
    article = "an" if wanted[0] in "aeiou" else "a"
    return f"{name!r} is a {type(value).__name__}, not {article} {wanted}"


def _typeddict_problem(ckpt: dict[str, Any], kind: Any, where: str) -> str | None:
    hints = typing.get_type_hints(kind)  # in declaration order: messages are stable
    for key in hints:
        if key in kind.__required_keys__ and key not in ckpt:
            return f"no {_dotted(where, key)!r}"
    for key, hint in hints.items():
        if key in ckpt:
            problem = _problem(ckpt[key], hint, _dotted(where, key))
            if problem:
                return problem
    return None


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_typeddict(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "__required_keys__")


def _runtime_type(kind: Any) -> type | tuple[type, ...] | None:
    """The isinstance check for a plain annotation; None where anything goes."""
    if kind is Any:
        return None
    if kind is float:
        return (int, float)  # an int β (e.g. 30) is still a number
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return None
    return origin if origin is not None else kind


def _type_name(expected: type | tuple[type, ...]) -> str:
    return "number" if isinstance(expected, tuple) else expected.__name__


def _plural(kind: type) -> str:
    # DataPosition → "data positions": the wording a user reads in the error line
    words, word = [], ""
    for ch in kind.__name__:
        if ch.isupper() and word:
            words.append(word)
            word = ""
        word += ch.lower()
    return " ".join([*words, word]) + "s"
