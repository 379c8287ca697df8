"""Schedule, parameter groups, checkpoint pruning, and a run exercising the optional features."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from cloob.common import checkpoint as ckpt_format
from cloob.trainer import checkpoint, losses, models
from cloob.trainer.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from cloob.trainer.loop import train
from cloob.trainer.optim import learning_rate, param_groups

from .conftest import MICRO


def test_learning_rate_schedules():
    kw = dict(base_lr=1.0, warmup=10, total=110)
    assert learning_rate(0, kind="cosine", **kw) == pytest.approx(0.1)
    assert learning_rate(9, kind="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(10, kind="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(60, kind="cosine", **kw) == pytest.approx(0.5)
    assert learning_rate(110, kind="cosine", **kw) == pytest.approx(0.0)
    assert learning_rate(500, kind="const", **kw) == 1.0
    # 4 hard restarts over 100 steps: back to the peak every 25 steps
    r = [learning_rate(s, kind="cosine-restarts", cycles=4, **kw) for s in (10, 22, 35, 47, 60)]
    assert r[0] == pytest.approx(1.0) and r[2] == pytest.approx(1.0) and r[4] == pytest.approx(1.0)
    assert r[1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 12 / 25)))
    assert learning_rate(110, kind="cosine-restarts", cycles=4, **kw) == 0.0


def test_param_groups_follow_the_reference():
    bundle = models.create(
        "tiny-rn", init_inv_tau=30, learnable_inv_tau=True, device=torch.device("cpu")
    )
    loss_fn = losses.create_loss("cloob", 8.0, learnable_beta=True)
    no_decay, decay = param_groups(bundle.model, loss_fn, 0.1)
    names = {id(p): n for n, p in bundle.model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert any(p is loss_fn.logit_beta for p in no_decay["params"])
    assert any(names.get(id(p)) == "logit_scale" for p in no_decay["params"])
    for p in decay["params"]:
        assert not any(s in names[id(p)] for s in ("bn", "ln", "bias", "logit_scale"))
    n_params = sum(1 for p in bundle.model.parameters() if p.requires_grad) + 1
    assert len(no_decay["params"]) + len(decay["params"]) == n_params


def test_prune_keeps_last(tmp_path):
    for i, name in enumerate(["step_5.pt", "epoch_1.pt", "step_10.pt", "step_15.pt", "latest.pt"]):
        (tmp_path / name).write_bytes(b"x")
        t = 1_700_000_000 + i
        import os

        os.utime(tmp_path / name, (t, t))
    checkpoint.prune(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step_10.pt", "step_15.pt"]


def test_features_run_bf16_gradclip_checkpointing_restarts(tmp_path):
    """amp_bf16 autocast on CPU, grad clipping, gradient checkpointing, learnable τ⁻¹ and β,
    cosine restarts and --keep-last in one short run; each leaves its own trace."""
    import json

    calls = {"attention": 0, "embedding": 0}
    dtypes: set[torch.dtype] = set()

    def watch(module, _inputs, output):
        # global forward hooks also fire when checkpointing recomputes a block in backward
        if isinstance(module, torch.nn.MultiheadAttention):
            calls["attention"] += 1
        elif isinstance(module, torch.nn.Embedding):
            calls["embedding"] += 1
        elif isinstance(module, torch.nn.Linear):
            dtypes.add(output.dtype)

    clip_norm = 0.01  # far below the raw gradient norm at τ⁻¹ ≈ 99
    hook = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        result = train(
            TrainConfig(
                data=DataConfig(
                    dataset_type="synthetic", train_num_samples=24, batch_size=4, workers=0
                ),
                model=ModelConfig(
                    model=MICRO,
                    method="hopfield_infonce",
                    learnable_inv_tau=True,
                    learnable_scale_hopfield=True,
                    grad_checkpointing=True,
                    init_inv_tau=99.0,
                ),
                optim=OptimConfig(
                    lr=1e-2,
                    warmup=1,
                    lr_scheduler="cosine-restarts",
                    restart_cycles=2,
                    grad_clip_norm=clip_norm,
                    epochs=2,
                ),
                run=RunConfig(
                    logs=str(tmp_path),
                    name="feat",
                    precision="amp_bf16",
                    report_to="none",
                    progress=False,
                    save_every_n_steps=2,
                    keep_last=2,
                    log_every_n_steps=3,
                ),
            )
        )
    finally:
        hook.remove()
    ckpt = ckpt_format.read(result.checkpoint)
    assert ckpt["step"] == 12 and ckpt["epoch"] == 2
    assert math.isfinite(result.metrics["loss"])
    # bf16 autocast: the linear layers computed in bfloat16
    assert torch.bfloat16 in dtypes
    # checkpointing: each step ran the vision and the text tower's one block twice (forward,
    # recompute in backward); the text tower embeds its tokens once per step
    assert calls["embedding"] == 12 and calls["attention"] == 4 * calls["embedding"]
    # learnable τ⁻¹ and β moved (the clamp to [1, 100]: test_inv_tau_is_clamped_to_1_100)
    assert abs(ckpt["inv_tau"] - 99.0) > 0.01
    assert ckpt["hopfield_beta"] != 8.0
    # clipping: Adam's first moment averages clipped gradients, so its norm stays within the clip
    groups = ckpt["optimizer"]["param_groups"]
    beta_index = groups[0]["params"][-1]  # the objective's β comes last and is not clipped
    moments = [s["exp_avg"] for i, s in ckpt["optimizer"]["state"].items() if i != beta_index]
    assert torch.linalg.vector_norm(torch.stack([m.norm() for m in moments])) <= clip_norm * 1.001
    # cosine restarts: the logged rates are the schedule's, which climbs back after a cycle
    logged = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    rates = {row["step"]: row["lr"] for row in logged if "lr" in row}
    expected = {
        s: learning_rate(s - 1, base_lr=1e-2, warmup=1, total=12, kind="cosine-restarts", cycles=2)
        for s in rates
    }
    assert rates == pytest.approx(expected) and sorted(rates) == [3, 6, 9, 12]
    assert rates[9] > rates[6]
    numbered = [p.name for p in (result.run_dir / "checkpoints").iterdir() if p.name != "latest.pt"]
    assert len(numbered) == 2


def test_inv_tau_is_clamped_to_1_100():
    bundle = models.create(
        MICRO, init_inv_tau=30, learnable_inv_tau=True, device=torch.device("cpu")
    )
    scale = models.logit_scale(bundle.model)
    for start, clamped in ((math.log(1000.0), 100.0), (-1.0, 1.0), (math.log(30.0), 30.0)):
        with torch.no_grad():
            scale.fill_(start)
        models.clamp_logit_scale(bundle.model)
        assert scale.exp().item() == pytest.approx(clamped, rel=1e-6)


def test_tiny_configs_and_open_clip_local_dir(tmp_path):
    """The tiny configs are open_clip configs: exported for OpenCLIP's `--model local-dir:DIR`,
    they build the same architecture; tiny-rn (ModifiedResNet) trains a step."""
    import open_clip

    for name in ("micro-vit", "micro-rn", "tiny-vit", "tiny-rn"):
        out = models.export_open_clip_dir(name, tmp_path / name)
        ours = models.create(
            name, init_inv_tau=30, learnable_inv_tau=False, device=torch.device("cpu")
        )
        theirs = open_clip.create_model(f"local-dir:{out}")
        assert {k: v.shape for k, v in ours.model.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }
        assert ours.cfg["quick_gelu"] and ours.cfg["vision_cfg"]["image_size"] == 64
    result = train(
        TrainConfig(
            data=DataConfig(dataset_type="synthetic", train_num_samples=8, batch_size=4, workers=0),
            model=ModelConfig(model="tiny-rn", method="infoloob"),
            optim=OptimConfig(warmup=1, max_steps=1),
            run=RunConfig(logs=str(tmp_path), name="rn", report_to="none", progress=False),
        )
    )
    assert math.isfinite(result.metrics["loss"])


@pytest.mark.slow  # inductor compiles the model for the CPU: ~1-2 min
@pytest.mark.parametrize("method", ["clip", "cloob"])
def test_torchcompile_trains_and_its_checkpoint_loads_in_open_clip(tmp_path, method):
    """Through the CLI in a child process, as a user runs it: a compiled backward leaves autograd
    threads behind that would break the fork-based multi-rank tests later in the same test run."""
    import json
    import subprocess
    import sys

    import open_clip

    trainer = Path(sys.executable).with_name("trainer")
    subprocess.run(
        [
            str(trainer),
            "run",
            "--model",
            "micro-vit",
            "--method",
            method,
            "--torchcompile",
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "24",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--warmup",
            "1",
            "--max-steps",
            "3",
            "--logs",
            str(tmp_path),
            "--name",
            "compiled",
            "--report-to",
            "none",
            "--no-progress",
            "--log-every-n-steps",
            "1",
        ],
        check=True,
        capture_output=True,
        timeout=900,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    run = tmp_path / "compiled"
    ckpt = ckpt_format.read(run / "checkpoints" / "latest.pt")
    losses = [
        json.loads(line)["loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert ckpt["step"] == 3 and len(losses) == 3 and all(map(math.isfinite, losses))
    assert not any(k.startswith("_orig_mod") for k in ckpt["state_dict"])  # the raw model's keys
    loaded = open_clip.create_model(
        ckpt["model_name"], pretrained=str(run / "checkpoints" / "latest.pt")
    )
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][key]), key


def test_register_configs_lets_plain_open_clip_load_our_checkpoint(tmp_path):
    """The README's open_clip example, in a fresh interpreter (no trainer import registering the
    names on the side): the weights that load are the checkpoint's, not a random init."""
    import subprocess
    import sys

    bundle = models.create(
        "micro-vit", init_inv_tau=30, learnable_inv_tau=False, device=torch.device("cpu")
    )
    path = ckpt_format.write(
        tmp_path / "latest.pt",
        {
            "state_dict": bundle.model.state_dict(),
            "model_name": bundle.name,
            "model_cfg": bundle.cfg,
        },
    )
    expected = float(sum(p.double().sum() for p in bundle.model.state_dict().values()))
    code = (
        "import open_clip, torch\n"
        "from cloob.trainer.models import register_configs\n"
        "assert 'micro-vit' in register_configs()\n"
        f"model, _, _ = open_clip.create_model_and_transforms('micro-vit', "
        f"pretrained={str(path)!r})\n"
        "print(float(sum(p.double().sum() for p in model.state_dict().values())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert abs(float(out.stdout.split()[-1]) - expected) < 1e-6 * max(1.0, abs(expected))


def test_schedule_is_learning_rate_and_saves_its_fields():
    from dataclasses import asdict

    from cloob.trainer.optim import Schedule

    kw = dict(base_lr=1.0, warmup=10, total=110, kind="cosine-restarts", cycles=4)
    schedule = Schedule(**kw)
    assert [schedule.lr(s) for s in range(0, 130, 7)] == [
        learning_rate(s, **kw) for s in range(0, 130, 7)
    ]
    assert asdict(schedule) == kw  # the checkpoint's `scheduler` entry (plus the step), as before


@pytest.mark.parametrize("scaled", [False, True])
def test_apply_gradients_clips_the_true_gradient(scaled):
    """One clip path for both: with a grad scaler the gradients are unscaled before the clip, so the
    update is the one without a scaler (a step of norm lr × clip)."""
    from cloob.trainer.optim import apply_gradients

    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
    loss = (w * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    apply_gradients(opt, scaler, [w], clip_norm=1.0)
    assert torch.allclose(w.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))


def test_validate_config_reads_only_the_config(tmp_path):
    """Flags are judged without looking outside the config; what they point at is checked next."""
    from cloob.common.cli import UsageError
    from cloob.trainer.loop import check_inputs, load_resume_state, resolved, validate_config

    cfg = TrainConfig(
        data=DataConfig(train_data=str(tmp_path / "missing.csv")),
        model=ModelConfig(model=str(tmp_path / "missing.json"), method="hopfield-infonce"),
        run=RunConfig(logs=str(tmp_path), name="r", resume=str(tmp_path / "none.pt")),
    )
    given = cfg.to_dict()
    validate_config(cfg)
    assert cfg.to_dict() == given  # judging changes nothing; `resolved` fills the defaults
    cfg = resolved(cfg)
    assert (cfg.model.method, cfg.model.init_inv_tau) == ("hopfield_infonce", 30.0)
    with pytest.raises(UsageError, match="not found"):
        check_inputs(cfg)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):  # the CLI's `error:` line
        load_resume_state(cfg)
    assert not any(tmp_path.iterdir())
