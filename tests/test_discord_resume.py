"""Discord after a restart: what an earlier run stored but never answered, or answered but never posted, is
posted once in its channel; what was posted is not posted again. Against the loopback Discord stand-in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio

from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore
from bot.types import AnsweredBy, Message, Reply
from tests.discord_api import ALLOWED_CHANNEL
from tests.discord_harness import Harness, recorded_logs
from tests.polling import wait_for_count

USER = 1400000000000000777


def guild_message(n: int, text: str) -> Message:
    return Message(
        conversation_id=f"discord:{ALLOWED_CHANNEL}:{USER}",
        channel="discord",
        user_id=str(USER),
        text=text,
        metadata={"discord_channel_id": str(ALLOWED_CHANNEL), "discord_message_id": str(n)},
        client_message_id=f"discord:{n}",
    )


def test_a_restart_posts_once_what_the_last_run_left_unanswered_or_unsent(
    tmp_path: Path, embedder: Embedder, demo_index_template: Path
) -> None:
    store_path = tmp_path / "data" / "conversations.sqlite3"

    async def left_behind() -> None:
        store = await ConversationStore.open(store_path)
        try:
            # Stored, then the process died before answering.
            await store.record_user_turn(guild_message(1, "How can I track my order?"))
            # Answered, then it died before the post went out.
            asked = await store.record_user_turn(guild_message(2, "Can I pay with PayPal?"))
            stored = Reply("Stored answer about PayPal.", AnsweredBy.KNOWLEDGE)
            await store.record_bot_turn(guild_message(2, "").conversation_id, stored, {}, asked)
            # Answered and posted: done.
            done = await store.record_user_turn(guild_message(3, "hello"))
            sent = await store.record_bot_turn(guild_message(3, "").conversation_id,
                                               Reply("Already posted.", AnsweredBy.FALLBACK), {}, done)  # fmt: skip
            await store.mark_delivered(sent)
        finally:
            await store.close()

    anyio.run(left_behind)
    with (
        recorded_logs("connectors.discord_channel") as records,
        Harness(tmp_path, embedder, demo_index_template) as harness,
    ):
        wait_for_count(lambda: [r for r in records if "resumed 2 messages" in r.getMessage()], 1, 60,
                       "the resume to finish")  # fmt: skip
        posts = harness.fake.recorded(harness.posts_to(ALLOWED_CHANNEL))
    contents = [post.body["content"] for post in posts]
    assert len(contents) == 2, contents
    assert "tracking link" in contents[0]
    assert contents[1] == "Stored answer about PayPal."
    with sqlite3.connect(store_path) as db:
        undelivered = db.execute("SELECT COUNT(*) FROM turns WHERE role = 'bot' AND delivered_at IS NULL").fetchone()
    assert undelivered == (0,)
