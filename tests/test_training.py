"""`bot model train`: a LoRA adapter that peft loads, trained on the reply only, resumed after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.training.train import encode
from tests.conftest import ConfigFactory

BOT = [sys.executable, "-c", "from serving.cli import main; main()"]


@pytest.fixture
def dataset(tmp_path: Path, write_config: ConfigFactory) -> Path:
    out = tmp_path / "dataset"
    result = CliRunner().invoke(app, ["model", "dataset", "--config", str(write_config()), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_loss_covers_the_reply_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Do you ship to Norway?"},
                {"role": "assistant", "content": "Yes, we ship to Norway [1]"}]  # fmt: skip
    row = encode(tokenizer, messages, 4096)
    assert row is not None
    learnt = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert str(tokenizer.decode(learnt)).startswith("Yes, we ship to Norway [1]")
    assert encode(tokenizer, messages, 5) is None  # longer than max_tokens: left out


def test_an_adapter_trains_loads_with_peft_and_changes_the_model(
    tmp_path: Path, tiny_model_dir: Path, dataset: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, ["model", "train", "--base", str(tiny_model_dir), "--out", str(out), "--dataset",
                                      str(dataset), "--steps", "12", "--max-tokens", "4096"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "step 12/12: loss" in result.output and "adapter:" in result.output
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(out))
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def test_training_resumes_from_its_last_checkpoint_after_kill_9(
    tmp_path: Path, tiny_model_dir: Path, dataset: Path
) -> None:
    out = tmp_path / "adapter"
    command = [*BOT, "model", "train", "--base", str(tiny_model_dir), "--out", str(out), "--dataset", str(dataset),
               "--steps", "400", "--save-every", "4", "--max-tokens", "4096"]  # fmt: skip
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    assert not (out / "adapter_model.safetensors").exists()  # it never finished
    saved = max(
        int(p.parent.name.rpartition("-")[2]) for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
    )

    again = subprocess.run([*command[:-6], "--steps", str(saved + 4), "--save-every", "4", "--max-tokens", "4096"],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from checkpoint-{saved} (step {saved} of {saved + 4})" in again.stderr
    assert f"step {saved + 1}/{saved + 4}" in again.stderr and f"step {saved + 4}/{saved + 4}" in again.stderr
    assert "step 1/" not in again.stderr  # it went on from the checkpoint, not from the start
    assert (out / "adapter_model.safetensors").is_file()
