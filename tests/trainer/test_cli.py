"""Bad input: one line on stderr, exit code 2, before any work. Plus --help and unsafe
checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer import cli
from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from cloob.trainer.loop import train

from .conftest import MICRO


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["trainer", "run", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert isinstance(exc.value.code, int)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    train(
        TrainConfig(
            data=DataConfig(
                dataset_type="synthetic", train_num_samples=16, batch_size=8, workers=0
            ),
            model=ModelConfig(model=MICRO, method="clip"),
            optim=OptimConfig(warmup=1, max_steps=1),
            run=RunConfig(logs=str(logs), name="micro", report_to="none", progress=False),
        )
    )
    return logs


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "RN51", "--dataset-type", "synthetic"], "unknown model"),
        (["--method", "sigmoid", "--dataset-type", "synthetic"], "unknown method"),
        (["--train-data", "/nonexistent/shards-{000..003}.tar"], "not found"),
        (["--train-data", "/nonexistent/train.csv"], "not found"),
        (["--dataset-type", "csv"], "no --train-data"),
        (["--lr", "fast", "--dataset-type", "synthetic"], "--lr"),
        (["--batch-size", "many", "--dataset-type", "synthetic"], "--batch-size"),
        (["--batch-size", "0", "--dataset-type", "synthetic"], "--batch-size"),
        (["--precision", "fp8", "--dataset-type", "synthetic"], "--precision"),
        (["--accum-freq", "0", "--dataset-type", "synthetic"], "--accum-freq must be >= 1"),
        (["--lr-scheduler", "linear", "--dataset-type", "synthetic"], "--lr-scheduler"),
        (["--dataset-type", "synthetic", "--zeroshot-task", "/nonexistent/task"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, expected):
    code, err = run_cli(monkeypatch, capsys, "--logs", str(tmp_path), *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and expected in err, err
    assert not any(tmp_path.iterdir())  # no run folder: nothing started


def test_empty_shard_list(monkeypatch, capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sizes.json").write_text("{}")
    code, err = run_cli(monkeypatch, capsys, "--train-data", str(tmp_path / "data"))
    assert code == 2 and "empty shard list" in err


def test_resume_with_incompatible_model(monkeypatch, capsys, micro_run):
    code, err = run_cli(
        monkeypatch,
        capsys,
        "--logs",
        str(micro_run),
        "--name",
        "micro",
        "--resume",
        "latest",
        "--model",
        "tiny-vit",
        "--dataset-type",
        "synthetic",
    )
    assert code == 2 and "cannot resume" in err and err.count("\n") == 1


def test_checkpoint_that_would_run_code_is_refused(monkeypatch, capsys, micro_run, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "evil.pt"
    ckpt_format.write(path, {"payload": Evil()})
    code, err = run_cli(
        monkeypatch,
        capsys,
        "--model",
        MICRO,
        "--dataset-type",
        "synthetic",
        "--resume",
        str(path),
        "--logs",
        str(tmp_path),
    )
    assert code == 2 and "refusing to load" in err and err.count("\n") == 1


def test_atomic_save_keeps_old_latest_on_failure(micro_run, monkeypatch):
    latest = micro_run / "micro" / "checkpoints" / "latest.pt"
    before = latest.read_bytes()

    def dies_midway(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise KeyboardInterrupt  # as a kill would, in the middle of the write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt_format.write(latest, {})
    assert latest.read_bytes() == before
    assert not [p for p in latest.parent.iterdir() if p.name.endswith(".tmp")]


def test_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "cloob.trainer.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    for flag in (
        "--train-data",
        "--val-data",
        "--dataset-type",
        "--path-data",
        "--csv-separator",
        "--csv-img-key",
        "--csv-caption-key",
        "--dataset-resampled",
        "--train-num-samples",
        "--model",
        "--method",
        "--init-inv-tau",
        "--learnable-inv-tau",
        "--init-scale-hopfield",
        "--scale-hopfield",
        "--learnable-scale-hopfield",
        "--lr",
        "--wd",
        "--beta1",
        "--beta2",
        "--eps",
        "--warmup",
        "--lr-scheduler",
        "--restart-cycles",
        "--grad-clip-norm",
        "--precision",
        "--grad-checkpointing",
        "--torchcompile",
        "--seed",
        "--epochs",
        "--max-steps",
        "--dist-url",
        "--logs",
        "--name",
        "--save-frequency",
        "--save-every-n-steps",
        "--keep-last",
        "--resume",
        "--imagenet-val",
        "--imagenet-v2",
        "--zeroshot-frequency",
        "--batch-size-eval",
        "--zeroshot-task",
        "--report-to",
        "--workers",
        "--batch-size",
    ):
        assert flag in out, flag


def test_reference_command_parses(monkeypatch):
    """The reference README command (paths aside) maps onto our config unchanged."""
    seen = {}
    monkeypatch.setattr("cloob.trainer.loop.train", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "trainer",
            "run",
            "--train-data",
            "train.csv",
            "--val-data",
            "val.csv",
            "--path-data",
            "cc",
            "--imagenet-val",
            "imagenet/val",
            "--warmup",
            "20000",
            "--batch-size=128",
            "--lr=1e-3",
            "--wd=0.1",
            "--lr-scheduler=cosine-restarts",
            "--restart-cycles=10",
            "--epochs=70",
            "--method=cloob",
            "--init-inv-tau=30",
            "--init-scale-hopfield=8",
            "--workers=8",
            "--model=RN50",
            "--batch-size-eval=512",
            "--dataset-type",
            "csv",
            "--dist-url",
            "tcp://127.0.0.1:6100",
            "--scale-hopfield",
            "8",
        ],
    )
    cli.main()
    c = seen["cfg"]
    assert (c.optim.restart_cycles, c.data.batch_size, c.model.init_scale_hopfield) == (
        10,
        128,
        8.0,
    )
    assert c.optim.lr_scheduler == "cosine-restarts" and c.eval.batch_size_eval == 512


def test_help_shows_the_resolved_defaults(monkeypatch, capsys):
    """rich markup must not eat '[default: …]' nor turn the tab default into a line break."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys, "argv", ["trainer", "run", "--help"])
    try:
        cli.main()
    except SystemExit as exit_:
        assert not exit_.code
    out = capsys.readouterr().out
    for text in (
        "[default: 5e-4]",
        "[default: 0.999 ResNet, 0.98 ViT]",
        "[default: method-model-time]",
        "[default: nccl on GPU, gloo on CPU]",
        "[default: (\\t)]",
        "--accum-freq",
        "--local-loss",
        "pure_bf16",
        "[default: 30; siglip: 10]",
        "siglip (pairwise sigmoid loss",
    ):
        assert text in out, text


