"""Routing, once per message and before any answering: the bot answers only conversations it owns.

While a conversation is queued or owned by an agent, the customer's message is kept for the person (and
pushed to the inbox); the bot says at most one holding message per `handoff.hold_message_every_s`, and
only while queued. After the bot answers, the router decides whether the conversation goes to a person:
the customer asked (in words or with the button), or the bot was not sure too many times in a row.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from bot.answering.frustration import FrustrationDetector
from bot.answering.handoff import pressed_talk_button
from bot.config import HandoffSettings, MessagesSettings
from bot.conversation.ledger import ConversationLedger
from bot.conversation.state import EventKind, Owner, Ownership, OwnershipConflict, Staffing, Trigger
from bot.storage.turns import Turn
from bot.types import AnsweredBy, Message, Reply

# Finding an address in a sentence ("you can reach me at ana@example.com"), not validating one.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
NOT_SURE_REASON = "not_sure"
HELD_REASON = "held"  # a message kept for a person, with no reply from the bot


@dataclass(frozen=True)
class Held:
    """What the bot says to a message it keeps for a person: a reply, or nothing (`reply` None)."""

    ownership: Ownership
    reply: Reply | None


class Router:
    def __init__(
        self,
        ledger: ConversationLedger,
        recent_turns: Callable[[str, int], Awaitable[list[Turn]]],
        messages: MessagesSettings,
        settings: HandoffSettings,
        staffing: Callable[[], Staffing],
        frustration: FrustrationDetector | None = None,
    ) -> None:
        self._ledger = ledger
        self._recent_turns = recent_turns
        self._messages = messages
        self._settings = settings
        self.staffing = staffing
        self._frustration = frustration
        # Quick replies offered with "nobody is online" (the Leave a message button, when a form takes it).
        self.offline_offer: tuple[str, ...] = ()

    async def ownership(self, conversation_id: str) -> Ownership:
        return await self._ledger.ownership(conversation_id)

    def leaves_a_message(self, text: str) -> bool:
        """The customer pressed Leave a message (offered while nobody is online, when a form takes it)."""
        return bool(self.offline_offer) and _said(text, self._messages.leave_message_button)

    async def hold(self, message: Message, user_turn_id: int, ownership: Ownership) -> Held | None:
        """Keep a message for the person; the holding message or email acknowledgement, if one is due.
        None when the customer chose to go on with the bot instead (the conversation is the bot's again)."""
        leaving = _said(message.text, self._messages.continue_with_bot_button) or self.leaves_a_message(message.text)
        if ownership.state is Owner.QUEUED and leaving:
            with contextlib.suppress(OwnershipConflict):  # an agent claimed it meanwhile: they answer
                await self._ledger.transition(message.conversation_id, Owner.BOT, EventKind.RELEASE, "customer",
                                              (Owner.QUEUED,), trigger="customer_left_queue")  # fmt: skip
                return None
        await self._ledger.mark_held(user_turn_id)
        email = EMAIL.search(message.text)
        if email is not None and email.group(0) != ownership.slots.get("email"):
            await self._ledger.set_slot(message.conversation_id, "email", email.group(0), "customer")
            if ownership.state is Owner.QUEUED:
                text = self._messages.email_noted.format(email=email.group(0))
                return Held(ownership, _notice(text, HELD_REASON))
        if ownership.state is not Owner.QUEUED:
            return Held(ownership, None)
        now = time.time()
        last = ownership.last_hold_at or ownership.since or 0.0
        if now - last < self._settings.hold_message_every_s:
            return Held(ownership, None)
        await self._ledger.hold_sent(message.conversation_id, now)
        waited = now - (ownership.since or now)
        if self._settings.max_wait_s and waited >= self._settings.max_wait_s:
            offer = (self._messages.continue_with_bot_button,)
            return Held(ownership, replace(_notice(self._messages.hold_too_long, "queued"), quick_replies=offer))
        if self.staffing() is Staffing.ONLINE:
            return Held(ownership, _notice(self._messages.hold, "queued"))
        return Held(
            ownership, replace(_notice(self._messages.hold_offline, "queued"), quick_replies=self.offline_offer)
        )

    async def after_answer(self, message: Message, reply: Reply) -> tuple[Reply, Owner]:
        """The reply to send, and who owns the conversation now: queued when this message hands it over."""
        staffing = self.staffing()
        if staffing is Staffing.NO_AGENTS:  # nobody could ever take over: the bot keeps it, and says so
            if reply.handoff and _marked(reply):  # the answer stands; the promise of a person does not
                reply = replace(reply, text=f"{reply.text}\n\n{self._messages.handoff_unavailable}", handoff=False)
            elif reply.handoff:
                reply = _notice(self._messages.handoff_unavailable, "handoff_unavailable")
            return reply, Owner.BOT
        trigger = await self._trigger(message, reply)
        if trigger is None:
            return reply, Owner.BOT
        online = staffing is Staffing.ONLINE
        if trigger is Trigger.FRUSTRATION:
            note = self._messages.handoff_frustrated if online else self._messages.handoff_offline
            answered = reply.answered_by in (AnsweredBy.KNOWLEDGE, AnsweredBy.LLM)
            reply = replace(reply, text=f"{reply.text}\n\n{note}" if answered else note, handoff=True,
                            quick_replies=() if online else self.offline_offer)  # fmt: skip
        elif trigger is Trigger.MARKED_ENTRY:  # the entry's answer, then the person
            if not online:
                reply = replace(reply, text=f"{reply.text}\n\n{self._messages.handoff_offline}",
                                quick_replies=self.offline_offer)  # fmt: skip
        else:
            if not reply.handoff:  # not sure too often: the handoff replaces the not-sure reply
                reply = Reply(text=self._messages.handoff, answered_by=AnsweredBy.FALLBACK, handoff=True,
                              reason="handoff")  # fmt: skip
            if not online:
                reply = replace(reply, text=self._messages.handoff_offline, quick_replies=self.offline_offer)
        actor = "bot" if trigger in (Trigger.NOT_SURE, Trigger.FRUSTRATION, Trigger.MARKED_ENTRY) else "customer"
        with contextlib.suppress(OwnershipConflict):  # an agent pulled it meanwhile: with a person either way
            await self._ledger.transition(
                message.conversation_id, Owner.QUEUED, EventKind.HANDOFF, actor, (Owner.BOT,), trigger=str(trigger)
            )
        return reply, Owner.QUEUED

    async def _trigger(self, message: Message, reply: Reply) -> Trigger | None:
        if reply.handoff and _marked(reply):
            return Trigger.MARKED_ENTRY
        if reply.handoff:
            pressed = pressed_talk_button(message.text, self._messages.talk_to_human_button)
            return Trigger.TALK_BUTTON if pressed else Trigger.CUSTOMER_REQUEST
        if self._frustration is not None and self._frustration.frustrated(message.text):
            return Trigger.FRUSTRATION
        needed = self._settings.after_not_sure
        if reply.reason != NOT_SURE_REASON or needed == 0:
            return None
        if needed == 1:
            return Trigger.NOT_SURE
        recent = await self._recent_turns(message.conversation_id, 2 * needed)
        streak = 1  # this reply
        for turn in reversed([t for t in recent if t.role == "bot"]):
            if turn.reason != NOT_SURE_REASON:
                break
            streak += 1
        return Trigger.NOT_SURE if streak >= needed else None


def _marked(reply: Reply) -> bool:
    """A handoff that comes with an answer from the knowledge base: the entry it came from is marked."""
    return reply.source_id is not None and bool(reply.citations) and reply.reason != "handoff"


def _said(text: str, label: str) -> bool:
    return text.strip().casefold() == label.strip().casefold()


def _notice(text: str, reason: str) -> Reply:
    return Reply(text=text, answered_by=AnsweredBy.FALLBACK, reason=reason)
