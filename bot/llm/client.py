"""Streaming chat completions from an OpenAI-compatible server (vLLM, `transformers serve`, ...).

LangChain's ChatOpenAI speaks the protocol (requests, SSE parsing, retries before a response starts);
this module adds the time budgets a live conversation needs: a first-token deadline, a stall deadline
between pieces, and an overall deadline. Any failure is one exception type with a short reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import httpx
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI

from bot.config import LLMSettings


class ModelUnavailable(Exception):
    """The model did not answer usefully in time; `reason` is a short, loggable why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChatModel:
    def __init__(self, settings: LLMSettings, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        self._api_key = env.get(settings.api_key_env)
        self._chat = ChatOpenAI(
            base_url=settings.base_url,
            model=settings.model,
            # A local server needs no key, but the client library insists on one.
            api_key=env.get(settings.api_key_env) or "not-needed",  # type: ignore[arg-type]
            temperature=settings.temperature,
            max_completion_tokens=settings.max_tokens,
            timeout=settings.total_timeout_s,
            max_retries=settings.max_retries,
            streaming=True,
            stream_usage=False,
        )

    async def stream(self, messages: Sequence[BaseMessage]) -> AsyncIterator[str]:
        """Pieces of the answer as they arrive; raises ModelUnavailable on any failure or missed deadline."""
        settings = self.settings
        started = time.monotonic()
        pieces = self._chat.astream(list(messages)).__aiter__()
        first = True
        try:
            while True:
                elapsed = time.monotonic() - started
                # The first-token budget counts from the request, whatever empty pieces come first.
                wait = settings.first_token_timeout_s - elapsed if first else settings.stall_timeout_s
                wait = min(wait, settings.total_timeout_s - elapsed)
                if wait <= 0:
                    what = "first token" if first else "complete answer"
                    raise ModelUnavailable(f"no {what} within the time budget")
                try:
                    chunk = await asyncio.wait_for(pieces.__anext__(), wait)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    what = "first token" if first else "next token"
                    raise ModelUnavailable(f"{what} not received within {wait:.3g}s") from None
                except Exception as err:  # connection refused, HTTP 5xx, bad response...
                    raise ModelUnavailable(f"{type(err).__name__}: {str(err)[:200]}") from err
                text = chunk.content if isinstance(chunk.content, str) else ""
                if text:
                    first = False
                    yield text
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    async def ping(self) -> float:
        """Round trip of the server's model list (GET /models) in milliseconds, for /health; ModelUnavailable
        when it cannot be reached or answers 502-504 (a proxy with nothing behind it). Another error code
        still counts as reachable: some servers (`transformers serve`) answer the list itself with 500."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(f"{self.settings.base_url.rstrip('/')}/models", headers=headers)
        except httpx.HTTPError as err:
            raise ModelUnavailable(f"cannot reach the model server at {self.settings.base_url}: {err!r}") from err
        if response.status_code in (502, 503, 504):
            raise ModelUnavailable(f"the model server's GET /models answered HTTP {response.status_code}")
        return (time.perf_counter() - started) * 1000.0

    async def complete(self, messages: Sequence[BaseMessage]) -> str:
        """The whole answer, under the same deadlines."""
        return "".join([piece async for piece in self.stream(messages)])
