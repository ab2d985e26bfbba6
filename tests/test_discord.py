"""Discord over real HTTP and a real WebSocket, against a loopback stand-in for Discord.

One event loop in a background thread runs, for the whole module: a fake Discord (REST routes the
connector uses, plus a gateway WebSocket that does HELLO / IDENTIFY / READY and pushes the events a test
gives it), the real bot (demo knowledge base, real embeddings, SQLite store) and the real connector on
the unmodified discord.py client. Tests push synthetic gateway events, so discord.py's own gateway code
and state parser turn them into objects, and assert on the REST calls the bot makes and on the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import re
import shutil
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import discord
import pytest
import trustme
import yaml
import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.answering.policy import Decision
from bot.config import Config, DiscordSettings, load_config
from bot.conversation.desk import AgentDesk
from bot.pipeline import DeltaSink, KnowledgeResponder, Pipeline
from bot.retrieval.embedding import Embedder
from bot.storage.turns import Turn
from bot.types import AnsweredBy, Message, Reply
from connectors.base import ChannelError
from connectors.discord_channel import (
    MESSAGE_LIMIT,
    SUGGESTION_TEMPLATE,
    DiscordConnector,
    discord_connector,
)
from connectors.discord_channel import connector as discord_connector_module
from connectors.discord_channel import gateway as discord_gateway
from connectors.discord_channel.stand_in import StandIn
from serving.channels import RunningChannels
from serving.runtime import Bot, running_bot
from tests.action_server import ActionServer
from tests.conftest import DEMO_CASES, DEMO_KNOWLEDGE
from tests.polling import wait_for_count

T = TypeVar("T")

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAx.fake.loopback-token"
BOT_ID = 1100000000000000001  # for bots made since 2019, the application id is the bot user's id
APP_ID = BOT_ID
OWNER_ID = 1100000000000000002
GUILD_ID = 1200000000000000001
ALLOWED_CHANNEL = 1200000000000000011
OTHER_CHANNEL = 1200000000000000012
TIMESTAMP = "2026-01-05T10:00:00.000000+00:00"


def message_payload(
    message_id: int, channel_id: int, author: dict[str, Any], content: str, **fields: Any
) -> dict[str, Any]:
    """A MESSAGE object as Discord's API and gateway send it; `fields` override or add to the defaults."""
    return {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": TIMESTAMP,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "components": [],
        **fields,
    }


GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 0, 1 << 9, 1 << 12  # gateway intent bits
TRACK_ORDER_ANSWER = "As soon as your order leaves our warehouse we email you a shipping confirmation"
TRACK_ORDER_SOURCE = "Sources: How can I track my order? (faq/orders.yml:1)"
LONG_QUESTION = "Can I read the complete care guide for the Ridgeline down jacket?"


