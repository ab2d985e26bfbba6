"""`bot model train`: a LoRA adapter that peft loads, trained on the reply only, resumed after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.training.report import better, score
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
                                      str(dataset), "--steps", "12", "--max-tokens", "4096",
                                      "--report-examples", "0"])  # fmt: skip
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
               "--report-examples", "0", "--steps", "400", "--save-every", "4", "--max-tokens", "4096"]  # fmt: skip
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


PROMPT = ("Knowledge passages:\n<context>\n[1] Do you ship to Norway? (source: faq/shipping.yml)\nYes, we ship to "
          "Norway within five working days.\n\n[2] Are returns free? (source: faq/returns.yml)\nReturns are free "
          "within 30 days.\n</context>\n\n<customer_message>\nship to norway?\n</customer_message>")  # fmt: skip


def chat(target: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": target}]  # fmt: skip


def test_the_report_scores_citations_support_and_declines() -> None:
    answer = chat("Yes, we ship to Norway within five working days. [1]")
    assert score(answer, "Yes, we ship to Norway within five working days [1]", 5.0).supported is True
    cites_other = score(answer, "Returns cost nothing for a month [1]", 5.0)
    assert cites_other.cited is True and cites_other.supported is False  # a provided passage, but not what it says
    assert score(answer, "We ship there [3]", 5.0).cited is False  # [3] was never shown
    assert score(answer, "We ship to Norway.", 5.0).cited is False
    decline = chat("I'm not sure I can answer that correctly.")
    assert score(decline, "I'm not sure I can answer that correctly.", 5.0).declined is True
    assert score(decline, "Yes, we ship to Norway [1]", 5.0).declined is False
    assert score(decline, "Sure thing!", 5.0).cited is None  # a decline is not counted as an answer


def test_an_adapter_is_marked_better_only_when_it_is() -> None:
    base = {"cited_rate": 0.5, "supported_rate": 0.2, "declined_when_expected": 0.4}
    assert better(base, {"cited_rate": 0.6, "supported_rate": 0.2, "declined_when_expected": 0.4})
    assert not better(base, base)  # no gain
    assert not better(base, {"cited_rate": 0.9, "supported_rate": 0.9, "declined_when_expected": 0.3})  # one worse
    assert better(base | {"declined_when_expected": None}, {"cited_rate": 0.6, "supported_rate": 0.3,
                                                            "declined_when_expected": 0.0})  # fmt: skip


def test_training_ends_with_the_base_and_tuned_side_by_side(
    tmp_path: Path, tiny_model_dir: Path, dataset: Path
) -> None:
    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, ["model", "train", "--base", str(tiny_model_dir), "--out", str(out), "--dataset",
                                      str(dataset), "--steps", "4", "--max-tokens", "4096",
                                      "--report-examples", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["held_out"] == 8 and set(report) == {"base", "tuned", "held_out", "better"}
    for side in ("base", "tuned"):
        assert {"cited_rate", "supported_rate", "declined_when_expected", "mean_length_chars", "latency_ms_p50"} <= set(
            report[side]
        )
    assert report["better"] == better(report["base"], report["tuned"])
    assert "cited_rate" in result.output and "held-out examples: 8" in result.output
