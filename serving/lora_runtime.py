"""`bot model load-adapter`: load a LoRA adapter into a running vLLM server without restarting it.

vLLM's runtime endpoints (`POST /v1/load_lora_adapter`, `POST /v1/unload_lora_adapter`) exist only when
the server was started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `--enable-lora`
(`model_server.runtime_lora: true` does both for `bot model serve`). Anyone who can reach them can load
code-free weights into the server, so keep the server on a private network. After loading, the adapter is
a model of its own: requests name it in `model` (set `llm.model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

NO_RUNTIME_ENDPOINT = (
    "the model server has no runtime LoRA endpoint: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
    "--enable-lora (`model_server.runtime_lora: true` in config.yml does both for `bot model serve`)"
)


UNAUTHORIZED = (
    "the model server wants its API key (HTTP 401): export it in the variable llm.api_key_env names "
    "(SUPPORTBOT_LLM_API_KEY by default)"
)


class AdapterLoadError(RuntimeError):
    """The server refused the adapter, or could not be reached."""


def server_root(url: str) -> str:
    """The server's root URL from either form operators have at hand (`http://h:p` or `http://h:p/v1`)."""
    root = url.rstrip("/")
    return root.removesuffix("/v1")


def _message(response: httpx.Response) -> str:
    """vLLM's error text: `{"message": ...}`, `{"error": {"message": ...}}`, FastAPI's `{"detail": ...}`."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, str):
            return inner
        for source in (inner if isinstance(inner, dict) else {}, body):
            for key in ("message", "detail"):
                if isinstance(source.get(key), str):
                    return str(source[key])
    return str(body)


class RuntimeAdapters:
    """The runtime LoRA endpoints of one vLLM server."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        self.root = server_root(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.root, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RuntimeAdapters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as err:
            raise AdapterLoadError(f"cannot reach the model server at {self.root}: {err}") from err
        if response.status_code == 401:
            raise AdapterLoadError(UNAUTHORIZED)
        return response

    def _post(self, path: str, body: dict[str, str]) -> httpx.Response:
        """A runtime LoRA endpoint; a server without them (FastAPI's own 404/405) is explained."""
        response = self._send("POST", path, body)
        if response.status_code in (404, 405) and _message(response) in ("Not Found", "Method Not Allowed"):
            raise AdapterLoadError(NO_RUNTIME_ENDPOINT)
        return response

    def served(self) -> list[str]:
        """The model names the server answers to: its base model(s) and every loaded adapter."""
        response = self._send("GET", "/v1/models")
        if response.status_code != 200:
            raise AdapterLoadError(f"GET {self.root}/v1/models: HTTP {response.status_code}: {_message(response)}")
        return [str(card.get("id")) for card in response.json().get("data", []) if isinstance(card, dict)]

    def load(self, name: str, path: str, *, replace: bool = False) -> str:
        """Load the adapter at `path` (as the server sees it) under `name`; the server's answer.

        With `replace`, an adapter already loaded under `name` is unloaded first (a new version of it).
        """
        if replace and name in self.served():
            self.unload(name)
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            if name not in self.served():
                raise AdapterLoadError(f"the server said it loaded {name!r}, but /v1/models does not list it")
            return response.text.strip().strip('"')
        message = _message(response)
        if "already been loaded" in message:
            raise AdapterLoadError(f"{message} Pass --replace to load this version under the same name.")
        raise AdapterLoadError(f"the server refused adapter {name!r} from {path}: {message}")

    def unload(self, name: str) -> str:
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200:
            raise AdapterLoadError(f"the server did not unload {name!r}: {_message(response)}")
        return response.text.strip().strip('"')


def server_path(local: Path, given: str | None) -> str:
    """The adapter's path as the server will read it: `given` (another host's mount), else the absolute local path."""
    return given if given else str(local.resolve())
