"""A loopback server that speaks the part of the Telegram Bot API the connector uses, over real HTTP.

It records every call, hands out queued updates to getUpdates (long polling), and can be told to
answer the next sendMessage calls with flood control (429 + retry_after) or server errors (5xx).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.polling import wait_for_count

BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "Northwind",
    "username": "northwind_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    refused: bool = False  # answered with an error (scripted, or while sends are down)


@dataclass
class FakeBotApi:
    token: str = "123456:TEST-TOKEN"
    calls: list[Call] = field(default_factory=list)
    scripted_send_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    sends_down: bool = False  # every sendMessage answers 502 (Telegram unreachable) until set back
    webhook_refusal: str | None = None  # setWebhook answers 400 with this description, as the Bot API does
    port: int = 0

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self.confirmed_below = 0  # the highest offset a getUpdates call has confirmed
        self._next_update_id = 1000
        self._next_message_id = 1
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    # -- driving it from a test ---------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            update = {"update_id": self._next_update_id, **update}
            self._next_update_id += 1
            self._updates.append(update)
        return update

    def user_message(
        self, text: str, chat_id: int = 555, user_id: int = 555, chat_type: str = "private", **extra: Any
    ) -> dict[str, Any]:
        with self._lock:
            message_id = self._next_message_id
            self._next_message_id += 1
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "Ada"
        else:
            chat["title"] = "Outdoor friends"
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "text": text,
            **extra,
        }

    def sent(self, method: str = "sendMessage") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def delivered(self) -> list[Call]:
        """sendMessage calls that were answered ok: the messages a customer sees."""
        with self._lock:
            return [c for c in self.calls if c.method == "sendMessage" and not c.refused]

    def wait_for(self, method: str, count: int, timeout: float = 30.0) -> list[Call]:
        return wait_for_count(lambda: self.sent(method), count, timeout, f"{method} calls")

    # -- server -------------------------------------------------------------------------------------

    def __enter__(self) -> FakeBotApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        call = Call(method, params, time.monotonic())
        with self._lock:
            self.calls.append(call)
        if request.match_info["token"] != self.token:
            return _json({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _json({"ok": False, "error_code": 404, "description": "Not Found: method not found"}, 404)
        response: web.Response = await handler(params)
        call.refused = response.status >= 400
        return response

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return _ok(BOT_USER)

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)

    async def _m_setWebhook(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_refusal is not None:
            return _json({"ok": False, "error_code": 400, "description": self.webhook_refusal}, 400)
        return _ok(True)

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset", 0) or 0)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), 1.0)
        with self._lock:
            # As Telegram does: an offset confirms every update before it, and those are never sent again.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self.confirmed_below = max(self.confirmed_below, offset)
        while True:
            with self._lock:
                pending = list(self._updates)
            if pending or time.monotonic() >= deadline:
                return _ok(pending)
            await asyncio.sleep(0.02)

    async def _m_sendChatAction(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        with self._lock:
            failure = self.scripted_send_failures.pop(0) if self.scripted_send_failures else None
            if failure is None and self.sends_down:
                failure = server_error()

            message_id = self._next_message_id
            self._next_message_id += 1
        if failure is not None:
            status, body = failure
            return _json(body, status)
        chat_id = int(params["chat_id"])
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": BOT_USER,
            "text": params.get("text", ""),
        }
        if "reply_markup" in params:
            result["reply_markup"] = params["reply_markup"]
        return _ok(result)


def flood_control(seconds: int) -> tuple[int, dict[str, Any]]:
    return 429, {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {seconds}",
        "parameters": {"retry_after": seconds},
    }


def server_error() -> tuple[int, dict[str, Any]]:
    return 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        if key == "reply_markup":
            params[key] = json.loads(text)
        else:
            params[key] = text
    return params


def _ok(result: Any) -> web.Response:
    return _json({"ok": True, "result": result})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
