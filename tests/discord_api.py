"""A loopback stand-in for Discord: the REST routes and the gateway the connector uses, and payloads.

It serves HTTPS and WSS for Discord's own host names with a certificate from a throwaway CA; a connector
reaches it through `FakeDiscord.stand_in` (connectors.discord_channel.stand_in), so discord.py builds its
usual URLs. Tests push synthetic gateway events, which discord.py's own gateway code and state parser
turn into objects, and assert on the REST calls the bot makes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trustme
import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from connectors.discord_channel.stand_in import StandIn
from tests.polling import wait_for_count

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


def assert_discord_py_untouched() -> None:
    """The stand-in is reached through each client's own connector: discord.py's endpoints stay Discord's."""
    assert Route.BASE == "https://discord.com/api/v10"
    assert yarl.URL(f"wss://{GATEWAY_HOST}/") == DiscordWebSocket.DEFAULT_GATEWAY