def user_payload(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


BOT_USER = user_payload(BOT_ID, "northwind-support", bot=True)


def channel_payload(channel_id: int, name: str, position: int) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD_ID),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_payload() -> dict[str, Any]:
    """GUILD_CREATE as the gateway sends it after READY, for a server with two text channels."""
    return {
        "id": str(GUILD_ID),
        "name": "Northwind Outdoor",
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": str(OWNER_ID),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 2,
        "roles": [
            {
                "id": str(GUILD_ID),
                "name": "@everyone",
                "permissions": str(0x400 | 0x800 | 0x10000),  # view channels, send messages, read history
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": None,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "joined_at": TIMESTAMP,
        "large": False,
        "unavailable": False,
        "member_count": 3,
        "voice_states": [],
        "members": [{"user": BOT_USER, "roles": [], "joined_at": TIMESTAMP, "deaf": False, "mute": False, "flags": 0}],
        "channels": [channel_payload(ALLOWED_CHANNEL, "support", 0), channel_payload(OTHER_CHANNEL, "general", 1)],
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    host: str  # the Host header: discord.com, as with Discord itself


GATEWAY_HOST = "gateway.discord.gg"


@dataclass
class FakeDiscord:
    """The REST routes and the gateway the connector uses, recording every request. It serves HTTPS and WSS
    for Discord's own host names, with a certificate from a throwaway CA; a connector reaches it through
    `stand_in`, which resolves those names to it and trusts that CA. discord.py's URLs stay Discord's."""

    token: str
    calls: list[Call] = field(default_factory=list)
    identifies: list[dict[str, Any]] = field(default_factory=list)
    reject_next_identify: int | None = None  # a gateway close code to answer the next IDENTIFY with
    created: list[dict[str, Any]] = field(default_factory=list)  # messages the bot posted, as Discord stores them
    port: int = 0
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1300000000000000001)
        self._socket: web.WebSocketResponse | None = None
        self._sequence = 0
        self._runner: web.AppRunner | None = None

    @property
    def stand_in(self) -> StandIn:
        trust = ssl.create_default_context()
        self.ca.configure_trust(trust)
        return StandIn("127.0.0.1", self.port, trust)

    def snowflake(self) -> int:
        return next(self._ids)

    # -- what a test reads ----------------------------------------------------------------------------

    def recorded(self, predicate: Callable[[Call], bool] = lambda c: True) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if predicate(c)]

    def wait_for(self, predicate: Callable[[Call], bool], count: int = 1, timeout: float = 30.0) -> list[Call]:
        return wait_for_count(lambda: self.recorded(predicate), count, timeout, "matching calls")

    # -- server ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_put(f"{api}/applications/{{app_id}}/commands", self._commands)
        app.router.add_post(f"{api}/channels/{{channel_id}}/messages", self._create_message)
        app.router.add_post(f"{api}/channels/{{channel_id}}/typing", self._typing)
        app.router.add_post(f"{api}/interactions/{{interaction_id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{api}/webhooks/{{app_id}}/{{token}}", self._followup)
        app.router.add_get("/", self._gateway)  # wss://gateway.discord.gg/?v=10&encoding=json...
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("discord.com", GATEWAY_HOST).configure_cert(tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.host != GATEWAY_HOST:
            raw = await request.read()
            body = json.loads(raw) if raw else None
            call = Call(
                request.method, request.path, dict(request.query), body, request.headers.get("Authorization"),
                request.host,
            )  # fmt: skip
            with self._lock:
                self.calls.append(call)
        response: web.StreamResponse = await handler(request)
        return response

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    async def _me(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return _json({**BOT_USER, "verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US"})

    async def _application(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return _json(
            {
                "id": str(APP_ID),
                "name": "Northwind Support",
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": user_payload(OWNER_ID, "owner"),
                "verify_key": "0" * 64,
                "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED: the intent is enabled in the portal
                "team": None,
                "bot": BOT_USER,
                "interactions_endpoint_url": None,
            }
        )

    async def _commands(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        commands = await request.json()
        return _json(
            [
                {
                    "id": str(self.snowflake()),
                    "application_id": str(APP_ID),
                    "version": str(self.snowflake()),
                    "default_member_permissions": None,
                    "type": 1,
                    "nsfw": False,
                    "options": [],
                    **command,
                }
                for command in commands
            ]
        )

    async def _create_message(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        body = await request.json()
        message = self._message(int(request.match_info["channel_id"]), body)
        with self._lock:
            self.created.append(message)
        return _json(message)

    async def _typing(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = body["type"]
        flags = (body.get("data") or {}).get("flags", 0)
        payload: dict[str, Any] = {
            "interaction": {
                "id": request.match_info["interaction_id"],
                "type": 2,
                "response_message_id": str(self.snowflake()),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & 64),
            },
            "resource": {"type": kind},
        }
        if kind == 4:
            payload["resource"]["message"] = self._message(0, body.get("data") or {})
        return _json(payload)

    async def _followup(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.query.get("wait") not in ("true", "1"):
            return web.Response(status=204)
        return _json({**self._message(0, body), "webhook_id": str(APP_ID), "application_id": str(APP_ID)})

    async def _unknown(self, request: web.Request) -> web.Response:
        return _json({"message": "404: Not Found", "code": 0}, 404)

    def _message(self, channel_id: int, body: dict[str, Any]) -> dict[str, Any]:
        reference = body.get("message_reference")
        return message_payload(
            self.snowflake(),
            channel_id,
            BOT_USER,
            body.get("content", ""),
            type=19 if reference else 0,
            flags=body.get("flags", 0),
            components=body.get("components", []),
            **({"message_reference": reference} if reference else {}),
        )

    # -- gateway --------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.host != GATEWAY_HOST:
            return await self._unknown(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            if payload["op"] == 1:  # heartbeat
                # Like a real round trip: an instant ACK can beat discord.py's own bookkeeping of the send
                # and make it warn that the connection is "behind".
                await asyncio.sleep(0.05)
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif payload["op"] == 2:  # identify
                self.identifies.append(payload["d"])
                if self.reject_next_identify is not None:
                    code, self.reject_next_identify = self.reject_next_identify, None
                    await ws.close(
                        code=code, message={4004: b"Authentication failed."}.get(code, b"Disallowed intent(s).")
                    )
                    break
                self._socket = ws
                await self.dispatch("READY", self._ready())
                await self.dispatch("GUILD_CREATE", guild_payload())
        return ws

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {**BOT_USER, "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": "loopback-session",
            "resume_gateway_url": f"wss://{GATEWAY_HOST}",
            "shard": [0, 1],
            "application": {"id": str(APP_ID), "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
            "presences": [],
        }

    async def end_session(self, code: int, reason: bytes) -> None:
        """Close the identified gateway connection with a close code, as Discord does when it ends a session."""
        if self._socket is None:
            raise RuntimeError("no identified gateway connection")
        await self._socket.close(code=code, message=reason)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Push one DISPATCH frame to the connected client, as the gateway would."""
        if self._socket is None:
            raise RuntimeError("no identified gateway connection")
        self._sequence += 1
        await self._socket.send_json({"op": 0, "t": event, "s": self._sequence, "d": data})


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py decodes a body only when Content-Type is exactly "application/json" (no charset).
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


class _Recorder(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def recorded_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger `name` emits at INFO and above meanwhile (pytest's caplog exists per test only,
    and the module's connector starts once)."""
    records: list[logging.LogRecord] = []
    logger, handler = logging.getLogger(name), _Recorder(records)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class HoldingResponder:
    """The real knowledge responder; a test can hold back answers in chosen conversations (a slow answer)."""

    history_turns = 0
    reads_follow_ups = False

    def __init__(self, inner: KnowledgeResponder) -> None:
        self.inner = inner
        self.held: dict[str, asyncio.Event] = {}

    async def respond(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply:
        gate = self.held.get(message.conversation_id)
        if gate is not None:
            await gate.wait()
        return await self.inner.respond(message, decision, history, on_delta)


class Harness:
    """One event loop in a thread that owns the fake Discord, the bot and the connector."""

    def __init__(self, root: Path, embedder: Embedder, demo_index: Path, actions_url: str | None = None) -> None:
        self.root = root
        self.embedder = embedder
        self.demo_index = demo_index
        self.actions_url = actions_url  # the demo's rasa-sdk action server, when the test module runs one
        self.fake = FakeDiscord(TOKEN)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.config: Config
        self.bot: Bot
        self.connector: DiscordConnector
        self.responder: HoldingResponder
        self.start_log: list[logging.LogRecord] = []  # what the connector logged while starting
        self._lifetime: concurrent.futures.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._users = itertools.count(1400000000000000001)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Harness:
        self.thread.start()
        self.call(self.fake.start())
        self.config = self._write_config()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lifetime = asyncio.run_coroutine_threadsafe(self._run(started), self.loop)
        try:
            started.result(120)
        except BaseException:
            self._shutdown(check_lifetime=False)  # the start-up failure is what gets reported
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._shutdown(check_lifetime=True)

    def _shutdown(self, check_lifetime: bool) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._lifetime is not None and check_lifetime:
            self._lifetime.result(30)
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _write_config(self) -> Config:
        knowledge = self.root / "knowledge"
        shutil.copytree(DEMO_KNOWLEDGE, knowledge)
        # An operator's deliberately long answer: several thousand characters, more than one Discord message.
        paragraphs = [
            f"Part {n} of the care guide. " + "Wash the jacket on a gentle cycle at 30 degrees with down wash, "
            "rinse twice, then tumble dry on low heat with clean tennis balls until every clump is gone. " * 6
            for n in range(1, 8)
        ]
        long_faq = [
            {
                "id": "ridgeline-care-guide",
                "question": LONG_QUESTION,
                "answer": "\n\n".join(paragraphs),
                "tags": ["products", "care"],
            }
        ]
        (knowledge / "faq" / "care-guide.yml").write_text(yaml.safe_dump(long_faq, width=10_000), encoding="utf-8")
        index = self.root / "data" / "chroma"
        shutil.copytree(self.demo_index, index)
        data = {
            "knowledge": {"path": str(knowledge), "watch": False},
            "index": {"path": str(index)},
            "store": {"path": str(self.root / "data" / "conversations.sqlite3")},
            "eval": {"cases": str(DEMO_CASES)},
            "channels": {"discord": {"enabled": True, "allowed_channels": [ALLOWED_CHANNEL]}},
        }
        if self.actions_url is not None:
            data["actions"] = {"url": self.actions_url, "start": False}
        path = self.root / "config.yml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return load_config(path)

    async def _run(self, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        self.responder = HoldingResponder(KnowledgeResponder(self.config.messages, self.config.answering))
        try:
            async with running_bot(self.config, self.embedder, responder=self.responder) as bot:
                self.bot = bot
                self.connector = self.new_connector(lambda: bot.pipeline)
                with recorded_logs("connectors.discord_channel") as self.start_log, pytest.MonkeyPatch.context() as mp:
                    # How long start() waits for the gateway: generous, for a busy machine.
                    mp.setattr(discord_gateway, "READY_TIMEOUT_SECONDS", 60.0)
                    await self.connector.start()
                try:
                    started.set_result(None)
                    await self._stop.wait()
                finally:
                    await self.connector.stop()
        except BaseException as err:
            if not started.done():
                started.set_exception(err)
            raise

    def new_connector(self, pipeline: Callable[[], Pipeline], token: str = TOKEN) -> DiscordConnector:
        """A connector for the fake Discord, made in a running event loop (its aiohttp connector needs one)."""
        settings = self.config.channels.discord
        return discord_connector(pipeline, settings, {"DISCORD_BOT_TOKEN": token}, stand_in=self.fake.stand_in)

    def another_connector(self, token: str = TOKEN) -> DiscordConnector:
        """From a test: a second connector for the same bot and fake Discord, made in the harness's loop."""

        async def make() -> DiscordConnector:
            return self.new_connector(lambda: self.bot.pipeline, token)

        return self.call(make())

    # -- synthetic users and events -------------------------------------------------------------------

    def new_user(self) -> int:
        return next(self._users)

    @staticmethod
    def dm_channel(user_id: int) -> int:
        return user_id + 100_000

    def dm(self, user_id: int, text: str, **extra: Any) -> dict[str, Any]:
        payload = message_payload(
            self.fake.snowflake(),
            self.dm_channel(user_id),
            user_payload(user_id, f"user{user_id % 1000}"),
            text,
            channel_type=1,
            nonce=str(self.fake.snowflake()),
        )
        return {**payload, **extra}  # extra may replace any field, the author included

    def guild_message(self, user_id: int, text: str, channel_id: int, mention: bool, **extra: Any) -> dict[str, Any]:
        mentions = [{**BOT_USER, "member": {"roles": [], "joined_at": TIMESTAMP}}] if mention else []
        content = f"<@{BOT_ID}> {text}" if mention else text
        return {
            **self.dm(user_id, content),
            "channel_id": str(channel_id),
            "channel_type": 0,
            "guild_id": str(GUILD_ID),
            "member": {"roles": [], "joined_at": TIMESTAMP, "deaf": False, "mute": False, "flags": 0},
            "mentions": mentions,
            **extra,
        }

    def interaction(
        self, user_id: int, kind: int, data: dict[str, Any], guild_channel: int | None = None
    ) -> dict[str, Any]:
        interaction_id = self.fake.snowflake()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"interaction-token-{interaction_id}",
            "version": 1,
            "data": data,
            "locale": "en-US",
            "app_permissions": str(0x400 | 0x800 | 0x10000),
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        user = user_payload(user_id, f"user{user_id % 1000}")
        if guild_channel is None:
            channel_id = self.dm_channel(user_id)
            payload |= {
                "channel_id": str(channel_id),
                "channel": {
                    "id": str(channel_id),
                    "type": 1,
                    "last_message_id": None,
                    "flags": 0,
                    "recipients": [user],
                },
                "user": user,
                "context": 1,  # the bot's DM
                "authorizing_integration_owners": {"0": "0"},
            }
        else:
            payload |= {
                "channel_id": str(guild_channel),
                "channel": channel_payload(guild_channel, "support", 0),
                "guild_id": str(GUILD_ID),
                "guild": {"id": str(GUILD_ID), "locale": "en-US", "features": []},
                "guild_locale": "en-US",
                "member": {
                    "user": user,
                    "roles": [],
                    "joined_at": TIMESTAMP,
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "permissions": str(0x400 | 0x800 | 0x10000),
                },
                "context": 0,
                "authorizing_integration_owners": {"0": str(GUILD_ID)},
            }
        return payload

    def ask(self, user_id: int, question: str, guild_channel: int | None = None) -> dict[str, Any]:
        data = {
            "id": "1500000000000000001",
            "name": "ask",
            "type": 1,
            "options": [{"name": "question", "type": 3, "value": question}],
        }
        return self.interaction(user_id, 2, data, guild_channel)

    def click(self, user_id: int, message: dict[str, Any], custom_id: str) -> dict[str, Any]:
        payload = self.interaction(user_id, 3, {"custom_id": custom_id, "component_type": 2})
        payload["message"] = message
        return payload

    def hold(self, conversation_id: str) -> asyncio.Event:
        """Answers in that conversation wait until the returned event is set (with `release`)."""

        async def hold() -> asyncio.Event:
            gate = self.responder.held[conversation_id] = asyncio.Event()
            return gate

        return self.call(hold())

    def release(self, gate: asyncio.Event) -> None:
        self.loop.call_soon_threadsafe(gate.set)

    def send(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.call(self.fake.dispatch(event, payload))
        return payload

    def parsed(self, payload: dict[str, Any]) -> discord.Message:
        """A discord.Message built exactly as the state parser builds one for MESSAGE_CREATE."""

        async def parse() -> discord.Message:
            state = self.connector.client._connection
            channel, _ = state._get_guild_channel(payload)  # type: ignore[arg-type]
            return discord.Message(state=state, channel=channel, data=payload)  # type: ignore[arg-type]

        return self.call(parse())

    # -- reading what happened ------------------------------------------------------------------------

    def posts_to(self, channel_id: int) -> Callable[[Call], bool]:
        return lambda c: c.method == "POST" and c.path == f"/api/v10/channels/{channel_id}/messages"

    def typing_in(self, channel_id: int) -> Callable[[Call], bool]:
        return lambda c: c.method == "POST" and c.path == f"/api/v10/channels/{channel_id}/typing"

    @staticmethod
    def callback_for(interaction: dict[str, Any]) -> Callable[[Call], bool]:
        return lambda c: c.path == f"/api/v10/interactions/{interaction['id']}/{interaction['token']}/callback"

    @staticmethod
    def followups_for(interaction: dict[str, Any]) -> Callable[[Call], bool]:
        return lambda c: c.path == f"/api/v10/webhooks/{APP_ID}/{interaction['token']}"

    def turns(self, conversation_id: str) -> list[tuple[str, str, str | None]]:
        with sqlite3.connect(self.config.store.path) as db:
            rows = db.execute(
                "SELECT role, text, client_message_id FROM turns WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_index_template: Path
) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("discord")
    with (
        ActionServer("actions", root / "actions-work") as actions,
        Harness(root, embedder, demo_index_template, actions.url) as running,
    ):
        yield running


def test_start_logs_in_connects_the_gateway_and_publishes_ask(harness: Harness) -> None:
    me = harness.fake.recorded(lambda c: c.path == "/api/v10/users/@me")
    assert me and me[0].authorization == f"Bot {TOKEN}"
    # Over HTTPS to discord.com, as with Discord itself: only the address it resolves to is the stand-in's.
    assert {c.host for c in harness.fake.recorded()} == {"discord.com"}
    assert_discord_py_untouched()
    identify = harness.fake.identifies[0]
    # Guild and direct messages, and no privileged intent: nothing the bot answers needs MESSAGE CONTENT.
    assert identify["token"] == TOKEN and identify["intents"] == GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES
    (sync,) = harness.fake.recorded(
        lambda c: c.method == "PUT" and c.path == f"/api/v10/applications/{APP_ID}/commands"
    )
    (ask,) = sync.body
    assert ask["name"] == "ask" and ask["type"] == 1
    assert [(o["name"], o["type"], o["required"]) for o in ask["options"]] == [("question", 3, True)]
    assert harness.connector.client.user is not None and harness.connector.client.user.id == BOT_ID
    # start() returned once the gateway accepted the session, not after READY_TIMEOUT_SECONDS.
    said = [r.getMessage() for r in harness.start_log]
    assert any(m.startswith(f"discord: connected as northwind-support (id {BOT_ID})") for m in said), said
    assert not any("logged in, still connecting to the gateway" in m for m in said), said
    # The gateway keeps running in the background: the server's GUILD_CREATE arrives and the client gets ready.
    client = harness.connector.client
    harness.call(asyncio.wait_for(client.wait_until_ready(), 30), timeout=35)
    assert [g.id for g in client.guilds] == [GUILD_ID]


def test_a_direct_message_gets_a_cited_answer_with_typing_first(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    event = harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))

    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    content = post.body["content"]
    assert TRACK_ORDER_ANSWER in content and TRACK_ORDER_SOURCE in content
    assert post.body["allowed_mentions"]["parse"] == []  # answers never ping anyone
    assert "message_reference" not in post.body  # a DM needs no reply arrow
    calls = harness.fake.recorded()
    typing = [i for i, c in enumerate(calls) if harness.typing_in(channel)(c)]
    assert typing and typing[0] < calls.index(post)
    turns = harness.turns(f"discord:dm:{user}")
    assert turns[0] == ("user", "How can I track my order?", f"discord:{event['id']}")
    assert [t[0] for t in turns] == ["user", "bot"] and TRACK_ORDER_ANSWER in turns[1][1]


def test_a_redelivered_message_is_answered_once(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    event = harness.dm(user, "do you ship to canada?")
    harness.send("MESSAGE_CREATE", event)
    harness.send("MESSAGE_CREATE", event)  # the gateway may deliver an event again after a resume
    # Messages in one conversation are answered in order, so once the next one is answered the duplicate
    # has been handled.
    harness.send("MESSAGE_CREATE", harness.dm(user, "thanks!"))
    posts = harness.fake.wait_for(harness.posts_to(channel), count=2)
    assert len(harness.fake.recorded(harness.posts_to(channel))) == 2
    assert "Canada" in posts[0].body["content"]
    assert len(harness.fake.recorded(harness.typing_in(channel))) == 2  # no typing for the duplicate either
    turns = harness.turns(f"discord:dm:{user}")
    assert [t[2] for t in turns if t[0] == "user"].count(f"discord:{event['id']}") == 1
    assert [t[0] for t in turns] == ["user", "bot", "user", "bot"]


def test_a_mention_in_an_allowed_channel_is_answered_as_a_reply(harness: Harness) -> None:
    user = harness.new_user()
    event = harness.send(
        "MESSAGE_CREATE", harness.guild_message(user, "How can I track my order?", ALLOWED_CHANNEL, mention=True)
    )
    post = harness.fake.wait_for(
        lambda c: (
            harness.posts_to(ALLOWED_CHANNEL)(c)
            and str((c.body.get("message_reference") or {}).get("message_id")) == event["id"]
        )
    )[0]
    assert TRACK_ORDER_ANSWER in post.body["content"] and TRACK_ORDER_SOURCE in post.body["content"]
    assert post.body["allowed_mentions"]["parse"] == [] and not post.body["allowed_mentions"].get("replied_user")
    # One conversation per person in a channel; the bot's mention is not part of the question.
    assert harness.turns(f"discord:{ALLOWED_CHANNEL}:{user}")[0][:2] == ("user", "How can I track my order?")


def test_what_the_bot_must_not_answer_is_ignored(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.discord_channel")
    user, other_bot = harness.new_user(), harness.new_user()
    ignored = {
        "no mention": harness.guild_message(user, "How can I track my order?", ALLOWED_CHANNEL, mention=False),
        "other channel": harness.guild_message(user, "How can I track my order?", OTHER_CHANNEL, mention=True),
        "another bot": harness.dm(other_bot, "How can I track my order?", author=user_payload(other_bot, "x", True)),
        "itself": {**harness.dm(user, "How can I track my order?"), "author": BOT_USER},
        "another bot mentioning it": harness.guild_message(
            other_bot,
            "How can I track my order?",
            ALLOWED_CHANNEL,
            mention=True,
            author=user_payload(other_bot, "x", True),
        ),
    }
    for why, payload in ignored.items():
        assert not harness.connector.inbound.should_answer(harness.parsed(payload)), why
    for payload in ignored.values():
        harness.send("MESSAGE_CREATE", payload)

    # Every one of them reached the connector and was turned down (its handler has returned by then).
    ids = {p["id"] for p in ignored.values()}

    def turned_down() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.name.startswith("connectors.discord_channel")]
        return [i for i in ids if any(m.startswith(f"discord: message {i} ") and m.endswith("; ignored") for m in said)]

    wait_for_count(turned_down, len(ids), 30, "ignored messages")
    answered = harness.fake.recorded(
        lambda c: isinstance(c.body, dict) and str(c.body.get("message_reference", {}).get("message_id")) in ids
    )
    assert answered == []
    assert harness.fake.recorded(harness.posts_to(OTHER_CHANNEL)) == []
    assert harness.fake.recorded(harness.posts_to(harness.dm_channel(user))) == []
    assert harness.fake.recorded(harness.posts_to(harness.dm_channel(other_bot))) == []
    assert harness.fake.recorded(harness.typing_in(OTHER_CHANNEL)) == []
    assert harness.fake.recorded(harness.typing_in(harness.dm_channel(user))) == []
    assert harness.fake.recorded(harness.typing_in(harness.dm_channel(other_bot))) == []
    for conversation in (
        f"discord:{ALLOWED_CHANNEL}:{user}",
        f"discord:{OTHER_CHANNEL}:{user}",
        f"discord:dm:{user}",
        f"discord:dm:{other_bot}",
        f"discord:{ALLOWED_CHANNEL}:{other_bot}",
    ):
        assert harness.turns(conversation) == [], conversation


def test_a_long_answer_is_split_into_messages_of_at_most_2000_characters(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    harness.send("MESSAGE_CREATE", harness.dm(user, LONG_QUESTION))
    sources = f"Sources: {LONG_QUESTION} (faq/care-guide.yml:1)"
    harness.fake.wait_for(lambda c: harness.posts_to(channel)(c) and sources in c.body["content"])
    pieces = [c.body["content"] for c in harness.fake.recorded(harness.posts_to(channel))]
    assert len(pieces) >= 3 and all(len(p) <= MESSAGE_LIMIT for p in pieces)
    assert pieces[0].startswith("Part 1 of the care guide.") and pieces[-1].endswith(f"*{sources}*")
    # Nothing lost or reordered at the cuts: the pieces read as the stored answer plus its sources.
    answer = harness.turns(f"discord:dm:{user}")[1][1]
    assert " ".join(" ".join(pieces).split()) == " ".join(f"{answer} *{sources}*".split())


def test_suggestions_are_buttons_and_a_click_asks_that_question(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    conversation = f"discord:dm:{user}"
    harness.send("MESSAGE_CREATE", harness.dm(user, "what's the weather in Berlin"))
    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    assert post.body["content"].startswith("I'm not sure I can answer that correctly.")
    buttons = [b for row in post.body["components"] for b in row["components"]]
    with sqlite3.connect(harness.config.store.path) as db:
        row = db.execute(
            "SELECT quick_replies FROM turns WHERE conversation_id = ? AND role = 'bot'", (conversation,)
        ).fetchone()
    suggestions = json.loads(row[0])
    assert len(suggestions) >= 2 and suggestions[-1] == "Talk to a person"
    assert [b["label"] for b in buttons] == suggestions
    assert all(b["type"] == 2 and re.fullmatch(SUGGESTION_TEMPLATE, b["custom_id"]) for b in buttons)

    # The user clicks the first suggestion; Discord sends the message it was on with the click.
    (posted,) = [m for m in harness.fake.created if m["channel_id"] == str(channel)]
    click = harness.send("INTERACTION_CREATE", harness.click(user, posted, buttons[0]["custom_id"]))
    (callback,) = harness.fake.wait_for(harness.callback_for(click))
    assert callback.body["type"] == 5  # "thinking…" while it answers
    (followup,) = harness.fake.wait_for(harness.followups_for(click))
    assert followup.body["content"].startswith(f"> {discord.utils.escape_markdown(suggestions[0])}\n\n")
    assert "Sources:" in followup.body["content"]
    # The suggestion went through the pipeline as the user's next message in the same conversation.
    turns = harness.turns(conversation)
    assert [t[0] for t in turns] == ["user", "bot", "user", "bot"]
    assert turns[2] == ("user", suggestions[0], f"discord:{click['id']}")


def test_a_crafted_button_never_acts_on_another_conversations_reply(harness: Harness) -> None:
    # User A is offered suggestions, the last "Talk to a person"; user B clicks buttons that name A's reply
    # (and a turn id past SQLite's integers) on a message of B's own, labelled "hello".
    owner = harness.new_user()
    harness.send("MESSAGE_CREATE", harness.dm(owner, "what's the weather in Berlin"))
    (post,) = harness.fake.wait_for(harness.posts_to(harness.dm_channel(owner)))
    handoff_button = [b for row in post.body["components"] for b in row["components"]][-1]
    assert handoff_button["label"] == "Talk to a person"
    clicker = harness.new_user()
    for n, custom_id in enumerate([handoff_button["custom_id"], "supportbot:suggest:9999999999999999999:0"]):
        button = {"type": 2, "style": 2, "label": "hello", "custom_id": custom_id}
        message = {**harness.dm(clicker, f"an earlier reply {n}"), "author": BOT_USER,
                   "components": [{"type": 1, "components": [button]}]}  # fmt: skip
        click = harness.send("INTERACTION_CREATE", harness.click(clicker, message, custom_id))
        (followup,) = harness.fake.wait_for(harness.followups_for(click))
        assert followup.body["content"].startswith("> hello")  # the label it showed, not A's suggestion
    turns = harness.turns(f"discord:dm:{clicker}")
    assert [t[1] for t in turns if t[0] == "user"] == ["hello", "hello"]
    with sqlite3.connect(harness.config.store.path) as db:
        handed_over = db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ? AND handoff = 1",
                                 (f"discord:dm:{clicker}",)).fetchone()  # fmt: skip
    assert handed_over == (0,)


def test_ask_answers_with_a_followup_and_a_duplicate_interaction_once(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.ask(user, "How can I track my order?")
    harness.send("INTERACTION_CREATE", ask)
    harness.send("INTERACTION_CREATE", ask)
    # A message in the same conversation after it: answered in order, so the duplicate is done by then.
    harness.send("MESSAGE_CREATE", harness.dm(user, "thanks!"))
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(user)))
    (callback,) = harness.fake.wait_for(harness.callback_for(ask))
    assert callback.body["type"] == 5 and callback.query.get("with_response") in ("1", "true")
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    content = followup.body["content"]
    assert content.startswith("> How can I track my order?")
    assert TRACK_ORDER_ANSWER in content and TRACK_ORDER_SOURCE in content
    assert len(harness.fake.recorded(harness.callback_for(ask))) == 1
    assert len(harness.fake.recorded(harness.followups_for(ask))) == 1
    assert harness.turns(f"discord:dm:{user}")[0] == ("user", "How can I track my order?", f"discord:{ask['id']}")


def test_ask_in_a_channel_that_is_not_configured_is_declined_privately(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.send("INTERACTION_CREATE", harness.ask(user, "How can I track my order?", OTHER_CHANNEL))
    (callback,) = harness.fake.wait_for(harness.callback_for(ask))
    assert callback.body["type"] == 4 and callback.body["data"]["flags"] & 64  # ephemeral
    assert harness.turns(f"discord:{OTHER_CHANNEL}:{user}") == []


def test_ask_in_an_allowed_channel_is_one_conversation_per_person(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.send("INTERACTION_CREATE", harness.ask(user, "do you ship to canada?", ALLOWED_CHANNEL))
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    assert "Canada" in followup.body["content"]
    assert harness.turns(f"discord:{ALLOWED_CHANNEL}:{user}")[0][1] == "do you ship to canada?"


def test_a_slow_answer_does_not_hold_up_other_chats(harness: Harness) -> None:
    slow, quick = harness.new_user(), harness.new_user()

    gate = harness.hold(f"discord:dm:{slow}")
    try:
        harness.send("MESSAGE_CREATE", harness.dm(slow, "How can I track my order?"))
        harness.fake.wait_for(harness.typing_in(harness.dm_channel(slow)))  # stored, and answering
        harness.send("MESSAGE_CREATE", harness.dm(quick, "How can I track my order?"))
        harness.fake.wait_for(harness.posts_to(harness.dm_channel(quick)))
        assert harness.fake.recorded(harness.posts_to(harness.dm_channel(slow))) == []
        assert harness.turns(f"discord:dm:{slow}")[0][0] == "user"  # stored before answering
    finally:
        harness.release(gate)
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(slow)))


def test_ask_is_acknowledged_at_once_while_an_earlier_answer_in_the_chat_is_in_progress(harness: Harness) -> None:
    # Discord fails an interaction not acknowledged within 3 seconds. A click or /ask in a chat whose
    # previous message is still being answered (a slow model, a double click) waits for that answer,
    # but its "thinking…" must not.
    user = harness.new_user()
    gate = harness.hold(f"discord:dm:{user}")
    try:
        harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))
        harness.fake.wait_for(harness.typing_in(harness.dm_channel(user)))
        ask = harness.send("INTERACTION_CREATE", harness.ask(user, "do you ship to canada?"))
        (callback,) = harness.fake.wait_for(harness.callback_for(ask))  # while the first answer is held
        assert callback.body["type"] == 5  # deferred: "thinking…"
        assert harness.fake.recorded(harness.followups_for(ask)) == []
    finally:
        harness.release(gate)
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    assert "Canada" in followup.body["content"]
    assert len(harness.fake.recorded(harness.callback_for(ask))) == 1


def test_views_and_pieces_come_from_plain_methods(harness: Harness) -> None:
    """The formatting is reachable without Discord: replies render as text with sources and handoff."""
    from bot.pipeline import Exchange
    from bot.types import Citation
    from connectors.discord_channel import reply_pieces

    reply = Reply(
        text="I'm passing this conversation to a person from our team.",
        answered_by=AnsweredBy.FALLBACK,
        citations=(Citation("track-order", "faq", "How can I track my order?", "faq/orders.yml", 1),),
        quick_replies=("x" * 120, "Talk to a person"),
        handoff=True,
    )
    (text,) = reply_pieces(reply)
    assert text.endswith("*A person from our team will reply here.*") and TRACK_ORDER_SOURCE in text
    pieces = reply_pieces(Reply(text="word " * 1000, answered_by=AnsweredBy.LLM))
    assert len(pieces) == 3 and all(len(p) <= MESSAGE_LIMIT for p in pieces)

    async def view() -> list[dict[str, Any]]:
        built = harness.connector.build_view(Exchange(1, 42, reply))
        assert built is not None
        return built.to_components()

    (row,) = harness.call(view())
    labels = [b["label"] for b in row["components"]]
    assert labels == ["x" * 79 + "…", "Talk to a person"]
    assert [b["custom_id"] for b in row["components"]] == ["supportbot:suggest:42:0", "supportbot:suggest:42:1"]


def test_a_missing_token_is_a_channel_error_naming_discord(harness: Harness) -> None:
    for environ in ({}, {"DISCORD_BOT_TOKEN": "  "}):
        with pytest.raises(ChannelError, match=r"^discord: DISCORD_BOT_TOKEN is not set"):
            discord_connector(lambda: harness.bot.pipeline, DiscordSettings(enabled=True), environ)


def assert_discord_py_untouched() -> None:
    """The stand-in is reached through each client's own connector: discord.py's endpoints stay Discord's."""
    assert Route.BASE == "https://discord.com/api/v10"
    assert yarl.URL(f"wss://{GATEWAY_HOST}/") == DiscordWebSocket.DEFAULT_GATEWAY


def test_a_rejected_token_is_a_channel_error_naming_discord(harness: Harness) -> None:
    rejected = harness.another_connector(token="not-the-token")
    with pytest.raises(ChannelError, match=r"^discord: the token was rejected \(401\)") as raised:
        harness.call(rejected.start())
    assert "not-the-token" not in str(raised.value)
    assert harness.fake.recorded(lambda c: c.authorization == "Bot not-the-token")  # it did reach the fake
    harness.call(rejected.stop())  # stopping again is harmless: it does not raise
    assert rejected.client.is_closed()
    assert_discord_py_untouched()


@pytest.mark.parametrize(
    ("close_code", "says"),
    [
        (4004, r"^discord: the token was rejected by the gateway \(4004\)"),
        (4014, r"^discord: the gateway refused a privileged intent"),
    ],
)
def test_a_gateway_that_refuses_the_session_is_a_channel_error(harness: Harness, close_code: int, says: str) -> None:
    harness.fake.reject_next_identify = close_code
    refused = harness.another_connector()
    with pytest.raises(ChannelError, match=says):
        harness.call(refused.start())
    assert refused.client.is_closed()
    assert_discord_py_untouched()
    # The running connector is unaffected.
    user = harness.new_user()
    harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(user)))


@pytest.fixture
def own_harness(tmp_path: Path, embedder: Embedder, demo_index_template: Path) -> Iterator[Harness]:
    """A bot and fake Discord of the test's own, for tests that stop or break the connection."""
    with Harness(tmp_path, embedder, demo_index_template) as running:
        yield running


def test_stopping_sends_the_answers_in_progress_before_closing(
    own_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = own_harness
    # The grace period bounds how long stop() waits for the held answer: generous, for a busy machine.
    monkeypatch.setattr(discord_connector_module, "STOP_GRACE_SECONDS", 60.0)
    slow, meanwhile = harness.new_user(), harness.new_user()
    gate = harness.hold(f"discord:dm:{slow}")
    harness.send("MESSAGE_CREATE", harness.dm(slow, "How can I track my order?"))
    harness.fake.wait_for(harness.typing_in(harness.dm_channel(slow)))  # stored, and being answered
    stopping = asyncio.run_coroutine_threadsafe(harness.connector.stop(), harness.loop)
    # Still connected while it waits: a message arriving now is answered too, not lost.
    harness.send("MESSAGE_CREATE", harness.dm(meanwhile, "do you ship to canada?"))
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(meanwhile)))
    assert not stopping.done()
    harness.release(gate)
    stopping.result(90)
    (answer,) = harness.fake.recorded(harness.posts_to(harness.dm_channel(slow)))
    assert TRACK_ORDER_ANSWER in answer.body["content"]
    assert harness.connector.client.is_closed() and harness.connector.failure is None


def test_a_session_discord_ends_after_start_shows_as_failed_in_health(own_harness: Harness) -> None:
    harness = own_harness
    channels = RunningChannels(connectors=[harness.connector])
    assert channels.status() == {"running": ["discord"], "failed": {}}
    # Discord ends the session for good when the bot's token is reset; discord.py then stops reconnecting.
    harness.call(harness.fake.end_session(4004, b"Authentication failed."))
    wait_for_count(lambda: [harness.connector.failure] if harness.connector.failure else [], 1, 30, "a failure")
    status = channels.status()
    assert status["running"] == []
    assert status["failed"] == {"discord": harness.connector.failure}
    assert "token was rejected by the gateway (4004)" in str(harness.connector.failure)
    assert TOKEN not in str(harness.connector.failure)


def test_an_agent_takes_over_a_dm_and_the_bot_stays_silent_until_released(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    conversation = f"discord:dm:{user}"
    harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))
    harness.fake.wait_for(harness.posts_to(channel))
    desk = AgentDesk(harness.bot.store, lambda conversation_id, kind: None)
    harness.call(desk.claim(conversation, "alice"))  # pulled from the bot
    turn = harness.call(desk.reply(conversation, "alice", "Hi, Alice here. Which order is it?"))
    assert harness.call(harness.connector.deliver(turn)) is True
    assert harness.call(harness.connector.deliver(turn)) is False  # sent once
    posts = harness.fake.wait_for(harness.posts_to(channel), count=2)
    assert posts[1].body["content"] == "**alice**: Hi, Alice here. Which order is it?"

    harness.send("MESSAGE_CREATE", harness.dm(user, "order 4711, it never came"))
    deadline = time.monotonic() + 60
    while ("user", "order 4711, it never came") not in [t[:2] for t in harness.turns(conversation)]:
        assert time.monotonic() < deadline, "the message was not stored"
        time.sleep(0.05)
    harness.call(desk.release(conversation, "alice"))
    harness.send("MESSAGE_CREATE", harness.dm(user, "do you ship to canada?"))
    posts = harness.fake.wait_for(harness.posts_to(channel), count=3)
    assert "Canada" in posts[2].body["content"]  # the bot again, and nothing from it in between
    assert [t[0] for t in harness.turns(conversation)] == ["user", "bot", "bot", "user", "user", "bot"]


def test_an_order_status_in_a_dm(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    harness.send("MESSAGE_CREATE", harness.dm(user, "where is my order NW-10023? my email is jane@example.com"))
    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    assert "NW-10023" in post.body["content"] and "shipped" in post.body["content"]
    assert "https://www.dhl.com/track?id=JD014600003828341" in post.body["content"]
