"""A real Chroma server (`chroma run`, from the chromadb package) on a loopback port for the tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

CHROMA = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "chroma"
NEEDS_CHROMA = pytest.mark.needs(
    "the Chroma server (`chroma`, installed with chromadb in .venv)",
    CHROMA.exists(),
    "run `bash scripts/setup.sh --dev` (it installs chromadb into .venv)",
)


class ChromaServer:
    """`chroma run --path FOLDER` on `port`, until stop(); start() again serves what it had stored."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        log = (self._folder / "chroma.log").open("ab")
        self._process = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(self._folder / "data"), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"chroma run exited ({self._process.returncode}); see {self._folder}/chroma.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Chroma server did not answer within {timeout:g} s")
            time.sleep(0.1)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v2/heartbeat", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(30)
