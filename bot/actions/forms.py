"""Forms: ask for what a business action needs, one slot at a time, then run the action.

Behaves as customers expect: values already given are not asked again (typed slots are read from any
message: "where is order NW-10023, email jane@example.com"), a question about something else is answered
and the form resumes, "cancel" or "stop" ends it, slots and the open form live in the store (a restart
resumes it), and a failed action ends the form with a clear message and the offer of a person. A resent
message is answered from the store (bot.pipeline), so it never runs an action again; each call also
carries the stored message's id (`latest_message.message_id`) for actions that write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot.actions.client import ActionClient, ActionError
from bot.actions.contract import UNCHANGED, ActionOutcome, Domain, TrackerState
from bot.actions.slots import extract, wants_to_stop
from bot.config import MessagesSettings
from bot.conversation.ledger import ConversationLedger
from bot.conversation.state import Ownership
from bot.knowledge.model import Form, FormSlot
from bot.types import AnsweredBy, Message, Reply

log = logging.getLogger(__name__)

MAX_FOLLOWUPS = 3  # an action's `followup` chain is cut here (a loop between two actions ends)
ASIDES = "_asides"  # the slot counting messages in a row that were not for the open form (never sent)
MAX_ASIDES = 2  # that many in a row and the customer has moved on: the form ends without a word


@dataclass(frozen=True)
class FormStep:
    """What the open form does with a message: `reply` when it answers it; otherwise the message is about
    something else, answered as usual, then `resume` brings the customer back to the form."""

    reply: Reply | None = None
    resume: str | None = None


class FormRunner:
    def __init__(
        self,
        client: ActionClient,
        ledger: ConversationLedger,
        forms: Callable[[], Mapping[str, Form]],
        messages: MessagesSettings,
    ) -> None:
        self.client = client
        self._ledger = ledger
        self._forms = forms
        self._messages = messages

    def action_of(self, form_id: str) -> str | None:
        form = self._forms().get(form_id)
        return form.action if form is not None else None

    def domain(self) -> Domain:
        forms = self._forms()
        slots = sorted({slot.name for form in forms.values() for slot in form.slots})
        return Domain(tuple(slots), {f.id: tuple(s.name for s in f.slots) for f in forms.values()})

    async def continue_form(self, message: Message, user_turn_id: int, ownership: Ownership) -> FormStep:
        form = self._forms().get(ownership.active_form or "")
        cid = message.conversation_id
        if form is None:  # the operator removed it meanwhile: nothing to resume
            await self._ledger.update_form(cid, None, {}, False, "bot", "form no longer defined")
            return FormStep()
        if wants_to_stop(message.text):
            await self._ledger.update_form(cid, None, {}, False, "customer", "cancelled")
            return FormStep(_reply(self._messages.form_cancelled, "form_cancelled"))
        missing = _missing(form, ownership.slots)
        asked = missing[0]
        question = asked.type == "text" and message.text.rstrip().endswith("?")  # a question: answer it
        found = {} if question else _found(missing, message.text, asked)
        if not found:
            return await self._aside(cid, form, ownership, asked)
        return FormStep(await self._take(message, user_turn_id, form, ownership, found, "customer", "answered"))

    async def _aside(self, cid: str, form: Form, ownership: Ownership, asked: FormSlot) -> FormStep:
        """A message that was not for the form: answered as usual, then the question again; the second in a
        row ends the form (the customer has moved on, and is not asked again and again)."""
        asides = int(ownership.slots.get(ASIDES) or 0) + 1
        if asides >= MAX_ASIDES:
            await self._ledger.update_form(cid, None, {ASIDES: None}, False, "customer", "moved on")
            return FormStep()
        await self._ledger.update_form(cid, form.id, {ASIDES: asides}, False, "customer", "asked something else")
        return FormStep(resume=self._messages.form_resume.format(question=asked.ask))

    async def start(
        self, message: Message, user_turn_id: int, action: str, ownership: Ownership, preface: str = ""
    ) -> Reply:
        """An FAQ entry that runs `action`: start the form that collects for it (or run it at once). When the
        form has to ask, `preface` (the entry's own answer) comes first."""
        form = next((f for f in self._forms().values() if f.action == action), None)
        if form is None:
            return await self._run(action, message, user_turn_id, ownership.slots, None)
        found = _found(list(form.slots), message.text, None)
        reply = await self._take(message, user_turn_id, form, ownership, found, "bot", "started with")
        if reply.reason == "form" and preface.strip():
            reply = replace(reply, text=f"{preface.strip()}\n\n{reply.text}")
        return reply

    async def _take(
        self, message: Message, user_turn_id: int, form: Form, ownership: Ownership, found: dict[str, str],
        actor: str, what: str,
    ) -> Reply:  # fmt: skip
        """Keep the answers `found` (as the form's validate action has them), then ask or run the action."""
        said: list[str] = []
        kept: dict[str, Any] = dict(found)
        if form.validate and found:
            try:
                kept, said = await self._validate(message, user_turn_id, form, ownership, found)
            except ActionError as err:
                return await self._failed(message.conversation_id, err)
        why = f"{what} {', '.join(found)}" if found else what.removesuffix(" with")
        ownership = await self._ledger.update_form(message.conversation_id, form.id, {**kept, ASIDES: None}, False,
                                                   actor, why)  # fmt: skip
        reply = await self._next(message, user_turn_id, form, ownership)
        if said and reply.reason == "form":  # why an answer was not taken, before the question again
            reply = replace(reply, text="\n\n".join([*said, reply.text]))
        return reply

    async def _validate(
        self, message: Message, user_turn_id: int, form: Form, ownership: Ownership, found: dict[str, str]
    ) -> tuple[dict[str, Any], list[str]]:
        """rasa-sdk's FormValidationAction contract: the candidates as the last slot events of the tracker;
        what it sets them to is kept (None: rejected, asked again), and what it says is said."""
        assert form.validate is not None
        events = [{"event": "user", "text": message.text}]
        events += [{"event": "slot", "name": name, "value": value} for name, value in found.items()]
        slots = _visible(ownership.slots) | found
        tracker = TrackerState(message.conversation_id, slots, message.text, events, active_loop=form.id,
                               latest_action_name="action_listen",
                               message_id=f"{message.conversation_id}:{user_turn_id}")  # fmt: skip
        outcome = await self.client.run(form.validate, tracker, self.domain())
        kept = {name: outcome.slots.get(name, value) for name, value in found.items()}
        return kept, [text.text for text in outcome.texts if text.text]

    async def _failed(self, cid: str, err: ActionError) -> Reply:
        log.warning("conversation=%s action failed: %s", cid, err)
        await self._ledger.update_form(cid, None, {ASIDES: None}, False, "bot", f"{err.action} failed: {err.failure}")
        return Reply(text=self._messages.action_failed, answered_by=AnsweredBy.FALLBACK,
                     quick_replies=(self._messages.talk_to_human_button,), reason="action_failed")  # fmt: skip

    async def _next(self, message: Message, user_turn_id: int, form: Form, ownership: Ownership) -> Reply:
        missing = _missing(form, ownership.slots)
        if missing:
            return _reply(missing[0].ask, "form")
        return await self._run(form.action, message, user_turn_id, ownership.slots, form)

    async def _run(
        self, action: str, message: Message, user_turn_id: int, slots: Mapping[str, Any], form: Form | None
    ) -> Reply:
        cid = message.conversation_id
        slots = _visible(slots)
        tracker = TrackerState(cid, slots, message.text, active_loop=form.id if form else None,
                               message_id=f"{cid}:{user_turn_id}")  # fmt: skip
        texts: list[str] = []
        buttons: list[str] = []
        try:
            for _ in range(1 + MAX_FOLLOWUPS):
                outcome = await self.client.run(action, tracker, self.domain())
                texts += [t.text for t in outcome.texts if t.text]
                buttons += [b.title for t in outcome.texts for b in t.buttons]
                tracker = _after(tracker, outcome, action)
                if outcome.followup is None or outcome.followup == "action_listen":
                    break
                action = outcome.followup
        except ActionError as err:
            return await self._failed(cid, err)
        changed = {k: v for k, v in tracker.slots.items() if slots.get(k) != v}
        changed |= {k: None for k in slots if k not in tracker.slots} | {ASIDES: None}
        await self._ledger.update_form(cid, tracker.active_loop if form is None else None, changed, False, "bot",
                                       f"ran {action}")  # fmt: skip
        log.info("conversation=%s action=%s ran (%d messages)", cid, action, len(texts))
        return Reply(text="\n\n".join(texts) or self._messages.form_cancelled, answered_by=AnsweredBy.ACTION,
                     quick_replies=tuple(dict.fromkeys(buttons)), source_id=action, reason="action")  # fmt: skip


def _reply(text: str, reason: str) -> Reply:
    return Reply(text=text, answered_by=AnsweredBy.ACTION, reason=reason)


def _visible(slots: Mapping[str, Any]) -> dict[str, Any]:
    """The slots an action sees: not the form's own bookkeeping (names starting with _)."""
    return {name: value for name, value in slots.items() if not name.startswith("_")}


def _missing(form: Form, slots: Mapping[str, Any]) -> list[FormSlot]:
    return [slot for slot in form.slots if slots.get(slot.name) in (None, "")]


def _found(slots: list[FormSlot], text: str, asked: FormSlot | None) -> dict[str, str]:
    return {slot.name: value for slot in slots if (value := extract(slot, text, slot is asked)) is not None}


def _after(tracker: TrackerState, outcome: ActionOutcome, action: str) -> TrackerState:
    slots = {} if outcome.reset_slots else dict(tracker.slots)
    slots.update(outcome.slots)
    loop = tracker.active_loop if outcome.active_loop is UNCHANGED else outcome.active_loop
    return TrackerState(tracker.sender_id, slots, tracker.latest_text, tracker.events, loop,  # type: ignore[arg-type]
                        latest_action_name=action, message_id=tracker.message_id)  # fmt: skip
