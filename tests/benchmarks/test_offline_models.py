"""Loading a model folder reaches no network unless the user allows it.

An exported folder whose text tower names a Hugging Face model would make transformers ask the Hub
for it. The CLI runs in a child process with HF_ENDPOINT on a loopback "hub" that counts requests
(huggingface_hub reads HF_ENDPOINT once, at import): without CLOOB_ALLOW_DOWNLOADS it gets none
and the user gets one line saying what the folder wants and how to allow it; with it, the request
is made (answered 404 here) and still ends in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.benchmark_data import class_tree, tiny_cfg, write_hub_folder, write_tree
from support.server import LoopbackServer

WANTS = "nobody/no-such-model"


def zeroshot(tmp_path: Path, hub: LoopbackServer, **env: str) -> subprocess.CompletedProcess:
    cfg = tiny_cfg()
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_model_name": WANTS}
    folder = write_hub_folder(tmp_path / "model", cfg)
    task = write_tree(tmp_path / "task", class_tree({"a": 1, "b": 1}))
    variables = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CLOOB_ALLOW", "TRANSF"))
    }
    variables.update(HF_ENDPOINT=hub.base_url, HF_HOME=str(tmp_path / "hf-cache"), **env)
    return subprocess.run(
        [sys.executable, "-c", "from cloob.benchmarks.cli import main; main()", "zeroshot"]
        + ["--ckpt", str(folder), "--dataset-dir", str(task), "--out", str(tmp_path / "out")]
        + ["--workers", "0", "--no-progress"],
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.slow  # a child interpreter importing torch, open_clip and transformers (> 15 s)
def test_a_model_folder_makes_no_request_unless_allowed(tmp_path):
    with LoopbackServer(tmp_path / "www") as hub:
        line = one_error_line(zeroshot(tmp_path, hub))
        assert hub.total_hits == 0
    assert f"wants the Hugging Face model '{WANTS}', which is not in the local cache" in line
    assert "set CLOOB_ALLOW_DOWNLOADS=1" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the same child interpreter
def test_allowed_downloads_reach_the_hub_and_a_404_is_one_line(tmp_path):
    with LoopbackServer(tmp_path / "www") as hub:
        line = one_error_line(zeroshot(tmp_path, hub, CLOOB_ALLOW_DOWNLOADS="1"))
        assert hub.total_hits > 0
    assert f"its text tower's Hugging Face model '{WANTS}' could not be loaded" in line
