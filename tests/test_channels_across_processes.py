"""Chat-app channels when several bot processes share one Redis: Telegram's long polling runs in the one
process elected for it, and another takes over when that one stops; Discord's gateway connects from one
process, and any process posts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from connectors.discord_channel import DiscordConnector, discord_connector
from connectors.discord_channel.stand_in import StandIn
from serving.runtime import Bot, running_bot
from tests.botprocess import wait_until as wait_for
from tests.conftest import ConfigFactory, LiveServer
from tests.discord_api import TOKEN as DISCORD_TOKEN
from tests.discord_api import FakeDiscord, message_payload, user_payload
from tests.redis_server import NEEDS_REDIS, RedisServer
from tests.telegram_api import FakeBotApi
from tests.telegram_fixtures import env, user_turns

pytestmark = NEEDS_REDIS


def roles(server: LiveServer) -> list[str]:
    return list(httpx.get(f"{server.url}/health", timeout=30).json()["roles"])


def holder(servers: list[LiveServer], role: str) -> Callable[[], LiveServer | None]:
    def find() -> LiveServer | None:
        holding = [server for server in servers if role in roles(server)]
        assert len(holding) <= 1, f"{role} held by {len(holding)} processes"
        return holding[0] if holding else None

    return find


def test_one_process_polls_telegram_and_another_takes_over_when_it_stops(
    write_config: ConfigFactory, api: FakeBotApi, redis_server: RedisServer, embedder: Embedder
) -> None:
    config = load_config(write_config(
        channels={"telegram": {"enabled": True, "base_url": api.base_url, "poll_timeout": 1.0}},
        coordination={"redis_url": redis_server.url, "role_lease_s": 2.0},
    ))  # fmt: skip
    first, second = LiveServer(config, embedder, environ=env(api)), LiveServer(config, embedder, environ=env(api))
    with first, second:
        polling = holder([first, second], "telegram-polling")
        wait_for(lambda: polling() is not None, "one process elected to poll")
        leader = polling()
        assert leader is not None
        api.push_update({"message": api.user_message("How can I track my order?")})
        (sent,) = api.wait_for("sendMessage", 1)
        assert "tracking link" in sent.params["text"]

        other = second if leader is first else first
        leader.__exit__(None, None, None)  # a clean stop releases the role: the other is elected at once
        wait_for(lambda: "telegram-polling" in roles(other), "the other process elected to poll")
        api.push_update({"message": api.user_message("How much does shipping cost?")})
        api.wait_for("sendMessage", 2)
        assert [text for _, text in user_turns(config)] == ["How can I track my order?", "How much does shipping cost?"]
        assert len(api.delivered()) == 2  # each answered once


def test_one_process_holds_the_discord_gateway_and_another_can_post(
    write_config: ConfigFactory, redis_server: RedisServer, embedder: Embedder
) -> None:
    """Two bots (as two processes: each its own coordination client) on one Redis and one bot account."""

    async def main() -> None:
        fake = FakeDiscord(DISCORD_TOKEN)
        await fake.start()
        config = load_config(write_config(
            channels={"discord": {"enabled": True}},
            coordination={"redis_url": redis_server.url, "role_lease_s": 2.0},
        ))  # fmt: skip
        environ = {"DISCORD_BOT_TOKEN": DISCORD_TOKEN}
        try:
            async with running_bot(config, embedder) as one, running_bot(config, embedder) as two:
                connectors = [connector_for(bot, config, environ, fake.stand_in) for bot in (one, two)]
                for connector in connectors:
                    await connector.start()
                await wait_async(lambda: len(fake.identifies) == 1, "one gateway session")
                roles_held = [bot.pipeline.coordination.roles() for bot in (one, two)]
                holding = [i for i, held in enumerate(roles_held) if "discord-gateway" in held]
                assert len(holding) == 1
                leader, other = connectors[holding[0]], connectors[1 - holding[0]]
                user = 1400000000000000001
                question = "How can I track my order?"
                dm = message_payload(fake.snowflake(), user + 100_000, user_payload(user, "ada"), question,
                                     channel_type=1, nonce=str(fake.snowflake()))  # fmt: skip
                await fake.dispatch("MESSAGE_CREATE", dm)
                await wait_async(lambda: len(fake.created) == 1, "the answer posted")
                assert "shipping confirmation" in fake.created[0]["content"]
                # The process without the gateway posts over REST (an agent's reply written there, say).
                await other.client.get_partial_messageable(user + 100_000).send(content="An agent here.")
                await wait_async(lambda: len(fake.created) == 2, "the other process's post")
                assert len(fake.identifies) == 1  # still one session
                await other.stop()
                await leader.stop()
        finally:
            await fake.stop()

    asyncio.run(main())


def connector_for(bot: Bot, config: Config, environ: dict[str, str], stand_in: StandIn) -> DiscordConnector:
    return discord_connector(lambda: bot.pipeline, config.channels.discord, environ, stand_in=stand_in)


async def wait_async(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        await asyncio.sleep(0.05)
