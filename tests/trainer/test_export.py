"""`trainer export`: open_clip's hub layout that a bare open_clip loads with identical embeddings.

The round trip runs in a child interpreter started with `-S` (no site processing, so none of the
workspace's editable `cloob` packages is importable) and only site-packages on sys.path: open_clip
alone builds the model from `local-dir:DIR`, without register_configs."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cloob.benchmarks.models.checkpoints import load_checkpoint
from cloob.common import checkpoint as ckpt_format
from cloob.common.cli import UsageError
from cloob.trainer import cli, losses, models
from cloob.trainer.export import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, export
from support.bad_input import BadInput, check
from support.cli import run_main

from .conftest import MICRO

CHILD = textwrap.dedent("""
    import importlib.util, sys
    sys.path.append(sys.argv[1])
    assert importlib.util.find_spec("cloob") is None, "the cloob package must not be importable"
    import torch, open_clip
    from safetensors.torch import load_file, save_file
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + sys.argv[2])
    model.eval()
    inputs = load_file(sys.argv[3])
    with torch.no_grad():
        out = {"image": model.encode_image(inputs["images"]),
               "text": model.encode_text(inputs["texts"]),
               "logit_scale": model.logit_scale.detach().reshape(1)}
        if model.logit_bias is not None:
            out["logit_bias"] = model.logit_bias.detach().reshape(1)
    out["size"] = torch.tensor([preprocess.transforms[0].size])
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[4])
""")


def site_packages() -> str:
    return next(p for p in site.getsitepackages() if p.endswith("site-packages"))


def trainer_checkpoint(path: Path, method: str, logs: Path | None = None) -> Path:
    """What `trainer run` writes for `method` (weights, loss state, readouts), on the micro
    model."""
    torch.manual_seed(3)
    bundle = models.create(
        MICRO, init_inv_tau=12.5, learnable_inv_tau=True, device=torch.device("cpu")
    )
    loss = losses.create_loss(method, 9.0, learnable_beta=True, init_bias=-7.25)
    payload = {
        "model_name": bundle.name,
        "model_cfg": bundle.cfg,
        "method": method,
        "state_dict": bundle.model.state_dict(),
        "loss_state": loss.state_dict(),
        "inv_tau": 12.5,
        "hopfield_beta": 9.0,
        "step": 42,
        "epoch": 1,
        "name": "run-x",
        "config": {"data": {"train_data": "data/demo"}},
    }
    if method == "siglip":
        payload["logit_bias"] = -7.25
    return ckpt_format.write(path, payload)


def inputs(size: int, context: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randn(3, 3, size, size, generator=g),
        "texts": torch.randint(1, 49000, (4, context), generator=g),
    }


@pytest.mark.parametrize("method", ["cloob", "siglip"])
def test_bare_open_clip_loads_the_export_with_identical_embeddings(tmp_path, method):
    ckpt = trainer_checkpoint(tmp_path / "epoch_1.pt", method)
    out = export(ckpt, tmp_path / "hub")
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD_NAME, CONFIG_NAME, WEIGHTS_NAME])
    assert not any(p.name.startswith(".hub.") for p in tmp_path.iterdir())  # no temp folder left
    umask = os.umask(0)
    os.umask(umask)
    assert (out / WEIGHTS_NAME).stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, not 0600
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    ours = load_checkpoint(ckpt)  # the toolkit's own reader of the .pt: the expected embeddings
    size = ours.model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    context = ours.model.positional_embedding.shape[0]
    from safetensors.torch import load_file, save_file

    save_file(inputs(size, context), str(tmp_path / "in.safetensors"))
    child = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            CHILD,
            site_packages(),
            str(out),
            str(tmp_path / "in.safetensors"),
            str(tmp_path / "emb.safetensors"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    got = load_file(str(tmp_path / "emb.safetensors"))
    with torch.no_grad():
        x = inputs(size, context)
        image, text = ours.model.encode_image(x["images"]), ours.model.encode_text(x["texts"])
    diff = max((got["image"] - image).abs().max().item(), (got["text"] - text).abs().max().item())
    print(f"\nexport round trip ({method}): max |Δ embedding| = {diff:.1e}")
    assert diff == 0.0
    assert torch.equal(got["logit_scale"].reshape(()), ours.model.logit_scale.detach().reshape(()))
    assert got["size"].item() == size
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["cloob"]["method"] == method and config["cloob"]["step"] == 42
    card = (out / CARD_NAME).read_text()
    assert f"`--method {method}`" in card and "data/demo" in card and "| steps | 42 |" in card
    if method == "siglip":
        assert (
            got["logit_bias"].item() == -7.25 and "| sigmoid bias b (logit_bias) | -7.25 |" in card
        )
    else:
        assert "logit_bias" not in got and config["cloob"]["hopfield_beta"] == pytest.approx(9.0)
        assert "| Hopfield β | 9 |" in card
    # the toolkit's benchmarks read the folder too (same weights, our scalars kept)
    hub = load_checkpoint(out)
    assert hub.format == "open_clip-hub" and hub.method == method and hub.info["step"] == 42
    with torch.no_grad():
        assert torch.equal(hub.model.encode_image(x["images"]), image)


def test_model_card_carries_the_runs_zero_shot_results(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 1.0}\n{"step": 42, "zeroshot/colours-top1": 0.875, '
        '"zeroshot/colours/n_classes": 8}\n{"cut'
    )
    ckpt = trainer_checkpoint(run / "checkpoints" / "epoch_1.pt", "clip")
    out = export(ckpt, tmp_path / "hub")
    card = (out / CARD_NAME).read_text()
    assert "| colours-top1 | 0.875 |" in card and "n_classes" not in card


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "hub").mkdir()
    export(trainer_checkpoint(tmp_path / "a.pt", "clip"), tmp_path / "hub")
    assert (tmp_path / "hub" / WEIGHTS_NAME).is_file()


def _plain_open_clip(scratch: Path) -> list:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, scratch / "plain.pt")
    return ["export", scratch / "plain.pt", "--out", scratch / "hub"]


def _busy_out(scratch: Path) -> list:
    ckpt = trainer_checkpoint(scratch / "a.pt", "clip")
    (scratch / "hub").mkdir()
    (scratch / "hub" / "mine.txt").write_text("keep")
    return ["export", ckpt, "--out", scratch / "hub"]


def _file_out(scratch: Path) -> list:
    ckpt = trainer_checkpoint(scratch / "a.pt", "clip")
    (scratch / "hub").write_text("keep")
    return ["export", ckpt, "--out", scratch / "hub"]


def _garbage(scratch: Path) -> list:
    (scratch / "junk.pt").write_bytes(b"not a checkpoint")
    return ["export", scratch / "junk.pt", "--out", scratch / "hub"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _code_executing_pickle(scratch: Path) -> list:
    torch.save({"state_dict": Evil()}, scratch / "evil.pt")
    return ["export", scratch / "evil.pt", "--out", scratch / "hub"]


def _truncated(scratch: Path) -> list:
    ckpt = trainer_checkpoint(scratch / "a.pt", "clip")
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return ["export", ckpt, "--out", scratch / "hub"]


def _read_only_parent(scratch: Path) -> list:
    ckpt = trainer_checkpoint(scratch / "a.pt", "clip")
    (scratch / "shelf").mkdir(mode=0o555)
    return ["export", ckpt, "--out", scratch / "shelf" / "hub"]


CASES = [
    BadInput("not-ours", _plain_open_clip, "is not a cloob-toolkit/1 checkpoint"),
    BadInput("truncated", _truncated, "not a readable checkpoint"),
    BadInput("code-executing-pickle", _code_executing_pickle, "evil.pt"),
    pytest.param(
        BadInput("out-in-a-read-only-folder", _read_only_parent, "shelf is not writable"),
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders"),
    ),
    BadInput(
        "out-a-url-of-no-store",
        lambda s: ["export", trainer_checkpoint(s / "a.pt", "clip"), "--out", "http://h/m"],
        "http://h/m is a http:// URL; this option takes a local path or s3://",
    ),
    BadInput("garbage", _garbage, "not a readable checkpoint"),
    BadInput(
        "missing", lambda s: ["export", s / "none.pt", "--out", s / "hub"], "no such checkpoint"
    ),
    BadInput("out-not-empty", _busy_out, "exists and is not empty"),
    BadInput("out-is-a-file", _file_out, "exists and is not a folder"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id if isinstance(c, BadInput) else "")
def test_bad_input(case, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # what a pickle's code or a URL taken for a path would write

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["trainer", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        return exc.value.code, capsys.readouterr().err

    check(case, tmp_path, run)


def test_export_into_a_bucket_uploads_the_folder_config_last(s3, tmp_path, capsys):
    ckpt = trainer_checkpoint(tmp_path / "epoch_1.pt", "cloob")
    code = run_main(cli.main, "trainer", "export", ckpt, "--out", s3.url("m/one"))
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == f"wrote {s3.url('m/one')}"
    assert s3.list_keys("m/") == [
        f"m/one/{n}" for n in sorted([CARD_NAME, CONFIG_NAME, WEIGHTS_NAME])
    ]
    local = tmp_path / "copy"
    local.mkdir()
    for name in (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME):
        s3.client().download_file(s3.bucket, f"m/one/{name}", str(local / name))
    hub = load_checkpoint(local)  # what was uploaded is a whole, loadable model folder
    assert hub.method == "cloob" and hub.info["step"] == 42
    assert not any(p.name.startswith("s3:") for p in Path.cwd().iterdir())
    # a second export to the same prefix is refused, the first left as it was
    with pytest.raises(UsageError, match="exists and is not empty: choose a new prefix"):
        export(ckpt, s3.url("m/one"))
    with pytest.raises(UsageError, match="the bucket does not exist"):
        export(ckpt, "s3://no-such-bucket/m")
