"""`bot model serve`: run the dialogue model's OpenAI-compatible server (vLLM on GPU hosts, `transformers
serve` on CPU), wait until it is ready, and stop it cleanly (SIGTERM to its process group, then SIGKILL)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType, TracebackType
from typing import TextIO

from bot.config import ModelServerSettings

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'supportbot[vllm]'"


class VllmNotInstalledError(RuntimeError):
    """vLLM is not importable from this Python environment."""


class ModelServerError(RuntimeError):
    """The model server could not be started, exited before it was ready, or was not ready in time."""


def vllm_executable() -> list[str]:
    """How to run `vllm` for this interpreter: its console script beside sys.executable, else `python -m`.

    PATH is not searched: a `vllm` from another environment could be a different version than the one installed here.
    """
    if importlib.util.find_spec("vllm") is None:
        raise VllmNotInstalledError(
            f"vLLM is not installed in this Python environment ({sys.executable}); "
            f"on a GPU host install it with: {INSTALL_HINT}"
        )
    script = Path(sys.executable).with_name("vllm")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main"]  # what the `vllm` console script runs


def _lora_module(name: str, path: Path) -> str:
    # vLLM reads `name=path`, or JSON when either part contains "=" or "," (its plain form cannot carry those).
    if "=" in name + str(path) or "," in name + str(path):
        return json.dumps({"name": name, "path": str(path)})
    return f"{name}={path}"


def vllm_command(settings: ModelServerSettings, executable: list[str]) -> list[str]:
    """The `vllm serve` command line for these settings; `extra_args` come last, as they are."""
    command = [*executable, "serve", settings.model, "--host", settings.host, "--port", str(settings.port)]
    if settings.served_model_name:
        command += ["--served-model-name", settings.served_model_name]
    if settings.max_model_len is not None:
        command += ["--max-model-len", str(settings.max_model_len)]
    command += [
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
    ]
    if settings.lora_adapters or settings.runtime_lora:
        command += ["--enable-lora"]
    if settings.max_lora_rank is not None:
        command += ["--max-lora-rank", str(settings.max_lora_rank)]
    if settings.lora_adapters:
        modules = [_lora_module(name, path) for name, path in settings.lora_adapters.items()]
        command += ["--lora-modules", *modules]
    return command + list(settings.extra_args)


def vllm_environment(settings: ModelServerSettings) -> dict[str, str]:
    """What vLLM needs in its environment beyond ours: the runtime LoRA switch, when asked for."""
    return {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if settings.runtime_lora else {}


def transformers_command(settings: ModelServerSettings, folder: Path) -> list[str]:
    """`transformers serve FOLDER` for these settings (a plain model folder: the base, or base + adapter merged)."""
    script = Path(sys.executable).with_name("transformers")
    executable = [str(script)] if script.is_file() else [sys.executable, "-m", "transformers.cli.transformers"]
    return [*executable, "serve", str(folder), "--host", settings.host, "--port", str(settings.port),
            "--device", settings.device, *settings.extra_args]  # fmt: skip


def _client_host(settings: ModelServerSettings) -> str:
    """The host clients on this machine connect to (a wildcard bind address is reached over loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)


