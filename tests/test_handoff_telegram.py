"""A person takes over a Telegram chat: against the loopback Bot API (a stand-in speaking Telegram's HTTP
API), with the real app, store and embedding model."""

from __future__ import annotations

import html
import sqlite3
import time

from bot.config import Config
from bot.retrieval.embedding import Embedder
from tests.conftest import ConfigFactory, LiveServer
from tests.telegram_api import FakeBotApi
from tests.telegram_fixtures import env, telegram_config

ALICE = "alice-token-0123456789"
AGENTS = {"SUPPORTBOT_AGENT_TOKENS": f"alice:{ALICE}"}
AUTH = {"Authorization": f"Bearer {ALICE}"}
CONVERSATION = "telegram:555"


def wait_for_held(config: Config, count: int, timeout: float = 60.0) -> None:
    """Until `count` of chat 555's messages are kept for the person (the router has seen them)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(config.store.path) as db:
            (held,) = db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ? AND held = 1",
                                 (CONVERSATION,)).fetchone()  # fmt: skip
        if held >= count:
            return
        assert time.monotonic() < deadline, f"{held} of {count} messages held"
        time.sleep(0.05)


def to_chat(api: FakeBotApi) -> list[str]:
    return [c.params["text"] for c in api.delivered() if str(c.params["chat_id"]) == "555"]


def test_an_agent_answers_a_telegram_chat_and_gives_it_back(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ=env(api) | AGENTS) as server, server.client() as client:
        client.get("/api/agent/me", headers=AUTH)
        api.push_update({"message": api.user_message("can I speak to a real person?")})
        api.wait_for("sendMessage", 1)
        assert to_chat(api)[0].startswith(html.escape(config.messages.handoff))
        assert client.post(f"/api/agent/conversations/{CONVERSATION}/claim", headers=AUTH).status_code == 200

        sent = client.post(f"/api/agent/conversations/{CONVERSATION}/messages", headers=AUTH,
                           json={"text": "Hi, I'm Alice <from support> & happy to help."})  # fmt: skip
        assert sent.status_code == 200 and sent.json()["delivered"] is True
        for text in ("my order is late", "it's order 4711"):
            api.push_update({"message": api.user_message(text)})
        wait_for_held(config, 2)

        assert client.post(f"/api/agent/conversations/{CONVERSATION}/release", headers=AUTH).status_code == 200
        api.push_update({"message": api.user_message("How can I track my order?")})
        api.wait_for("sendMessage", 3)
        detail = client.get(f"/api/agent/conversations/{CONVERSATION}", headers=AUTH).json()
    _, agent, answer = to_chat(api)
    # HTML-escaped, with the agent's name; nothing from the bot to the two held messages, then the bot again
    assert agent == html.escape("alice:\nHi, I'm Alice <from support> & happy to help.")
    assert "track" in answer.lower() and "Sources:" in answer
    assert [t["role"] for t in detail["turns"]] == ["user", "bot", "agent", "user", "user", "user", "bot"]
    assert all(t["delivered"] for t in detail["turns"] if t["role"] in ("bot", "agent"))
