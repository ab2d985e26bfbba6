"""The Discord tests' harness: one event loop in a background thread that runs the stand-in for Discord
(tests/discord_api.py), the real bot (demo knowledge base, real embeddings, SQLite store) and the real
connector on the unmodified discord.py client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import discord
import pytest
import yaml

from bot.answering.policy import Decision
from bot.config import Config, load_config
from bot.pipeline import DeltaSink, KnowledgeResponder, Pipeline
from bot.retrieval.embedding import Embedder
from bot.storage.turns import Turn
from bot.types import Message, Reply
from connectors.discord_channel import DiscordConnector, discord_connector
from connectors.discord_channel import gateway as discord_gateway
from serving.runtime import Bot, running_bot
from tests.conftest import DEMO_CASES, DEMO_KNOWLEDGE
from tests.discord_api import (
    ALLOWED_CHANNEL,
    APP_ID,
    BOT_ID,
    BOT_USER,
    GUILD_ID,
    LONG_QUESTION,
    TIMESTAMP,
    TOKEN,
    Call,
    FakeDiscord,
    channel_payload,
    message_payload,
    user_payload,
)

T = TypeVar("T")


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

    def __init__(
        self,
        root: Path,
        embedder: Embedder,
        demo_index: Path,
        actions_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`environ`: what the connector reads besides its token (HTTPS_PROXY, say)."""
        self.root = root
        self.environ = dict(environ or {})
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
        environ = {**self.environ, "DISCORD_BOT_TOKEN": token}
        return discord_connector(pipeline, settings, environ, stand_in=self.fake.stand_in)

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
