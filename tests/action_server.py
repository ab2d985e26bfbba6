"""A real rasa-sdk action server on loopback, from the action server's own environment (.venv-actions)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.conftest import REPO, free_port

ACTIONS_PYTHON = REPO / ".venv-actions" / "bin" / "python"
PLUGINS = REPO / "actions" / "plugins"


class ActionServer:
    """`python -m rasa_sdk --actions PACKAGE` with the project's token plugin, bound to 127.0.0.1."""

    def __init__(self, package: str, work: Path, token: str | None = None) -> None:
        if not ACTIONS_PYTHON.exists():
            raise RuntimeError(f"{ACTIONS_PYTHON} is missing: run scripts/setup.sh (it makes .venv-actions)")
        self.package = package
        self.work = work
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.orders_db = work / "orders.sqlite3"
        self.log = work / f"action-server-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ActionServer:
        self.work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SANIC_HOST": "127.0.0.1", "PYTHONPATH": f"{PLUGINS}{os.pathsep}{REPO}",
               "NORTHWIND_ORDERS_DB": str(self.orders_db), "SUPPORTBOT_ACTIONS_TOKEN": self.token or ""}  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(ACTIONS_PYTHON), "-m", "rasa_sdk", "--actions", self.package, "--port", str(self.port)],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends Sanic's worker process too
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the action server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the action server did not answer /health within 60 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):  # a worker still busy (a slow action) when its server ended
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process = None

    def __enter__(self) -> ActionServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":  # for trying an action package by hand
    with ActionServer(sys.argv[1] if len(sys.argv) > 1 else "actions", Path.cwd()) as server:
        print(server.url)
        input("press Enter to stop")