def base_url(settings: ModelServerSettings) -> str:
    host = _client_host(settings)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def _health_status(host: str, port: int) -> int | None:
    """GET /health: the HTTP status, or None while nothing answers. (No proxy settings apply, no log lines.)"""
    connection = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class ModelServerProcess:
    """The model server (vLLM unless `command` says otherwise) as a child process in its own process group:
    start, wait until /health answers 200, stop.

    The child's output is copied line by line to `echo` (if given); its last lines are kept for error messages.
    """

    def __init__(
        self,
        settings: ModelServerSettings,
        executable: Sequence[str],
        *,
        command: Sequence[str] | None = None,  # instead of vLLM's (`executable` is then unused)
        environment: dict[str, str] | None = None,
        name: str = "vLLM",
        echo: TextIO | None = None,
        stop_timeout_s: float = 30.0,
        poll_interval_s: float = 0.25,
        tail_lines: int = 40,
    ) -> None:
        self.command = list(command) if command is not None else vllm_command(settings, list(executable))
        self.environment = environment if environment is not None else vllm_environment(settings)
        self.name = name
        self.url = base_url(settings)
        self._host, self._port = _client_host(settings), settings.port
        self.ready_timeout_s = settings.ready_timeout_s
        self._echo = echo
        self._stop_timeout_s = stop_timeout_s
        self._poll_interval_s = poll_interval_s
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._tail_lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def output_tail(self) -> str:
        with self._tail_lock:
            return "\n".join(self._tail)

    def start(self) -> None:
        logger.info("starting %s: %s", self.name, shlex.join(self.command))
        env = {**os.environ, **self.environment, "PYTHONUNBUFFERED": "1"}  # its log lines as they happen
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches its workers too
                env=env,
            )
        except OSError as err:
            raise ModelServerError(f"cannot start {self.command[0]}: {err}") from err
        self._started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read_output, args=(self._proc,), daemon=True)
        self._reader.start()

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._tail_lock:
                self._tail.append(line)
            if self._echo is not None:
                try:
                    self._echo.write(line + "\n")
                    self._echo.flush()
                except (OSError, ValueError):  # closed or broken stream: keep draining the pipe
                    pass

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the model server was not started")
        return self._proc

    def _drain_output(self) -> None:
        if self._reader is not None and self._proc is not None and self._proc.poll() is not None:
            self._reader.join(timeout=2.0)  # a surviving grandchild may hold the pipe open: don't wait forever

    def _failure(self, what: str) -> ModelServerError:
        self._drain_output()
        tail = self.output_tail()
        return ModelServerError(f"{what}; its last output:\n{tail}" if tail else f"{what}; it printed nothing")

    def wait_ready(self) -> float:
        """Poll GET /health until 200; the seconds it took. Raises ModelServerError on early exit or timeout."""
        proc = self._running()
        deadline = self._started_at + self.ready_timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                raise self._failure(f"{self.name} exited with code {code} before it was ready")
            if _health_status(self._host, self._port) == 200:
                break
            if time.monotonic() >= deadline:
                raise self._failure(f"{self.name} was not ready after {self.ready_timeout_s:g} s ({self.url}/health)")
            time.sleep(self._poll_interval_s)
        seconds = time.monotonic() - self._started_at
        logger.info("%s ready after %.1f s at %s", self.name, seconds, self.url)
        return seconds

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        code = self._running().wait()
        self._drain_output()
        return code

    def _signal_group(self, signum: signal.Signals) -> None:
        with suppress(ProcessLookupError):  # already gone
            os.killpg(self._running().pid, signum)

    def stop(self) -> int | None:
        """SIGTERM to the server's process group, then SIGKILL after `stop_timeout_s`; its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            logger.info("stopping %s (pid %d): SIGTERM", self.name, proc.pid)
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %g s: SIGKILL", self.name, self._stop_timeout_s)
                self._signal_group(signal.SIGKILL)
                proc.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: don't wait any longer
                logger.warning("interrupted again: SIGKILL")
                self._signal_group(signal.SIGKILL)
                proc.wait()
                raise
        self._drain_output()
        logger.info("%s stopped (exit code %d)", self.name, proc.returncode)
        return proc.returncode

    def __enter__(self) -> ModelServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, docker stop, kill) stops the server the same way Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_until_stopped(process: ModelServerProcess, on_ready: Callable[[], None]) -> int | None:
    """Start the server, call `on_ready`, and block until Ctrl-C or SIGTERM (None: stopped on request) or until
    the server exits by itself (its exit code). Raises ModelServerError when it does not get ready."""
    with _sigterm_as_interrupt():
        try:
            with process:
                on_ready()
                return process.wait()
        except KeyboardInterrupt:
            return None
