"""One message's way through the engine: store it, decide, compose, store the reply."""

from __future__ import annotations

import logging
import time

import anyio.to_thread

from bot.config import AnsweringSettings, MessagesSettings
from bot.policy import ResponsePolicy
from bot.replies import compose_reply, error_reply
from bot.store import ConversationStore
from bot.types import Message, Reply

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        policy: ResponsePolicy,
        store: ConversationStore,
        messages: MessagesSettings,
        settings: AnsweringSettings,
    ) -> None:
        self.policy = policy
        self.store = store
        self._messages = messages
        self._settings = settings

    async def handle(self, message: Message) -> Reply:
        """Answer one message. Never raises for a problem in answering: the customer gets a safe reply."""
        started = time.perf_counter()
        await self.store.record_user_turn(message)  # before anything that could fail
        timings: dict[str, float] = {}
        try:
            # Embedding and search are CPU work: keep them off the event loop.
            decision = await anyio.to_thread.run_sync(self.policy.decide, message.text)
            timings["retrieval_ms"] = decision.retrieval_ms
            reply = compose_reply(decision, self._messages, self._settings)
        except Exception:
            log.exception("answering failed for conversation %s", message.conversation_id)
            reply = error_reply(self._messages)
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        await self.store.record_bot_turn(message.conversation_id, reply, timings)
        log.info(
            "conversation=%s channel=%s answered_by=%s reason=%s source=%s confidence=%.3f total_ms=%.1f",
            message.conversation_id,
            message.channel,
            reply.answered_by,
            reply.reason,
            reply.source_id,
            reply.confidence,
            timings["total_ms"],
        )
        return reply
