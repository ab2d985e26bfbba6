"""One message's way through the engine: store it, decide, respond, store the reply."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread

from bot.config import AnsweringSettings, MessagesSettings
from bot.policy import Decision, ResponsePolicy
from bot.replies import compose_reply, error_reply
from bot.store import ConversationStore
from bot.types import Message, Reply

log = logging.getLogger(__name__)

DeltaSink = Callable[[str], Awaitable[None]]  # receives each piece of a reply as it is produced


class Responder(Protocol):
    """Turns a decision into a reply. A generating responder streams pieces to `on_delta` first."""

    async def respond(self, message: Message, decision: Decision, on_delta: DeltaSink | None) -> Reply: ...


class KnowledgeResponder:
    """Answers straight from the knowledge base: nothing to stream."""

    def __init__(self, messages: MessagesSettings, settings: AnsweringSettings) -> None:
        self._messages = messages
        self._settings = settings

    async def respond(self, message: Message, decision: Decision, on_delta: DeltaSink | None) -> Reply:
        return compose_reply(decision, self._messages, self._settings)


@dataclass(frozen=True)
class Exchange:
    user_turn_id: int
    bot_turn_id: int
    reply: Reply
    repeated: bool = False  # the message was already answered; this is the stored reply


class _Decider(Protocol):
    def decide(self, raw_text: str) -> Decision: ...


class Pipeline:
    def __init__(
        self,
        policy: ResponsePolicy | _Decider,
        store: ConversationStore,
        responder: Responder,
        messages: MessagesSettings,
    ) -> None:
        self.policy = policy
        self.store = store
        self.responder = responder
        self._messages = messages
        # One message at a time per conversation: keeps replies in order and resends answered once.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def handle(self, message: Message) -> Reply:
        return (await self.exchange(message)).reply

    async def exchange(
        self,
        message: Message,
        on_delta: DeltaSink | None = None,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
    ) -> Exchange:
        """Answer one message. Never raises for a problem in answering: the customer gets a safe reply."""
        lock = self._locks.get(message.conversation_id)
        if lock is None:
            lock = self._locks[message.conversation_id] = asyncio.Lock()
        async with lock:
            return await self._exchange(message, on_delta, on_stored)

    async def _exchange(
        self,
        message: Message,
        on_delta: DeltaSink | None,
        on_stored: Callable[[int], Awaitable[None]] | None,
    ) -> Exchange:
        started = time.perf_counter()
        user_turn_id = None
        if message.client_message_id is not None:
            earlier = await self.store.user_turn_by_client_id(message.conversation_id, message.client_message_id)
            if earlier is not None:
                answered = await self.store.reply_to(earlier.id)
                if answered is not None:
                    return Exchange(earlier.id, answered.id, answered.as_reply(), repeated=True)
                user_turn_id = earlier.id  # stored, but its answer was lost: answer it now
        if user_turn_id is None:
            user_turn_id = await self.store.record_user_turn(message)  # before anything that could fail
        if on_stored is not None:
            await on_stored(user_turn_id)

        timings: dict[str, float] = {}
        try:
            # Embedding and search are CPU work: keep them off the event loop.
            decision = await anyio.to_thread.run_sync(self.policy.decide, message.text)
            timings["retrieval_ms"] = decision.retrieval_ms
            reply = await self.responder.respond(message, decision, on_delta)
        except Exception:
            log.exception("answering failed for conversation %s", message.conversation_id)
            reply = error_reply(self._messages)
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        bot_turn_id = await self.store.record_bot_turn(message.conversation_id, reply, timings, user_turn_id)
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
        return Exchange(user_turn_id, bot_turn_id, reply)
