"""Answers written by the dialogue model over retrieved knowledge, with the knowledge answer as the net.

The model is used only where the engine already knows what the answer is about: a confident
retrieval (answer), a few close candidates (ask which one), or a request for a person (handoff). Whenever
the model is down, slow, erroring, unable to cite what it was shown, or its prompt is missing, the
customer gets what the bot would have said without a model, at once, and a log line says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from langchain_core.messages import BaseMessage

from bot.answering.policy import Decision, DecisionKind
from bot.answering.replies import citation_for
from bot.config import AnsweringSettings, LLMSettings, MessagesSettings
from bot.llm.breaker import CircuitBreaker
from bot.llm.client import ChatModel, ModelUnavailable
from bot.llm.grounding import (
    answer_context,
    answer_messages,
    clarify_options,
    history_messages,
    options_list,
    read_citations,
    task_messages,
    transcript,
)
from bot.llm.prompts import PromptLibrary
from bot.pipeline import DeltaSink, KnowledgeResponder
from bot.retrieval.index import Hit
from bot.storage.turns import Turn
from bot.types import AnsweredBy, Message, Reply

log = logging.getLogger(__name__)

_MAX_SHORT_REPLY_CHARS = 500  # a clarifying question or a handoff note; anything longer went astray


class ModelResponder:
    """A Responder (bot.pipeline) and the Summariser of handed-over conversations."""

    reads_follow_ups = True

    def __init__(
        self,
        model: ChatModel,
        prompts: PromptLibrary,
        clearance: Callable[[Hit], float],
        bot_name: str,
        messages: MessagesSettings,
        answering: AnsweringSettings,
    ) -> None:
        """`clearance`: how far a candidate is above the answer threshold (ResponsePolicy.clearance)."""
        self.model = model
        self.prompts = prompts
        self._clearance = clearance
        self._bot_name = bot_name
        self._messages = messages
        self._answering = answering
        self._knowledge = KnowledgeResponder(messages, answering)
        settings: LLMSettings = model.settings
        self._settings = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)

    @property
    def history_turns(self) -> int:
        return self._settings.history_turns

    async def respond(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply:
        if decision.kind is DecisionKind.HANDOFF:
            return await self._handoff(message, decision, history)
        if decision.kind is DecisionKind.NOT_SURE:
            return await self._clarify(message, decision)
        if decision.kind is not DecisionKind.ANSWER:
            return await self._knowledge.respond(message, decision, history, on_delta)
        return await self._answer(message, decision, history, on_delta)

    # -- answering -----------------------------------------------------------------------------

    async def _answer(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply:
        fallback = await self._knowledge.respond(message, decision, (), None)
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
            handoff=fallback.handoff,  # the entry is marked for a person
            # The related topics, as with the knowledge answer, less those the model's answer already cites.
            quick_replies=tuple(title for title in fallback.quick_replies if title not in cited_titles),
            source_id=answer.cited[0].item_id,
            reason="llm",
        )

    def _context(self, decision: Decision) -> list[Hit]:
        return answer_context(
            decision.answer, decision.candidates, self._answering.suggestion_min_score, self._settings.context_passages
        )

    async def _clarify(self, message: Message, decision: Decision) -> Reply:
        fallback = await self._knowledge.respond(message, decision, (), None)
        options = clarify_options(decision.candidates, self._answering.suggestion_min_score)
        best = decision.candidates[0] if decision.candidates else None
        near_miss = best is not None and self._clearance(best) >= -self._settings.clarify_band
        if not near_miss or len(options) < 2 or not self.prompts.available("clarify"):
            return fallback  # far from everything: the honest "not sure" with its offer of a person
        chat = task_messages(
            self.prompts,
            "clarify",
            self._bot_name,
            question=message.text,
            options=options_list(options[: self._answering.suggestions]),
        )
        return await self._short_reply(chat, fallback, "clarifying question", reason="clarify")

    # -- handoff -------------------------------------------------------------------------------

    async def _handoff(self, message: Message, decision: Decision, history: Sequence[Turn]) -> Reply:
        fallback = await self._knowledge.respond(message, decision, (), None)
        if not self.prompts.available("handoff"):
            return fallback
        text_of_conversation = transcript(history, latest=message.text)
        chat = task_messages(self.prompts, "handoff", self._bot_name, transcript=text_of_conversation)
        return await self._short_reply(chat, fallback, "handoff note", reason=fallback.reason)

    async def summarise(self, turns: Sequence[Turn]) -> str | None:
        """For the agent who takes over (written after the customer has the handoff reply)."""
        if not self.prompts.available("agent_summary"):
            return None
        chat = task_messages(self.prompts, "agent_summary", self._bot_name, transcript=transcript(turns))
        try:
            return (await self._generate(chat, None)).strip() or None
        except ModelUnavailable as err:
            log.warning("no handoff summary: %s", err.reason)
            return None

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

    def _fall_back(self, reply: Reply, why: str, detail: str) -> Reply:
        log.warning("answered without the model (%s): %s", why, detail)
        # A knowledge answer says why the model was not used; a not-sure or handoff keeps its reason.
        return replace(reply, reason=why if reply.reason in ("faq", "passage") else reply.reason)
