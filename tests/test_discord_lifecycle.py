"""Discord's start-up and shutdown: a missing or rejected token, a gateway that refuses the session,
stopping with answers in progress, a session Discord ends; each against the loopback stand-in."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import DiscordSettings
from bot.retrieval.embedding import Embedder
from connectors.base import ChannelError
from connectors.discord_channel import connector as discord_connector_module
from connectors.discord_channel import discord_connector
from connectors.proxies import https_proxy, where
from serving.channels import RunningChannels
from tests.connect_proxy import ConnectProxy
from tests.discord_api import GATEWAY_HOST, TOKEN, TRACK_ORDER_ANSWER, assert_discord_py_untouched
from tests.discord_harness import Harness
from tests.polling import wait_for_count


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_index_template: Path
) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("discord")
    with Harness(root, embedder, demo_index_template) as running:
        yield running


def test_a_missing_token_is_a_channel_error_naming_discord(harness: Harness) -> None:
    for environ in ({}, {"DISCORD_BOT_TOKEN": "  "}):
        with pytest.raises(ChannelError, match=r"^discord: DISCORD_BOT_TOKEN is not set"):
            discord_connector(lambda: harness.bot.pipeline, DiscordSettings(enabled=True), environ)


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


PROXY_SECRET = "proxy-password-not-for-logs"


def test_with_https_proxy_set_discord_is_reached_through_it(
    tmp_path: Path, embedder: Embedder, demo_index_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An egress proxy: the API and the gateway both go through HTTP CONNECT, with the URL's credentials,
    and the credentials are never logged."""
    caplog.set_level(logging.DEBUG)
    with ConnectProxy() as proxy:
        environ = {"HTTPS_PROXY": f"http://egress:{PROXY_SECRET}@127.0.0.1:{proxy.port}", "NO_PROXY": "localhost"}
        running = Harness(tmp_path, embedder, demo_index_template, environ=environ)
        proxy.upstream = lambda: running.fake.port  # every tunnel leads to the stand-in
        with running:
            user = running.new_user()
            running.send("MESSAGE_CREATE", running.dm(user, "How can I track my order?"))
            (post,) = running.fake.wait_for(running.posts_to(running.dm_channel(user)))
            assert TRACK_ORDER_ANSWER in post.body["content"]
    assert proxy.targets() == {"discord.com:443", f"{GATEWAY_HOST}:443"}
    credentials = base64.b64encode(f"egress:{PROXY_SECRET}".encode()).decode()
    assert {tunnel.authorization for tunnel in proxy.tunnels} == {f"Basic {credentials}"}
    assert f"discord: connecting through the proxy at http://127.0.0.1:{proxy.port}" in caplog.messages
    assert PROXY_SECRET not in caplog.text and credentials not in caplog.text


def test_which_proxy_the_environment_names() -> None:
    """As httpx reads it for Telegram: lower-case names first, ALL_PROXY as the fallback, NO_PROXY wins."""
    assert https_proxy({}, "discord.com") is None
    assert https_proxy({"HTTPS_PROXY": "http://a:3128"}, "discord.com") == "http://a:3128"
    assert (
        https_proxy({"HTTPS_PROXY": "http://a:3128", "https_proxy": "http://b:3128"}, "discord.com") == "http://b:3128"
    )
    assert https_proxy({"ALL_PROXY": "http://c:3128"}, "discord.com") == "http://c:3128"
    assert https_proxy({"HTTP_PROXY": "http://d:3128"}, "discord.com") is None  # HTTPS only
    for no_proxy in ("discord.com", ".discord.com", "example.org, discord.com:443", "*"):
        assert https_proxy({"HTTPS_PROXY": "http://a:3128", "NO_PROXY": no_proxy}, "discord.com") is None, no_proxy
    for no_proxy in ("notdiscord.com", "example.org", ""):
        assert https_proxy({"HTTPS_PROXY": "http://a:3128", "NO_PROXY": no_proxy}, "discord.com"), no_proxy
    assert where(f"http://egress:{PROXY_SECRET}@proxy.internal:3128") == "http://proxy.internal:3128"


def test_a_proxy_discord_py_cannot_use_is_a_channel_error_naming_it() -> None:
    for proxy in (f"socks5://egress:{PROXY_SECRET}@127.0.0.1:1080", "proxy.internal:3128"):
        environ = {"DISCORD_BOT_TOKEN": TOKEN, "HTTPS_PROXY": proxy}
        with pytest.raises(
            ChannelError, match=r"^discord: the proxy at .* is not an http:// or https:// URL"
        ) as raised:
            discord_connector(lambda: None, DiscordSettings(enabled=True), environ)  # type: ignore[arg-type,return-value]
        assert PROXY_SECRET not in str(raised.value)
