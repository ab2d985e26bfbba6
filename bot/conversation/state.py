"""Conversation state: the owner, the transitions between owners, and the events that record them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Owner(StrEnum):
    """Who answers the customer now."""

    BOT = "bot"
    QUEUED = "queued"  # waiting for a person; the bot only sends holding messages
    AGENT = "agent"  # a named agent owns it; the bot is silent


class Trigger(StrEnum):
    """Why a conversation went to a person (recorded on the event and counted in /metrics)."""

    CUSTOMER_REQUEST = "customer_request"  # "can I talk to a person?"
    TALK_BUTTON = "talk_button"  # the widget's (or a chat's) Talk to a person button
    NOT_SURE = "not_sure"  # handoff.after_not_sure "not sure" replies in a row
    FRUSTRATION = "frustration"  # the customer sounds frustrated or angry (bot/answering/frustration.py)
    MARKED_ENTRY = "marked_entry"  # the answer came from an FAQ entry or policy section marked for a person
    AGENT_PULL = "agent_pull"  # an agent took a conversation the bot was handling


class Staffing(StrEnum):
    """Whether a person can take over now."""

    NO_AGENTS = "no_agents"  # none configured: the bot keeps every conversation and says so when asked
    OFFLINE = "offline"  # agents exist, none online (or outside office hours): queued, told honestly
    ONLINE = "online"


class EventKind(StrEnum):
    HANDOFF = "handoff"  # bot -> queued
    CLAIM = "claim"  # queued -> agent
    PULL = "pull"  # bot -> agent
    RELEASE = "release"  # agent -> bot
    NOTE = "note"  # an agent's internal note (never shown to the customer)
    CONTACT = "contact"  # the customer left an email address while queued
    FORM = "form"  # a form started, took an answer, ran its action, or ended (trigger: the form)


@dataclass(frozen=True)
class Ownership:
    state: Owner = Owner.BOT
    agent: str | None = None  # the agent who owns it, when state is AGENT
    trigger: str | None = None  # why it last left the bot
    since: float | None = None  # when it entered this state
    last_hold_at: float | None = None  # when the last holding message was sent while queued
    slots: dict[str, Any] = field(default_factory=dict)
    active_form: str | None = None  # the form being filled (bot.actions.forms)


@dataclass(frozen=True)
class Event:
    id: int
    conversation_id: str
    kind: EventKind
    actor: str  # "bot", "customer" or the agent's name
    created_at: float
    trigger: str | None = None
    text: str | None = None  # a note's text, a contact's address


class OwnershipConflict(Exception):
    """The conversation is not in a state that allows the change (someone else owns it, say)."""

    def __init__(self, conversation_id: str, current: Ownership, wanted: str) -> None:
        who = f"agent {current.agent}" if current.state is Owner.AGENT else f"the {current.state}"
        super().__init__(f"conversation {conversation_id} is owned by {who}: cannot {wanted}")
        self.current = current
