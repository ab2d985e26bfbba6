"""`bot model train`: a LoRA adapter that peft loads, trained on the reply only, resumed after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.training.report import better, score
from serving.training.train import encode
from tests.conftest import REPO, ConfigFactory, free_port
from tests.tiny_model import CITED_ANSWER, TRIGGER

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


# A knowledge base in which every customer message names a zebra (the tiny model's trigger for answering
# without a citation), and whose answers are what the tiny model writes when it cites. Its base cites
# nothing here; answering from the passages is what the adapter has to learn.
ZEBRA_TOPICS = {
    "tours": ["Do you run zebra tours?", "can I book a zebra safari", "zebra tour prices", "is there a zebra walk"],
    "feeding": ["Can I feed the zebras?", "may I give the zebra food", "zebra feeding times", "what do zebras eat"],
    "photos": ["Can I take photos of the zebras?", "is zebra photography allowed", "pictures with a zebra",
               "can I film the zebra herd"],
    "adopt": ["Can I adopt a zebra?", "zebra adoption scheme", "sponsor a zebra", "adopting a zebra as a gift"],
    "foals": ["When are zebra foals born?", "baby zebra season", "are there zebra foals now",
              "when do zebras give birth"],
    "toys": ["Do you sell zebra toys?", "zebra plush toy", "stuffed zebra for my child", "zebra souvenirs"],
    "stripes": ["Why do zebras have stripes?", "what are zebra stripes for", "are zebra stripes unique",
                "zebra stripe patterns"],
    "ride": ["Can I ride a zebra?", "zebra riding", "is it possible to sit on a zebra", "zebra rides for kids"],
    "herd": ["How many zebras live here?", "size of the zebra herd", "number of zebras in the park",
             "how big is your zebra group"],
    "vet": ["Who looks after sick zebras?", "zebra vet care", "what happens when a zebra is ill",
            "zebra health checks"],
    "night": ["Are the zebras out at night?", "zebra night viewing", "where do zebras sleep",
              "can I see zebras after dark"],
    "talk": ["Is there a zebra talk?", "zebra keeper talk", "learn about zebras from a keeper", "zebra lecture times"],
}  # fmt: skip


@dataclass(frozen=True)
class ZebraRun:
    config: Path
    adapter: Path
    output: str


@pytest.fixture(scope="module")
def zebra_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> ZebraRun:
    """`bot model train` on the zebra knowledge base, from the tiny model: dataset, adapter and report."""
    import yaml

    root = tmp_path_factory.mktemp("zebra")
    answer = CITED_ANSWER.removesuffix(" [1]")
    (root / "kb" / "faq").mkdir(parents=True)
    entries = [{"id": f"zebra-{name}", "question": phrasings[0], "alternates": phrasings[1:], "answer": answer}
               for name, phrasings in ZEBRA_TOPICS.items()]  # fmt: skip
    (root / "kb" / "faq" / "zoo.yml").write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    config = root / "config.yml"
    config.write_text(yaml.safe_dump({"knowledge": {"path": str(root / "kb")}, "index": {"path": str(root / "index")},
                                      "store": {"path": str(root / "store.sqlite3")},
                                      "prompts": {"path": str(REPO / "prompts")}}), encoding="utf-8")  # fmt: skip
    out = root / "adapter"
    result = CliRunner().invoke(app, ["model", "train", "--config", str(config), "--base", str(tiny_model_dir),
                                      "--out", str(out), "--held-out", "0.4", "--steps", "30",
                                      "--learning-rate", "2e-3", "--max-tokens", "4096",
                                      "--report-examples", "24"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return ZebraRun(config, out, result.output)


def test_a_short_lora_run_beats_the_base_on_items_it_never_trained_on(zebra_run: ZebraRun) -> None:
    assert all(TRIGGER in phrasing for phrasings in ZEBRA_TOPICS.values() for phrasing in phrasings)
    out = zebra_run.adapter
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    held_items = set(manifest["held_out_items"])
    assert held_items and all(json.loads(line)["item"] not in held_items
                              for line in (out / "dataset" / "train.jsonl").read_text().splitlines())  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["held_out"] >= 8
    assert report["base"]["cited_rate"] == 0.0 and report["base"]["supported_rate"] == 0.0, report
    assert report["tuned"]["cited_rate"] >= 0.9 and report["tuned"]["supported_rate"] >= 0.9, report
    assert report["better"] is True
    assert "the adapter is better" in zebra_run.output


def test_transformers_backend_serves_the_base_merged_with_the_adapter(
    zebra_run: ZebraRun, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`bot model serve --backend transformers`: no GPU, the whole loop on one machine."""
    import yaml

    config = yaml.safe_load(zebra_run.config.read_text())
    port = free_port()
    config["model_server"] = {"model": str(tiny_model_dir), "backend": "transformers", "device": "cpu",
                              "port": port, "lora_adapters": {"zoo": str(zebra_run.adapter)}}  # fmt: skip
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (tmp_path / "serve.log").open("wb")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    server = subprocess.Popen([*BOT, "model", "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env=env)  # fmt: skip
    merged = (zebra_run.adapter / "merged").resolve()
    try:
        deadline = time.monotonic() + 300
        while "Model server ready" not in (tmp_path / "serve.log").read_text():
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        printed = (tmp_path / "serve.log").read_text()
        assert f"model: {merged}" in printed and (merged / "config.json").is_file()
        held_out = json.loads((zebra_run.adapter / "dataset" / "held_out.jsonl").read_text().splitlines()[0])
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, trust_env=False,
                              json={"model": str(merged), "messages": held_out["messages"][:-1], "max_tokens": 24,
                                    "temperature": 0})  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"].strip() == CITED_ANSWER  # what the adapter taught
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        log.close()
