"""`bot model serve`: the vLLM command line, the missing-vLLM and missing-section errors, and the server's
lifecycle (start, ready, early exit, stop, Ctrl-C).

vLLM needs a GPU and is not installed here, so the lifecycle runs against VLLM_STAND_IN: a small real HTTP server
process that takes vLLM's command line and serves GET /health, launched by the same ModelServerProcess code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bot.config import ModelServerSettings, load_config
from serving.cli import app
from serving.model_server import ModelServerError, ModelServerProcess, vllm_command
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
BOT = REPO / ".venv" / "bin" / "bot"

# A stand-in for `vllm serve`: parses the flags the bot passes the way vLLM does (several values after
# --served-model-name and --lora-modules), then serves GET /health on --host/--port. Switches for the tests:
# --stand-in-listen-after S (vLLM only listens once the model is loaded), --stand-in-exit-code N (a crash
# at start-up), --stand-in-unhealthy (/health answers 503), --stand-in-ignore-sigterm, --stand-in-pid-file.
VLLM_STAND_IN = '''\
"""Stand-in for `vllm serve` in tests (vLLM cannot run here without a GPU)."""
import argparse, http.server, json, os, signal, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("subcommand", choices=["serve"])
parser.add_argument("model")
parser.add_argument("--host", default=None)
parser.add_argument("--port", type=int, default=8000)
parser.add_argument("--served-model-name", nargs="+")
parser.add_argument("--max-model-len", type=int)
parser.add_argument("--gpu-memory-utilization", type=float)
parser.add_argument("--tensor-parallel-size", type=int)
parser.add_argument("--enable-lora", action="store_true")
parser.add_argument("--lora-modules", nargs="+", default=[])
parser.add_argument("--stand-in-listen-after", type=float, default=0.0)
parser.add_argument("--stand-in-exit-code", type=int)
parser.add_argument("--stand-in-unhealthy", action="store_true")
parser.add_argument("--stand-in-ignore-sigterm", action="store_true")
parser.add_argument("--stand-in-pid-file")
args, unknown = parser.parse_known_args()
print(f"stand-in vllm serve {args.model} on port {args.port}", flush=True)
if args.stand_in_pid_file:
    with open(args.stand_in_pid_file, "w") as f:
        f.write(str(os.getpid()))
if args.stand_in_exit_code is not None:
    print("RuntimeError: no CUDA GPUs are available (stand-in)", file=sys.stderr, flush=True)
    sys.exit(args.stand_in_exit_code)

def on_sigterm(signum, frame):
    print("stand-in got SIGTERM, shutting down", flush=True)
    os._exit(0)

signal.signal(signal.SIGTERM, signal.SIG_IGN if args.stand_in_ignore_sigterm else on_sigterm)
time.sleep(args.stand_in_listen_after)
parsed = {key: value for key, value in vars(args).items() if not key.startswith("stand_in")}
parsed["unknown"] = unknown

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = 404, b""
        if self.path == "/health":
            status = 503 if args.stand_in_unhealthy else 200
        elif self.path == "/stand-in/args":
            status, body = 200, json.dumps(parsed).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.HTTPServer((args.host or "127.0.0.1", args.port), Handler).serve_forever()
'''


def stand_in_script(tmp_path: Path) -> Path:
    path = tmp_path / "vllm_stand_in.py"
    path.write_text(VLLM_STAND_IN, encoding="utf-8")
    return path


def stand_in_settings(*extra: str, ready_timeout_s: float = 30.0) -> ModelServerSettings:
    return ModelServerSettings(
        model="/models/support-7b",
        served_model_name="support",
        port=free_port(),
        extra_args=list(extra),
        ready_timeout_s=ready_timeout_s,
    )


def answers_503(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False).status_code == 503
    except httpx.TransportError:
        return False


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the command line ---------------------------------------------------------------------------------


def test_command_line_from_config_has_every_flag_and_anchors_local_paths(tmp_path: Path) -> None:
    (tmp_path / "models" / "support-7b").mkdir(parents=True)
    (tmp_path / "adapters" / "returns").mkdir(parents=True)
    config = tmp_path / "config.yml"
    config.write_text(
        "model_server:\n"
        "  model: models/support-7b\n"
        "  served_model_name: support\n"
        "  host: 0.0.0.0\n"
        "  port: 8011\n"
        "  max_model_len: 8192\n"
        "  gpu_memory_utilization: 0.85\n"
        "  tensor_parallel_size: 4\n"
        "  lora_adapters:\n"
        "    returns: adapters/returns\n"
        "    billing: /srv/adapters/billing\n"
        "  extra_args: [--max-lora-rank, '64', --dtype, bfloat16]\n",
        encoding="utf-8",
    )
    settings = load_config(config).model_server
    assert settings is not None

    assert vllm_command(settings, ["/venv/bin/vllm"]) == [
        "/venv/bin/vllm",
        "serve",
        str(tmp_path / "models" / "support-7b"),
        "--host",
        "0.0.0.0",
        "--port",
        "8011",
        "--served-model-name",
        "support",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.85",
        "--tensor-parallel-size",
        "4",
        "--enable-lora",
        "--lora-modules",
        f"returns={tmp_path / 'adapters' / 'returns'}",
        "billing=/srv/adapters/billing",
        "--max-lora-rank",
        "64",
        "--dtype",
        "bfloat16",
    ]


def test_minimal_command_leaves_vllm_defaults_alone_and_keeps_a_model_id_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("model_server:\n  model: Qwen/Qwen2.5-7B-Instruct\n", encoding="utf-8")
    settings = load_config(config).model_server
    assert settings is not None

    command = vllm_command(settings, [sys.executable, "-m", "vllm.entrypoints.cli.main"])
    assert command == [
        *[sys.executable, "-m", "vllm.entrypoints.cli.main"],
        *["serve", "Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1", "--port", "8001"],
        *["--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "1"],
    ]


def test_adapter_path_with_an_equals_sign_is_passed_in_vllms_json_form() -> None:
    settings = ModelServerSettings(model="m", lora_adapters={"faq": Path("/srv/run=3/faq")})
    command = vllm_command(settings, ["vllm"])
    modules = command[command.index("--lora-modules") + 1 :]
    assert [json.loads(m) for m in modules] == [{"name": "faq", "path": "/srv/run=3/faq"}]


# --- the CLI's errors ---------------------------------------------------------------------------------


def test_model_serve_without_vllm_installed_exits_2_with_the_install_hint(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("model_server:\n  model: Qwen/Qwen2.5-7B-Instruct\n", encoding="utf-8")
    result = subprocess.run(
        [str(BOT), "model", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "vLLM is not installed" in lines[0] and "pip install 'supportbot[vllm]'" in lines[0]
    assert "--backend transformers" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_model_serve_without_a_model_server_section_names_the_missing_section(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("bot_name: Northwind support\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["model", "serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "no `model_server:` section" in result.output and str(config) in result.output


# --- the lifecycle, against the stand-in ---------------------------------------------------------------


def test_start_waits_until_health_answers_and_the_command_reaches_the_server(tmp_path: Path) -> None:
    settings = stand_in_settings("--stand-in-listen-after", "0.6")
    settings = settings.model_copy(update={"lora_adapters": {"returns": Path("/srv/returns")}})
    process = ModelServerProcess(settings, [sys.executable, str(stand_in_script(tmp_path))], stop_timeout_s=30)
    process.start()
    try:
        seconds = process.wait_ready()
        assert seconds >= 0.6  # it waited for the server to listen
        health = httpx.get(f"{process.url}/health", trust_env=False)
        assert health.status_code == 200
        parsed = httpx.get(f"{process.url}/stand-in/args", trust_env=False).json()
        assert parsed["model"] == "/models/support-7b" and parsed["port"] == settings.port
        assert parsed["served_model_name"] == ["support"]
        assert parsed["enable_lora"] is True and parsed["lora_modules"] == ["returns=/srv/returns"]
        assert parsed["unknown"] == []
    finally:
        code = process.stop()
    assert code == 0
    assert "stand-in got SIGTERM" in process.output_tail()  # stopped with SIGTERM, and it shut down on its own
    assert process.pid is not None and not is_running(process.pid)


def test_early_exit_is_reported_with_the_exit_code_and_the_servers_last_output(tmp_path: Path) -> None:
    settings = stand_in_settings("--stand-in-exit-code", "3")
    with pytest.raises(ModelServerError) as caught:  # noqa: SIM117
        with ModelServerProcess(settings, [sys.executable, str(stand_in_script(tmp_path))]):
            pass
    message = str(caught.value)
    # Noticed as an exit, not after ready_timeout_s: that would say "was not ready after 30 s".
    assert "exited with code 3 before it was ready" in message
    assert "RuntimeError: no CUDA GPUs are available (stand-in)" in message


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stand_in_settings("--stand-in-unhealthy", ready_timeout_s=1.0)
    process = ModelServerProcess(settings, [sys.executable, str(stand_in_script(tmp_path))], stop_timeout_s=30)
    start = process.start

    def start_and_wait_until_it_answers() -> None:
        # Its /health answers (503) only once its SIGTERM handler is in place, so the SIGTERM that stops it
        # is handled by the stand-in however slowly it started; the 1 s budget may be spent by then.
        start()
        deadline = time.monotonic() + 30
        while not answers_503(f"{process.url}/health"):
            assert time.monotonic() < deadline, "the stand-in never answered /health"
            time.sleep(0.05)

    monkeypatch.setattr(process, "start", start_and_wait_until_it_answers)
    with pytest.raises(ModelServerError, match=r"not ready after 1 s \(http://127\.0\.0\.1:\d+/health\)"):
        process.__enter__()
    assert process.pid is not None and not is_running(process.pid)
    assert "stand-in got SIGTERM" in process.output_tail()


def test_a_server_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    settings = stand_in_settings("--stand-in-ignore-sigterm")
    process = ModelServerProcess(settings, [sys.executable, str(stand_in_script(tmp_path))], stop_timeout_s=0.5)
    with process:
        pid = process.pid
        assert pid is not None
        started = time.monotonic()
    assert time.monotonic() - started >= 0.5
    assert process.stop() == -signal.SIGKILL
    assert not is_running(pid)
    assert "got SIGTERM" not in process.output_tail()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_bot_model_serve_prints_where_to_point_the_bot_and_stops_the_server_on_ctrl_c_or_sigterm(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # The real `bot model serve`, with the stand-in installed as a `vllm` package on PYTHONPATH: the CLI finds
    # it and runs it as `python -m vllm.entrypoints.cli.main serve ...`, as it would run vLLM itself.
    cli_dir = tmp_path / "stand-in-vllm" / "vllm" / "entrypoints" / "cli"
    cli_dir.mkdir(parents=True)
    for package in (cli_dir, cli_dir.parent, cli_dir.parent.parent):
        (package / "__init__.py").write_text('"""Stand-in for vLLM in tests."""\n', encoding="utf-8")
    (cli_dir / "main.py").write_text(VLLM_STAND_IN, encoding="utf-8")
    port, pid_file = free_port(), tmp_path / "server.pid"
    config = tmp_path / "config.yml"
    config.write_text(
        "model_server:\n"
        "  model: /models/support-7b\n"
        "  served_model_name: support\n"
        f"  port: {port}\n"
        f"  extra_args: [--stand-in-pid-file, {pid_file}]\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stand-in-vllm")}
    bot = subprocess.Popen(
        [str(BOT), "model", "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True, env=env,
        # A shell without job control starts background jobs with SIGINT ignored, and children inherit that:
        # the suite run as `... &` would otherwise wait forever for a Ctrl-C the bot cannot receive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert bot.stderr is not None
    seen: list[str] = []
    server_pid = 0
    try:
        for line in bot.stderr:
            seen.append(line)
            if "llm: {" in line:
                break
        assert f"  llm: {{base_url: http://127.0.0.1:{port}/v1, model: support}}\n" in seen, "".join(seen)
        assert httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200
        server_pid = int(pid_file.read_text())
        bot.send_signal(signum)
        rest = bot.stderr.read()
        assert bot.wait(timeout=30) == 0, rest
    finally:
        for pid in (bot.pid, server_pid):  # never leave either behind, even when the test fails
            if pid and is_running(pid):
                os.kill(pid, signal.SIGKILL)
        bot.wait(timeout=10)
    output = "".join(seen) + rest
    assert "starting vLLM: " in output and " -m vllm.entrypoints.cli.main serve /models/support-7b" in output
    assert "vLLM ready after" in output and "stand-in got SIGTERM" in output and "vLLM stopped (exit code 0)" in output
    assert not is_running(server_pid)
