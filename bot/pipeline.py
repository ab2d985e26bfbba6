"""One message's way through the engine: store it, decide, respond, store the reply; then who sends it.

A channel stores a message (`receive`) before it acknowledges it to the customer's app, and answers it
(`exchange`) whenever it can: at once, or after a restart (`pending`). Each message is answered once,
however often it arrives (its `client_message_id`), and each reply is sent once: the sender claims it
first (`claim_delivery`) and confirms it after (`delivered`). A claim by a process that died while
sending is taken over, so a kill between the send and its confirmation can repeat that one reply; no
other way loses or repeats one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import anyio.to_thread

from bot.actions.forms import FormRunner, FormStep
from bot.answering.frustration import FrustrationDetector
from bot.answering.guard import storable
from bot.answering.policy import Decision, DecisionKind, ResponsePolicy
from bot.answering.replies import compose_reply, error_reply, notice_reply
from bot.config import AnsweringSettings, HandoffSettings, MessagesSettings
from bot.conversation.router import HELD_REASON, Router
from bot.conversation.state import Owner, Ownership, Staffing
from bot.storage.coordination import Coordination, LocalCoordination
from bot.storage.store import ConversationStore
from bot.storage.turns import Turn
from bot.storage.unavailable import Unavailable
from bot.types import AnsweredBy, Message, MessageKind, Reply

log = logging.getLogger(__name__)

DeltaSink = Callable[[str], Awaitable[None]]  # receives each piece of a reply as it is produced
# How far back a start looks for messages an earlier run stored but did not answer (or send the answer to).
RESUME_WINDOW_S = 24 * 3600.0
SUMMARY_TURNS = 11  # the turns a handoff summary is written from, the last one included


class Responder(Protocol):
    """Turns a decision into a reply, from what the pipeline gives it: it never reads the store or decides.

    `history_turns`: how many earlier turns it wants (`history`, oldest first, without this message);
    `reads_follow_ups`: whether an unclear message is read again together with the customer's previous one
    ("and how long does that take?") before it is given. A generating responder streams pieces to `on_delta`.
    """

    @property
    def history_turns(self) -> int: ...

    @property
    def reads_follow_ups(self) -> bool: ...

    async def respond(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply: ...


class Summariser(Protocol):
    """Writes the summary an agent reads when a conversation is handed over; None when it cannot."""

    async def summarise(self, turns: Sequence[Turn]) -> str | None: ...


class KnowledgeResponder:
    """Answers straight from the knowledge base: nothing to stream, no history needed."""

    history_turns = 0
    reads_follow_ups = False

    def __init__(self, messages: MessagesSettings, settings: AnsweringSettings) -> None:
        self._messages = messages
        self._settings = settings

    async def respond(
        self, message: Message, decision: Decision, history: Sequence[Turn], on_delta: DeltaSink | None
    ) -> Reply:
        return compose_reply(decision, self._messages, self._settings)


@dataclass(frozen=True)
class Exchange:
    user_turn_id: int
    bot_turn_id: int
    reply: Reply
    repeated: bool = False  # the message was already answered; this is the stored reply
    delivered: bool = False  # that stored reply's send was confirmed (only ever true when repeated)
    state: Owner = Owner.BOT  # who owns the conversation after this message

    @property
    def silent(self) -> bool:
        """Kept for a person, with nothing to send: the bot says nothing (bot_turn_id is 0)."""
        return self.bot_turn_id == 0


class ClientIdConflict(Exception):
    """A client_message_id already names a different message: answering it would answer the wrong text."""

    def __init__(self, client_message_id: str) -> None:
        super().__init__(f"client_message_id {client_message_id!r} was already used for a different message")
        self.client_message_id = client_message_id


class _Decider(Protocol):
    def decide(self, raw_text: str) -> Decision: ...


class Pipeline:
    def __init__(
        self,
        policy: ResponsePolicy | _Decider,
        store: ConversationStore,
        responder: Responder,
        messages: MessagesSettings,
        handoff: HandoffSettings | None = None,
        staffing: Callable[[], Staffing] = lambda: Staffing.ONLINE,
        notify: Callable[[str, str], None] = lambda conversation_id, kind: None,
        on_reply: Callable[[Message, Reply, float], None] = lambda message, reply, seconds: None,
        summariser: Summariser | None = None,
        forms: FormRunner | None = None,
        coordination: Coordination | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.responder = responder
        self._messages = messages
        handoff = handoff or HandoffSettings()
        frustration = FrustrationDetector(handoff.frustration_below) if handoff.on_frustration else None
        self.router = Router(
            store.ledger, lambda cid, n: store.turns(cid, limit=n), messages, handoff, staffing, frustration
        )
        # One message at a time per conversation (across processes with Redis): keeps replies in order and
        # resends answered once.
        self.coordination: Coordination = coordination or LocalCoordination()
        # Names this process's delivery claims: one left by another instance is a process that died sending.
        self.instance = secrets.token_hex(8)
        self._notify = notify  # (conversation id, what happened): the agent inbox's live view
        self._on_reply = on_reply  # (message, reply, seconds to answer): reply latency for /metrics
        self._summariser = summariser
        self.forms = forms  # business actions and the forms that collect for them; None: none configured
        self._offline_form = handoff.offline_form
        if forms is not None and handoff.offline_form:
            self.router.offline_offer = (messages.leave_message_button,)
        self._background: set[asyncio.Task[None]] = set()  # summaries being written

    async def handle(self, message: Message) -> Reply:
        return (await self.exchange(message)).reply

    async def receive(self, message: Message) -> int:
        """Store a message, once per client_message_id, before its channel is acknowledged; its user turn id.

        Raises ClientIdConflict when the id already names a different text.
        """
        async with self.coordination.conversation_lock(message.conversation_id):
            user_turn_id, _ = await self._store_once(message)
            return user_turn_id

    async def exchange(
        self,
        message: Message,
        on_delta: DeltaSink | None = None,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
        stored_turn_id: int | None = None,
    ) -> Exchange:
        """Answer one message: stored first unless `stored_turn_id` names its stored turn (as `pending` gives).

        Never raises for a problem in answering: the customer gets a safe reply. Raises ClientIdConflict
        when its client_message_id already names a different text.
        """
        async with self.coordination.conversation_lock(message.conversation_id):
            if stored_turn_id is None:
                user_turn_id, answered = await self._store_once(message)
            else:
                user_turn_id, answered = stored_turn_id, await self.store.reply_to(stored_turn_id)
            if answered is not None:
                return Exchange(
                    user_turn_id, answered.id, answered.as_reply(), repeated=True,
                    delivered=answered.delivered_at is not None,
                )  # fmt: skip
            if on_stored is not None:
                await on_stored(user_turn_id)
            ownership = await self.router.ownership(message.conversation_id)
            if ownership.state is not Owner.BOT:
                return await self._hold(message, user_turn_id, ownership)
            return await self._answer(message, user_turn_id, ownership, on_delta)

    async def _hold(self, message: Message, user_turn_id: int, ownership: Ownership) -> Exchange:
        """A person owns the conversation (or will): keep the message for them; a holding message at most."""
        if await self.store.ledger.held(user_turn_id):  # kept before (a resend): nothing new to say
            return Exchange(user_turn_id, 0, _HELD, repeated=True, state=ownership.state)
        held = await self.router.hold(message, user_turn_id, ownership)
        self._notify(message.conversation_id, "message")
        if held is None:  # the customer went back to the bot
            self._notify(message.conversation_id, "release")
            back = Reply(text=self._messages.back_to_bot, answered_by=AnsweredBy.FALLBACK, reason="back_to_bot")
            offline_action = self._offline_action() if self.router.leaves_a_message(message.text) else None
            if self.forms is not None and offline_action is not None:  # a message instead of waiting
                now = await self.router.ownership(message.conversation_id)
                back = await self.forms.start(message, user_turn_id, offline_action, now)
            bot_turn_id = await self.store.record_bot_turn(message.conversation_id, back, {}, user_turn_id)
            return Exchange(user_turn_id, bot_turn_id, back, state=Owner.BOT)
        log.info("conversation=%s channel=%s kept for %s", message.conversation_id, message.channel,
                 held.ownership.agent or "the queue")  # fmt: skip
        if held.reply is None:
            return Exchange(user_turn_id, 0, _HELD, state=held.ownership.state)
        bot_turn_id = await self.store.record_bot_turn(message.conversation_id, held.reply, {}, user_turn_id)
        return Exchange(user_turn_id, bot_turn_id, held.reply, state=held.ownership.state)

    def _offline_action(self) -> str | None:
        """The action of the form that takes a message when nobody is online (handoff.offline_form)."""
        if self.forms is None or not self._offline_form:
            return None
        return self.forms.action_of(self._offline_form)

    async def _store_once(self, message: Message) -> tuple[int, Turn | None]:
        """The message's user turn id (stored now unless it was before) and its stored reply, if any."""
        if message.client_message_id is not None:
            earlier = await self.store.user_turn_by_client_id(message.conversation_id, message.client_message_id)
            if earlier is not None:
                if earlier.text != storable(message.text):
                    raise ClientIdConflict(message.client_message_id)
                return earlier.id, await self.store.reply_to(earlier.id)  # no reply: its answer was lost
        return await self.store.record_user_turn(message), None  # before anything that could fail

    async def pending(self, channel: str, since: float, undelivered_too: bool) -> list[tuple[int, Message]]:
        """Messages a restart still has to answer (and, with `undelivered_too`, to send the answer of)."""
        return await self.store.pending(channel, since, undelivered_too)

    async def claim_delivery(self, exchange: Exchange) -> bool:
        """Whether this caller is the one to send the reply (not sent before, nor being sent now, and there
        is one: a message kept for a person has none)."""
        if exchange.silent:
            return False
        return await self.claim_turn(exchange.bot_turn_id)

    async def delivered(self, exchange: Exchange, sent: bool) -> None:
        """After sending a claimed reply: confirmed, or released for another try."""
        await self.turn_sent(exchange.bot_turn_id, sent)

    async def claim_turn(self, bot_turn_id: int) -> bool:
        """claim_delivery for any stored bot-side turn (a person's reply too)."""
        return await self.store.claim_delivery(bot_turn_id, self.instance)

    async def turn_sent(self, bot_turn_id: int, sent: bool) -> None:
        if sent:
            await self.store.mark_delivered(bot_turn_id)
        else:
            await self.store.release_delivery(bot_turn_id)

    async def send_once(self, bot_turn_id: int, send: Callable[[], Awaitable[bool]]) -> bool:
        """Claim a stored bot-side turn, send it, confirm it (or release it when the send failed or raised).
        False when it was sent before, is being sent by someone else, or could not be sent now."""
        if not await self.claim_turn(bot_turn_id):
            return False
        sent = False
        try:
            sent = await send()
        finally:
            await self.turn_sent(bot_turn_id, sent)
        return sent

    async def origin(self, conversation_id: str) -> dict[str, str] | None:
        """The channel's metadata of the customer's latest message (where to reach them), if any."""
        last = await self.store.ledger.last_user_turn(conversation_id)
        return last.metadata if last is not None else None

    async def people_replies_to_send(self, channel: str, since: float) -> list[Turn]:
        """Replies agents wrote on `channel` since `since` that were never confirmed sent (oldest first)."""
        return await self.store.ledger.undelivered_from_people(channel, since)

    async def _answer(
        self, message: Message, user_turn_id: int, ownership: Ownership, on_delta: DeltaSink | None
    ) -> Exchange:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            if message.kind is not MessageKind.TEXT:
                reply = notice_reply(message, self._messages)
            else:
                reply = await self._respond(message, user_turn_id, ownership, on_delta, timings)
        except Unavailable:  # the index (or another shared part) is away: stored, not answered (a 503; sent again)
            raise
        except Exception:
            log.exception("answering failed for conversation %s", message.conversation_id)
            reply = error_reply(self._messages)
        reply, state = await self.router.after_answer(message, reply)
        if state is Owner.QUEUED:
            self._notify(message.conversation_id, "handoff")
            self._summarise_later(message.conversation_id)
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        self._on_reply(message, reply, timings["total_ms"] / 1000)
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
        return Exchange(user_turn_id, bot_turn_id, reply, state=state)

    async def _respond(
        self, message: Message, user_turn_id: int, ownership: Ownership, on_delta: DeltaSink | None,
        timings: dict[str, float],
    ) -> Reply:  # fmt: skip
        """An open form's step, or the answer; a matched entry with an action starts its form."""
        step = FormStep()
        if self.forms is not None and ownership.active_form:
            step = await self.forms.continue_form(message, user_turn_id, ownership)
            if step.reply is not None:
                return step.reply
        history = await self._history(message.conversation_id, user_turn_id)
        decision = await self._decide(message.text, history)
        timings["retrieval_ms"] = decision.retrieval_ms
        action = decision.answer.action if decision.kind is DecisionKind.ANSWER and decision.answer else None
        if self.forms is not None and action and not step.resume:
            preface = decision.answer.body if decision.answer is not None else ""
            return await self.forms.start(message, user_turn_id, action, ownership, preface)
        reply = await self.responder.respond(message, decision, history, on_delta)
        if step.resume:  # answered the question in between; now back to the form
            reply = replace(reply, text=f"{reply.text}\n\n{step.resume}")
        return reply

    async def _history(self, conversation_id: str, user_turn_id: int) -> list[Turn]:
        wanted = self.responder.history_turns
        if wanted == 0:
            return []
        turns = await self.store.turns(conversation_id, limit=wanted + 1)
        return [turn for turn in turns if turn.id != user_turn_id][-wanted:]

    async def _decide(self, text: str, history: Sequence[Turn]) -> Decision:
        # Embedding and search are CPU work: keep them off the event loop.
        decision = await anyio.to_thread.run_sync(self.policy.decide, text)
        if decision.kind is not DecisionKind.NOT_SURE or not self.responder.reads_follow_ups:
            return decision
        previous = next((turn.text for turn in reversed(history) if turn.role == "user"), None)
        if previous is None:
            return decision
        combined = await anyio.to_thread.run_sync(self.policy.decide, f"{previous}\n{text}")
        if combined.kind is not DecisionKind.ANSWER:
            return decision
        log.info("follow-up read with the previous question: %s", combined.answer.item_id if combined.answer else "")
        return replace(combined, text=decision.text)

    def _summarise_later(self, conversation_id: str) -> None:
        """The agent's summary is written after the customer has their reply; it never delays it."""
        if self._summariser is None:
            return
        task = asyncio.get_running_loop().create_task(self._summarise(conversation_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _summarise(self, conversation_id: str) -> None:
        assert self._summariser is not None
        summary = await self._summariser.summarise(await self.store.turns(conversation_id, limit=SUMMARY_TURNS))
        if summary:
            await self.store.set_handoff_summary(conversation_id, summary)
            log.info("handoff summary stored for conversation %s", conversation_id)

    async def aclose(self) -> None:
        """Stop summaries still being written (the transcript summary stands in for them)."""
        for task in list(self._background):
            task.cancel()


_HELD = Reply(text="", answered_by=AnsweredBy.FALLBACK, reason=HELD_REASON)
