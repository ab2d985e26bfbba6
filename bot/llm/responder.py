"""Answers written by the dialogue model over retrieved knowledge, with the knowledge answer as the net.

The model is used only where the engine already knows what the answer is about: a confident
retrieval (answer), a few close candidates (ask which one), or a request for a person (handoff). Whenever
the model is down, slow, erroring, unable to cite what it was shown, or its prompt is missing, the
customer gets what the bot would have said without a model, at once, and a log line says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

import anyio.to_thread
from langchain_core.messages import BaseMessage

from bot.answering.policy import Decision, DecisionKind, ResponsePolicy
from bot.answering.replies import citation_for
from bot.config import AnsweringSettings, LLMSettings, MessagesSettings
from bot.llm.breaker import CircuitBreaker
from bot.llm.client import ChatModel, ModelUnavailable
from bot.llm.grounding import answer_messages, history_messages, read_citations, task_messages, transcript
from bot.llm.prompts import PromptLibrary
from bot.pipeline import DeltaSink, KnowledgeResponder
from bot.retrieval.index import Hit
from bot.storage.store import ConversationStore
from bot.storage.turns import Turn
from bot.types import AnsweredBy, Message, Reply

log = logging.getLogger(__name__)

_MAX_SHORT_REPLY_CHARS = 500  # a clarifying question or a handoff note; anything longer went astray


class ModelResponder:
    def __init__(
        self,
        model: ChatModel,
        prompts: PromptLibrary,
        policy: ResponsePolicy,
        store: ConversationStore,
        bot_name: str,
        messages: MessagesSettings,
        answering: AnsweringSettings,
    ) -> None:
        self.model = model
        self.prompts = prompts
        self._policy = policy
        self._store = store
        self._bot_name = bot_name
        self._messages = messages
        self._answering = answering
        self._knowledge = KnowledgeResponder(messages, answering)
        settings: LLMSettings = model.settings
        self._settings = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._background: set[asyncio.Task[None]] = set()

    async def respond(self, message: Message, decision: Decision, on_delta: DeltaSink | None) -> Reply:
        if decision.kind is DecisionKind.HANDOFF:
            return await self._handoff(message, decision)
        if decision.kind not in (DecisionKind.ANSWER, DecisionKind.NOT_SURE):
            return await self._knowledge.respond(message, decision, on_delta)
        history = await self._history(message)
        if decision.kind is DecisionKind.NOT_SURE:
            decision = await self._as_follow_up(decision, history)
        if decision.kind is DecisionKind.NOT_SURE:
            return await self._clarify(message, decision)
        return await self._answer(message, decision, history, on_delta)

    # -- answering -----------------------------------------------------------------------------

    async def _answer(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply:
        fallback = await self._knowledge.respond(message, decision, None)
        if not self.prompts.available("system") or not self.prompts.available("answer"):
            return self._fall_back(fallback, "prompt_unavailable", "the system or answer prompt never loaded")
        hits = self._context(decision)
        chat = answer_messages(
            self.prompts,
            self._bot_name,
            message.text,
            hits,
            history_messages(history, self._settings.history_max_tokens),
        )
        try:
            text = await self._generate(chat, on_delta)
        except ModelUnavailable as err:
            return self._fall_back(fallback, "model_unavailable", err.reason)
        answer = read_citations(text, hits)
        if not answer.cited or not answer.text:
            return self._fall_back(fallback, "model_uncited", "the model's answer cited none of the passages")
        cited_titles = {hit.title for hit in answer.cited}
        return Reply(
            text=answer.text,
            answered_by=AnsweredBy.LLM,
            confidence=round(decision.confidence, 4),
            citations=tuple(citation_for(hit) for hit in answer.cited),
            # The related topics, as with the knowledge answer, less those the model's answer already cites.
            quick_replies=tuple(title for title in fallback.quick_replies if title not in cited_titles),
            source_id=answer.cited[0].item_id,
            reason="llm",
        )

    def _context(self, decision: Decision) -> list[Hit]:
        """The decided item first, then other candidates good enough to be suggested."""
        chosen = [decision.answer] if decision.answer is not None else []
        others = [
            hit
            for hit in decision.candidates
            if hit not in chosen and hit.score >= self._answering.suggestion_min_score
        ]
        return (chosen + others)[: self._settings.context_passages]

    async def _as_follow_up(self, decision: Decision, history: Sequence[Turn]) -> Decision:
        """'And how long does that take?': read an unclear message together with the previous question."""
        previous = next((t.text for t in reversed(history) if t.role == "user"), None)
        if previous is None:
            return decision
        combined = await anyio.to_thread.run_sync(self._policy.decide, f"{previous}\n{decision.text}")
        if combined.kind is not DecisionKind.ANSWER:
            return decision
        log.info("follow-up read with the previous question: %s", combined.answer.item_id if combined.answer else "")
        return replace(combined, text=decision.text)

    async def _clarify(self, message: Message, decision: Decision) -> Reply:
        fallback = await self._knowledge.respond(message, decision, None)
        options = [hit.title for hit in decision.candidates if hit.score >= self._answering.suggestion_min_score]
        best = decision.candidates[0] if decision.candidates else None
        near_miss = best is not None and self._policy.clearance(best) >= -self._settings.clarify_band
        if not near_miss or len(options) < 2 or not self.prompts.available("clarify"):
            return fallback  # far from everything: the honest "not sure" with its offer of a person
        chat = task_messages(
            self.prompts,
            "clarify",
            self._bot_name,
            question=message.text,
            options="\n".join(f"- {option}" for option in options[: self._answering.suggestions]),
        )
        return await self._short_reply(chat, fallback, "clarifying question", reason="clarify")

    # -- handoff -------------------------------------------------------------------------------

    async def _handoff(self, message: Message, decision: Decision) -> Reply:
        fallback = await self._knowledge.respond(message, decision, None)
        turns = await self._store.turns(message.conversation_id, limit=self._settings.history_turns + 1)
        text_of_conversation = transcript(turns)
        self._summarise_later(message.conversation_id, text_of_conversation)
        if not self.prompts.available("handoff"):
            return fallback
        chat = task_messages(self.prompts, "handoff", self._bot_name, transcript=text_of_conversation)
        return await self._short_reply(chat, fallback, "handoff note", reason=fallback.reason)

    def _summarise_later(self, conversation_id: str, text_of_conversation: str) -> None:
        """The agent's summary is written after the customer has their reply; it never delays it."""
        if not self.prompts.available("agent_summary"):
            return
        task = asyncio.get_running_loop().create_task(self._summarise(conversation_id, text_of_conversation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _summarise(self, conversation_id: str, text_of_conversation: str) -> None:
        chat = task_messages(self.prompts, "agent_summary", self._bot_name, transcript=text_of_conversation)
        try:
            summary = (await self._generate(chat, None)).strip()
        except ModelUnavailable as err:
            log.warning("no handoff summary for conversation %s: %s", conversation_id, err.reason)
            return
        await self._store.set_handoff_summary(conversation_id, summary)
        log.info("handoff summary stored for conversation %s", conversation_id)

    # -- the model -----------------------------------------------------------------------------

    async def _short_reply(self, chat: list[BaseMessage], fallback: Reply, what: str, reason: str) -> Reply:
        """A short model-written text in place of `fallback`'s, which stands if the model fails or rambles."""
        try:
            text = (await self._generate(chat, None)).strip()
        except ModelUnavailable as err:
            return self._fall_back(fallback, "model_unavailable", err.reason)
        if not text or len(text) > _MAX_SHORT_REPLY_CHARS:
            return self._fall_back(fallback, "model_unusable", f"the {what} was empty or too long")
        return replace(fallback, text=text, answered_by=AnsweredBy.LLM, reason=reason)

    async def _generate(self, chat: list[BaseMessage], on_delta: DeltaSink | None) -> str:
        if not self.breaker.allow():
            raise ModelUnavailable(f"circuit open, next try in {self.breaker.seconds_until_retry():.0f}s")
        pieces: list[str] = []
        try:
            async for piece in self.model.stream(chat):
                pieces.append(piece)
                if on_delta is not None:
                    await on_delta(piece)
        except ModelUnavailable:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return "".join(pieces)

    async def _history(self, message: Message) -> list[Turn]:
        if self._settings.history_turns == 0:
            return []
        turns = await self._store.turns(message.conversation_id, limit=self._settings.history_turns + 1)
        return turns[:-1] if turns and turns[-1].role == "user" else turns  # the last one is this message

    def _fall_back(self, reply: Reply, why: str, detail: str) -> Reply:
        log.warning("answered without the model (%s): %s", why, detail)
        # A knowledge answer says why the model was not used; a not-sure or handoff keeps its reason.
        return replace(reply, reason=why if reply.reason in ("faq", "passage") else reply.reason)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
