"""A real redis-server on a loopback port for the tests (Debian's package; scripts/test.sh installs it as root)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NEEDS_REDIS = pytest.mark.needs(
    "Debian's redis-server (for coordination across processes)",
    Path(REDIS_SERVER).exists(),
    "install it with `apt-get install redis-server` (scripts/test.sh does, when run as root)",
)


class RedisServer:
    """`redis-server` with nothing saved to disk, on `port`, until stop()."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = (self._folder / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self._folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self._process.returncode}); see {self._folder}/redis.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout:g} s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
