"""Real OpenAI-compatible model servers for tests: `transformers serve` and a recording proxy.

`transformers serve` (it ships with transformers) serves the tiny model from tests/tiny_model.py on
loopback. The proxy sits between the bot and that server: it records each request body and can make
the model look slow, broken or down, which is how the degraded-mode tests create those conditions
without touching the bot.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TRANSFORMERS_CLI = Path(sys.executable).parent / "transformers"
_ANSWER_TEXT = re.compile(rb'"content":\s*"[^"]')  # an SSE chunk that carries a piece of the answer


class ModelServer:
    """`transformers serve MODEL_DIR` on a loopback port; `kill()` simulates a crash."""

    def __init__(self, model_dir: Path, port: int, log_path: Path) -> None:
        self.model_dir = model_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def model(self) -> str:
        return str(self.model_dir)  # the server insists that requests name the folder it serves

    def start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(TRANSFORMERS_CLI), "serve", str(self.model_dir), "--host", "127.0.0.1", "--port",
                 str(self.port), "--device", "cpu", "--dtype", "float32"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({self._process.returncode}); see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"transformers serve not ready after {timeout}s; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ProxyBehaviour:
    delay_first_byte_s: float = 0.0
    status: int | None = None  # answer with this HTTP error instead of forwarding
    # Set: the stream is held after its first piece of answer text until the event is set.
    hold_after_first_piece: threading.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)


class RecordingProxy:
    """Forwards /v1/chat/completions to `upstream`, recording request bodies; can delay or fail."""

    def __init__(self, upstream: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.upstream = upstream  # the server root, without /v1
        self.port = port
        self._headers = headers or {}  # e.g. the API key the upstream wants
        self.url = f"http://127.0.0.1:{port}"
        self.behaviour = ProxyBehaviour()
        app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])  # fmt: skip
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.behaviour.requests

    async def _models(self, request: Request) -> Response:
        """The model list, as the upstream has it (what /health asks for)."""
        async with httpx.AsyncClient(timeout=30) as client:
            upstream = await client.get(f"{self.upstream}/v1/models", headers=self._headers)
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        behaviour = self.behaviour
        behaviour.requests.append(body)
        if behaviour.delay_first_byte_s:
            await asyncio.sleep(behaviour.delay_first_byte_s)
        if behaviour.status is not None:
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=behaviour.status)
        client = httpx.AsyncClient(timeout=60)
        upstream = await client.send(
            client.build_request("POST", f"{self.upstream}/v1/chat/completions", json=body, headers=self._headers),
            stream=True,
        )

        async def relay() -> AsyncIterator[bytes]:
            hold = behaviour.hold_after_first_piece
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
                    if hold is not None and _ANSWER_TEXT.search(chunk):
                        while not hold.is_set():  # a threading.Event: set from the test's thread
                            await asyncio.sleep(0.01)
                        hold = None
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(
            relay(), status_code=upstream.status_code, media_type=upstream.headers.get("content-type")
        )

    def user_prompt(self, index: int = -1) -> str:
        return str(self.requests[index]["messages"][-1]["content"])

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("proxy did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