def test_reference_model_spelling_is_accepted():
    from cloob.trainer.models import resolve_model_name

    assert resolve_model_name("ViT-B/32") == resolve_model_name("ViT-B-32") == "ViT-B-32-quickgelu"


def test_bare_command_shows_help_without_an_error_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["trainer"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    captured = capsys.readouterr()
    assert exc.value.code == 2 and "error:" not in captured.err
    assert "run" in captured.out + captured.err


def _distinct_command_line() -> tuple[list[str], dict[str, object]]:
    """`trainer run` with every option set to a value of its own (flags: the non-default side),
    and the value each parameter should hold afterwards."""
    import typing

    import typer.main

    hints = typing.get_type_hints(cli.run)
    # typer vendors click: its classes are told apart by name, not isinstance
    argv: list[str] = []
    expected: dict[str, object] = {}
    group = typer.main.get_command(cli.app)
    assert isinstance(group, typer.core.TyperGroup)
    for i, param in enumerate(group.commands["run"].params):
        if not isinstance(param, typer.core.TyperOption):
            continue
        assert param.name is not None
        if param.is_flag:
            on, off = param.opts[0], next(iter(param.secondary_opts), None)
            side = not param.default
            if side or off is not None:
                argv.append(on if side else str(off))
                expected[param.name] = side
            continue
        value: object
        if param.multiple:
            values = [f"task-{i}-a", f"task-{i}-b"]
            argv += [w for v in values for w in (param.opts[0], v)]
            value = values
        else:
            kind = _without_none(hints[param.name])
            value = 1000 + i if kind is int else 0.25 + i if kind is float else f"value-{i}"
            argv += [param.opts[0], str(value)]
        expected[param.name] = value
    return argv, expected


def _without_none(hint: object) -> object:
    """`int | None` → int; other hints as they are."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if isinstance(hint, types.UnionType) and len(args) == 1 else hint


def test_every_option_reaches_its_field(monkeypatch):
    """Each `trainer run` option lands in the config field of its own name, whatever the fields'
    order: a new option without a field, or a field without an option, fails too."""
    seen = {}
    monkeypatch.setattr("cloob.trainer.loop.train", lambda cfg: seen.setdefault("cfg", cfg))
    argv, expected = _distinct_command_line()
    monkeypatch.setattr(sys, "argv", ["trainer", "run", *argv])
    cli.main()
    fields = {
        name: value for section in seen["cfg"].to_dict().values() for name, value in section.items()
    }
    assert sum(len(s) for s in seen["cfg"].to_dict().values()) == len(fields)  # names are unique
    assert set(expected) - {"demo_samples"} == set(fields)
    assert {name: fields[name] for name in fields} == {name: expected[name] for name in fields}
