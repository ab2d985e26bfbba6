"""Every user message is stored before answering starts; a failure while answering loses nothing."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bot.config import Config
from bot.embedding import Embedder
from bot.pipeline import KnowledgeResponder, Pipeline
from bot.policy import Decision
from bot.store import ConversationStore
from bot.types import AnsweredBy, Message
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
        assert bot.answered_by == "knowledge" and bot.source_id and bot.confidence and bot.confidence > 0.5
        assert bot.citations[0]["id"] == bot.source_id
        assert bot.timings["total_ms"] > 0 and "retrieval_ms" in bot.timings
        assert handoff.reason == "handoff"
        conversation = await store.conversation("conv-2")
        assert conversation is not None and conversation.handoff and conversation.channel == "web"
        await store.close()

    anyio.run(scenario)


@pytest.mark.parametrize("text", ["\udfff lone surrogate", "nul \x00 byte", "emoji 🙂 and ümlauts"])
def test_any_text_can_be_stored(tmp_path: Path, text: str) -> None:
    async def scenario() -> None:
        store = await ConversationStore.open(tmp_path / "s.sqlite3")
        await store.record_user_turn(Message("c", "web", "u", text))
        (turn,) = await store.turns("c")
        assert len(turn.text) == len(text)
        await store.close()

    anyio.run(scenario)
