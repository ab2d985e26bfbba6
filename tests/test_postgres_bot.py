"""Bot processes on a PostgreSQL store (a real PostgreSQL 15 on loopback), with Redis for ordering: one
conversation answered across two processes, and a process that loses its database says so."""

from __future__ import annotations

import anyio
import httpx

from bot.config import load_config
from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore
from tests.conftest import ConfigFactory, LiveServer, free_port
from tests.postgres_server import NEEDS_POSTGRES, PostgresServer
from tests.redis_server import NEEDS_REDIS, RedisServer

_QUESTIONS = ("Do you ship to Norway?", "How do I return an item?", "How long does a refund take?",
              "Can I change my delivery address?", "Do you ship to Norway?", "Thanks!")  # fmt: skip


@NEEDS_POSTGRES
@NEEDS_REDIS
def test_two_processes_on_one_postgres_store_answer_each_message_once_in_order(
    postgres_server: PostgresServer, postgres_url: str, redis_server: RedisServer, write_config: ConfigFactory,
    embedder: Embedder,
) -> None:  # fmt: skip
    config = load_config(write_config(
        store={"url": postgres_url, "pool_size": 4},
        coordination={"redis_url": redis_server.url},
        web={"messages_per_minute_per_conversation": 100, "messages_per_minute_per_ip": 100},
    ))  # fmt: skip
    environ = {"SUPPORTBOT_DATABASE_PASSWORD": postgres_server.password}
    first_process, second_process = (
        LiveServer(config, embedder, environ=environ),
        LiveServer(config, embedder, environ=environ),
    )
    with first_process as first, second_process as second:
        database = first.client().get("/health").json()["database"]
        assert database["kind"] == "postgresql" and database["ok"] and database["latency_ms"] >= 0
        conversation, replies = None, []
        for n, question in enumerate(_QUESTIONS):
            body = {"text": question, "client_message_id": f"m-{n}"} | (
                {"conversation_id": conversation} if conversation else {}
            )
            response = httpx.post(f"{(first, second)[n % 2].url}/api/chat", json=body, timeout=60)
            assert response.status_code == 200, response.text
            conversation = response.json()["conversation_id"]
            replies.append(response.json()["reply"])
        resent = httpx.post(
            f"{second.url}/api/chat",
            timeout=60,
            json={"text": _QUESTIONS[0], "client_message_id": "m-0", "conversation_id": conversation},
        )
        assert resent.status_code == 200 and resent.json()["reply"] == replies[0]  # the stored reply, not a new one
    assert not config.store.path.exists()  # nothing went to a SQLite file

    async def read() -> list[tuple[str, str, int | None]]:
        store = await ConversationStore.open(postgres_url, postgres_server.password)
        try:
            turns = await store.turns(conversation or "")
            return [(t.role, t.text, t.reply_to) for t in turns]
        finally:
            await store.close()

    turns = anyio.run(read)
    assert [text for role, text, _ in turns if role == "user"] == list(_QUESTIONS)  # each stored once, in order
    assert [text for role, text, _ in turns if role == "bot"] == replies  # each answered once, in order
    assert [role for role, _, _ in turns] == ["user", "bot"] * len(_QUESTIONS)


@NEEDS_POSTGRES
def test_a_bot_that_loses_its_database_says_so_refuses_messages_and_recovers(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    database = PostgresServer(free_port())  # its own server: this test stops it
    database.start()
    try:
        config = load_config(write_config(store={"url": database.create_database("support")}))
        with LiveServer(config, embedder, environ={"SUPPORTBOT_DATABASE_PASSWORD": database.password}) as server:
            client = server.client()
            assert client.post("/api/chat", json={"text": "Do you ship to Norway?"}).status_code == 200
            database.pause()
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["database"]["ok"] is False
            assert "cannot be reached" in health.json()["database"]["problem"]
            assert database.password not in health.text
            refused = client.post("/api/chat", json={"text": "How do I return an item?", "client_message_id": "r-1"})
            assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
            database.resume()
            assert client.get("/health").status_code == 200  # the pool connects again by itself
            retried = client.post("/api/chat", json={"text": "How do I return an item?", "client_message_id": "r-1"})
            assert retried.status_code == 200 and retried.json()["citations"]
    finally:
        database.stop()
