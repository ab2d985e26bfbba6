"""A loopback stand-in for vLLM's runtime LoRA endpoints (vLLM needs a GPU; this machine has none).

It speaks what vLLM's OpenAI server speaks for adapters (vllm/entrypoints/openai/serving_models.py):
`GET /v1/models` lists the base model and each loaded adapter; `POST /v1/load_lora_adapter` takes
`{"lora_name", "lora_path"}`, refuses a name already loaded (400) and a folder without an adapter (404,
"No adapter found"), and answers `Success: LoRA adapter 'NAME' added successfully.`; `POST
/v1/unload_lora_adapter` removes one. Without `runtime_updates` (vLLM without
VLLM_ALLOW_RUNTIME_LORA_UPDATING) the two POST routes do not exist. With `api_key`, every /v1 route
wants `Authorization: Bearer KEY`, as `vllm serve --api-key` does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def _error(message: str, kind: str, status: int) -> JSONResponse:
    return JSONResponse({"object": "error", "message": message, "type": kind, "param": None, "code": status},
                        status_code=status)  # fmt: skip


class VllmLoraStandIn:
    def __init__(self, port: int, base_model: str = "support", *, runtime_updates: bool = True,
                 api_key: str | None = None) -> None:  # fmt: skip
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_model = base_model
        self.api_key = api_key
        self.loaded: dict[str, str] = {}  # name -> path, in load order
        self.calls: list[tuple[str, dict[str, str]]] = []
        routes = [Route("/v1/models", self._models, methods=["GET"])]
        if runtime_updates:
            routes += [Route("/v1/load_lora_adapter", self._load, methods=["POST"]),
                       Route("/v1/unload_lora_adapter", self._unload, methods=["POST"])]  # fmt: skip
        self._server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=port,
                                                     log_level="warning"))  # fmt: skip
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _refused(self, request: Request) -> Response | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return None

    async def _models(self, request: Request) -> Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        cards = [{"id": self.base_model, "object": "model", "root": self.base_model}]
        cards += [{"id": name, "object": "model", "root": path, "parent": self.base_model}
                  for name, path in self.loaded.items()]  # fmt: skip
        return JSONResponse({"object": "list", "data": cards})

    async def _load(self, request: Request) -> Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        body = await request.json()
        self.calls.append(("load", body))
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        if name in self.loaded:
            return _error(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
        config = Path(path) / "adapter_config.json"
        if not config.is_file() or not (Path(path) / "adapter_model.safetensors").is_file():
            return _error(f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404)
        json.loads(config.read_text(encoding="utf-8"))  # vLLM reads it: a broken file fails the request
        self.loaded[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: Request) -> Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        body = await request.json()
        self.calls.append(("unload", body))
        name = body.get("lora_name")
        if name not in self.loaded:
            return _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.loaded[name]
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    def __enter__(self) -> VllmLoraStandIn:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the vLLM stand-in did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
