"""Every user message is stored before answering starts; a failure while answering loses nothing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from bot.answering.policy import Decision
from bot.config import Config
from bot.pipeline import KnowledgeResponder, Pipeline
from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore, StoreError
from bot.types import AnsweredBy, Message, Reply
from serving.runtime import build_engine


class ExplodingPolicy:
    """A test double for a policy that fails mid-answer (what cannot be provoked on demand otherwise)."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.seen_stored: list[str] = []

    def decide(self, text: str) -> Decision:
        import sqlite3

        with sqlite3.connect(self.store_path) as db:
            self.seen_stored = [row[0] for row in db.execute("SELECT text FROM turns WHERE role = 'user'")]
        raise RuntimeError("model exploded")


def test_message_is_stored_before_answering_and_failure_gives_a_safe_reply(tmp_path: Path, config: Config) -> None:
    path = tmp_path / "store.sqlite3"
    policy = ExplodingPolicy(path)

    async def scenario() -> None:
        store = await ConversationStore.open(path)
        pipeline = Pipeline(policy, store, KnowledgeResponder(config.messages, config.answering), config.messages)
        reply = await pipeline.handle(Message("conv-1", "test", "u1", "where is my parcel?"))
        assert reply.answered_by is AnsweredBy.FALLBACK and reply.text == config.messages.error
        turns = await store.turns("conv-1")
        assert [(t.role, t.text, t.reason) for t in turns] == [
            ("user", "where is my parcel?", None),
            ("bot", config.messages.error, "error"),
        ]
        await store.close()

    anyio.run(scenario)
    assert policy.seen_stored == ["where is my parcel?"]  # stored before the policy ran


def test_turns_record_source_confidence_and_timings(config: Config, embedder: Embedder) -> None:
    engine = build_engine(config, embedder)

    async def scenario() -> None:
        store = await ConversationStore.open(config.store.path)
        pipeline = Pipeline(
            engine.policy, store, KnowledgeResponder(config.messages, config.answering), config.messages
        )
        await pipeline.handle(Message("conv-2", "web", "u2", "how do I return an item?"))
        await pipeline.handle(Message("conv-2", "web", "u2", "I want to talk to a human"))
        user, bot, _, handoff = await store.turns("conv-2")
        assert user.role == "user" and bot.role == "bot"
        why = f"{bot.answered_by} {bot.reason} {bot.confidence} {bot.text[:120]!r}"
        assert bot.answered_by == "knowledge" and bot.source_id and bot.confidence and bot.confidence > 0.5, why
        assert bot.citations[0]["id"] == bot.source_id
        assert bot.timings["total_ms"] > 0 and "retrieval_ms" in bot.timings
        assert handoff.reason == "handoff"
        conversation = await store.conversation("conv-2")
        assert conversation is not None and conversation.handoff and conversation.channel == "web"
        await store.close()

    anyio.run(scenario)


# The store as the first release wrote it (user_version 1): no quick replies, handoff flags per turn,
# client message ids, reply links or handoff summaries yet.
_FIRST_RELEASE_SCHEMA = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, user_id TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, handoff INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL REFERENCES conversations(id),
    role TEXT NOT NULL CHECK (role IN ('user', 'bot')), text TEXT NOT NULL, created_at REAL NOT NULL,
    answered_by TEXT, source_id TEXT, confidence REAL, reason TEXT, citations TEXT, timings TEXT, metadata TEXT
);
CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
INSERT INTO conversations VALUES ('old', 'web', 'u1', 1.0, 2.0, 0);
INSERT INTO turns (conversation_id, role, text, created_at, metadata)
    VALUES ('old', 'user', 'where is my order', 1.0, '{}');
INSERT INTO turns (conversation_id, role, text, created_at, answered_by, source_id, confidence, citations, timings)
    VALUES ('old', 'bot', 'Track it under Account > Orders.', 2.0, 'knowledge', 'track-order', 0.9, '[]', '{}');
PRAGMA user_version = 1;
"""


def test_a_store_from_the_first_release_opens_keeps_its_history_and_records_new_turns(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_FIRST_RELEASE_SCHEMA)

    async def scenario() -> None:
        for _ in range(2):  # upgrading is done once; opening the upgraded store again changes nothing
            store = await ConversationStore.open(path)
            await store.close()
        store = await ConversationStore.open(path)
        old = await store.turns("old")
        assert [(t.role, t.text, t.source_id, t.handoff, t.client_message_id) for t in old] == [
            ("user", "where is my order", None, False, None),
            ("bot", "Track it under Account > Orders.", "track-order", False, None),
        ]
        user_turn = await store.record_user_turn(Message("old", "web", "u1", "and my refund?", client_message_id="m-7"))
        reply = Reply(text="Let me get a person.", answered_by=AnsweredBy.HUMAN, confidence=0.0, handoff=True)
        await store.record_bot_turn("old", reply, {"total": 1.0}, reply_to=user_turn)
        await store.set_handoff_summary("old", "asks about a refund")
        resent = await store.user_turn_by_client_id("old", "m-7")
        assert resent is not None and resent.id == user_turn
        answer = await store.reply_to(user_turn)
        assert answer is not None and answer.handoff and answer.text == "Let me get a person."
        conversation = await store.conversation("old")
        assert conversation is not None and conversation.handoff
        assert conversation.handoff_summary == "asks about a refund"
        assert len(await store.turns("old")) == 4
        await store.close()

    anyio.run(scenario)


def test_a_file_that_is_not_a_store_is_refused_with_an_error_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    path.write_bytes(b"not a database " * 100)

    before = set(threading.enumerate())

    async def scenario() -> None:
        with pytest.raises(StoreError, match=f"conversation store {path} cannot be opened: file is not a database"):
            await ConversationStore.open(path)

    anyio.run(scenario)
    assert path.read_bytes() == b"not a database " * 100
    # A connection left open keeps a worker thread alive, and the process could never exit.
    deadline = time.monotonic() + 30
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left
