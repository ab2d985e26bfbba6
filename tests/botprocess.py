"""`bot serve` as its own process, for tests that stop it the hard way (SIGINT, SIGKILL) and start it again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BOT = REPO / ".venv" / "bin" / "bot"
READY_TIMEOUT_S = 120.0


def wait_until(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)


class BotProcess:
    """`bot serve --config CONFIG` on `port`; its log (stderr and stdout) goes to `log_path`."""

    def __init__(self, config: Path, port: int, log_path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.environ = {**os.environ, "HF_HUB_OFFLINE": "1", **(environ or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BotProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BOT), "serve", "--config", str(self.config)], stdout=log, stderr=log, env=self.environ,
                # Ctrl-C must reach it even when the suite itself runs with SIGINT ignored (a background job).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
        wait_until(lambda: self.health() is not None or self._exited(), "the server to answer /health", READY_TIMEOUT_S)
        assert not self._exited(), f"bot serve exited early:\n{self.log()[-3000:]}"
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.url}/health", timeout=10, trust_env=False)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed, as a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGINT, as Ctrl-C: a clean shutdown; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def __enter__(self) -> BotProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
