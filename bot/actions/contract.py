"""rasa-sdk's webhook contract, as its endpoint.py, executor.py, interfaces.py and events.py define it.

`POST /webhook` takes `{next_action, sender_id, version, tracker, domain, domain_digest}`; the tracker
carries `sender_id, slots, latest_message, events, paused, followup_action, active_loop,
latest_action_name`; the answer is `{events, responses}`. Of the events, `slot`, `reset_slots`,
`followup` and `active_loop` change the conversation; each response's text and buttons become the reply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The Rasa version this project speaks: rasa-sdk warns when major.minor differs from its own.
RASA_VERSION = "3.21.0"
# Slots are filled by the bot (forms, actions), never by a Rasa NLU model: "custom" mappings.
_SLOT = {"type": "any", "influence_conversation": False, "mappings": [{"type": "custom"}]}


class BadActionResponse(ValueError):
    """The action server answered 200 with something that is not `{events, responses}`."""


@dataclass(frozen=True)
class Domain:
    """What the bot knows, sent to actions: slots, forms (their required slots) and named responses."""

    slots: tuple[str, ...] = ()
    forms: Mapping[str, Sequence[str]] = field(default_factory=dict)  # form name -> its required slots
    responses: Mapping[str, str] = field(default_factory=dict)  # utter_* name -> text

    def as_json(self) -> dict[str, Any]:
        return {
            "version": "3.1",
            "intents": [],
            "entities": [],
            "slots": {name: dict(_SLOT) for name in self.slots},
            "forms": {name: {"required_slots": list(slots)} for name, slots in self.forms.items()},
            "responses": {name: [{"text": text}] for name, text in self.responses.items()},
            "actions": [],
            "session_config": {"session_expiration_time": 60, "carry_over_slots_to_new_session": True},
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TrackerState:
    """One conversation as an action sees it."""

    sender_id: str
    slots: Mapping[str, Any]
    latest_text: str
    events: Sequence[Mapping[str, Any]] = ()  # user/bot turns as Rasa events, oldest first
    active_loop: str | None = None  # the form being filled
    latest_action_name: str | None = None
    paused: bool = False  # a person owns the conversation
    message_id: str | None = None  # the stored message this call answers: actions may dedupe on it

    def as_json(self) -> dict[str, Any]:
        return {
            "sender_id": self.sender_id,
            "slots": dict(self.slots),
            "latest_message": {
                "text": self.latest_text,
                "intent": {},
                "entities": [],
                "intent_ranking": [],
                "message_id": self.message_id,
            },
            "events": list(self.events),
            "paused": self.paused,
            "followup_action": None,
            "active_loop": {"name": self.active_loop} if self.active_loop else {},
            "latest_action_name": self.latest_action_name,
        }


def webhook_body(action: str, tracker: TrackerState, domain: Domain, with_domain: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "next_action": action,
        "sender_id": tracker.sender_id,
        "version": RASA_VERSION,
        "tracker": tracker.as_json(),
        "domain_digest": domain.digest,
    }
    if with_domain:
        body["domain"] = domain.as_json()
    return body


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class ActionText:
    text: str
    buttons: tuple[Button, ...] = ()


class _Unchanged:
    """The action said nothing about the active loop."""


UNCHANGED = _Unchanged()


@dataclass(frozen=True)
class ActionOutcome:
    """What an action did: in the order its events came, later ones winning."""

    slots: Mapping[str, Any] = field(default_factory=dict)  # slot events (value None: emptied)
    reset_slots: bool = False  # reset_slots came first: every other slot is emptied
    followup: str | None = None  # the action to run next
    active_loop: str | _Unchanged | None = UNCHANGED  # a form started (its name) or ended (None)
    texts: tuple[ActionText, ...] = ()


def read_outcome(body: Any, domain: Domain) -> ActionOutcome:
    """`{events, responses}` as an ActionOutcome; BadActionResponse for anything else."""
    if body is None:
        return ActionOutcome()
    if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
        raise BadActionResponse("expected an object with a list of events and a list of responses")
    slots: dict[str, Any] = {}
    reset = False
    followup: str | None = None
    loop: str | _Unchanged | None = UNCHANGED
    for event in body.get("events") or []:
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "slot" and isinstance(event.get("name"), str):
            slots[event["name"]] = event.get("value")
        elif kind == "reset_slots":
            reset, slots = True, {}
        elif kind == "followup" and isinstance(event.get("name"), str):
            followup = event["name"]
        elif kind == "active_loop":
            name = event.get("name")
            loop = name if isinstance(name, str) and name else None
    texts = tuple(text for item in body.get("responses") or [] if (text := _text(item, domain)) is not None)
    return ActionOutcome(slots, reset, followup, loop, texts)


def _text(item: Any, domain: Domain) -> ActionText | None:
    if not isinstance(item, dict):
        return None
    named = item.get("response") or item.get("template")
    text = item.get("text") or (domain.responses.get(named) if isinstance(named, str) else None)
    buttons = tuple(
        Button(str(b.get("title", "")), str(b.get("payload", b.get("title", ""))))
        for b in item.get("buttons") or []
        if isinstance(b, dict) and b.get("title")
    )
    if not text and not buttons:
        return None
    return ActionText(str(text or ""), buttons)
