"""`bot model load-adapter` against a running server, and the vLLM flags that let it (runtime LoRA).

vLLM needs a GPU, so the server here is a loopback stand-in speaking vLLM's runtime LoRA endpoints
(tests/vllm_lora.py, named as a stand-in); the adapters are real peft adapters of the tiny model.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.config import ModelServerSettings
from serving.cli import app
from serving.lora_runtime import NO_RUNTIME_ENDPOINT
from serving.model_server import ModelServerProcess, vllm_command
from tests.conftest import free_port
from tests.vllm_lora import VllmLoraStandIn


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter of the tiny model, as `bot model train` writes one (untrained: loading is the point)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter") / "returns-v1"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))  # fmt: skip
    model.save_pretrained(str(out))
    return out


@pytest.fixture
def stand_in() -> Iterator[VllmLoraStandIn]:
    with VllmLoraStandIn(free_port()) as server:
        yield server


def load(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["model", "load-adapter", *args])
    return result.exit_code, result.output


def test_an_adapter_is_loaded_into_the_running_server_and_served_under_its_name(
    stand_in: VllmLoraStandIn, adapter: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"llm: {{base_url: '{stand_in.url}/v1', model: support}}\n", encoding="utf-8")
    code, output = load("returns", str(adapter), "--config", str(config))  # the server from llm.base_url
    assert code == 0, output
    assert "Success: LoRA adapter 'returns' added successfully." in output
    assert "llm.model: returns" in output
    assert stand_in.loaded == {"returns": str(adapter.resolve())}

    code, output = load("returns", str(adapter), "--config", str(config))
    assert code == 1 and "has already been loaded" in output and "--replace" in output

    code, output = load("returns", str(adapter), "--config", str(config), "--replace")
    assert code == 0, output
    assert [call for call, _ in stand_in.calls] == ["load", "load", "unload", "load"]
    assert list(stand_in.loaded) == ["returns"]


def test_the_path_the_server_sees_can_differ_from_the_local_one(
    stand_in: VllmLoraStandIn, adapter: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("{}\n", encoding="utf-8")
    code, output = load("faq", str(adapter), "--config", str(config), "--url", stand_in.url,
                        "--server-path", "/mnt/adapters/faq")  # fmt: skip
    assert code == 1 and "No adapter found for /mnt/adapters/faq" in output  # the server's own refusal, shown
    assert stand_in.loaded == {}


def test_a_folder_that_is_not_an_adapter_is_refused_before_anything_is_sent(
    stand_in: VllmLoraStandIn, tmp_path: Path
) -> None:
    folder = tmp_path / "not-an-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    code, output = load("faq", str(folder), "--url", stand_in.url, "--config", str(tmp_path / "absent.yml"))
    assert code == 2 and "adapter_model.safetensors missing" in output
    assert stand_in.calls == []


def test_a_server_without_runtime_updates_gets_an_explanation(adapter: Path, tmp_path: Path) -> None:
    with VllmLoraStandIn(free_port(), runtime_updates=False) as server:
        code, output = load("faq", str(adapter), "--url", server.url, "--config", str(tmp_path / "absent.yml"))
    assert code == 1 and NO_RUNTIME_ENDPOINT.split(":")[0] in output and "runtime_lora: true" in output


def test_the_api_key_comes_from_the_environment(adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with VllmLoraStandIn(free_port(), api_key="s3cret") as server:
        config = tmp_path / "config.yml"
        config.write_text(f"llm: {{base_url: '{server.url}/v1', model: support, api_key_env: VLLM_KEY}}\n",
                          encoding="utf-8")  # fmt: skip
        code, output = load("faq", str(adapter), "--config", str(config))
        assert code == 1 and "401" in output
        monkeypatch.setenv("VLLM_KEY", "s3cret")
        code, output = load("faq", str(adapter), "--config", str(config))
        assert code == 0, output
        assert "s3cret" not in output
        assert list(server.loaded) == ["faq"]


def test_runtime_lora_turns_on_lora_and_vllms_runtime_switch() -> None:
    settings = ModelServerSettings(model="/models/base", runtime_lora=True, max_lora_rank=32)
    command = vllm_command(settings, ["vllm"])
    assert "--enable-lora" in command and "--lora-modules" not in command
    assert command[command.index("--max-lora-rank") + 1] == "32"
    process = ModelServerProcess(settings, [sys.executable])
    assert process.environment == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    plain = ModelServerProcess(ModelServerSettings(model="/models/base"), [sys.executable])
    assert plain.environment == {} and "--enable-lora" not in plain.command
