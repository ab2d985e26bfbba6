"""Reading a form's slot from a customer's message: an email address, a number, a pattern, or the text."""

from __future__ import annotations

import re

from bot.conversation.router import EMAIL  # the one address pattern, also read while queued
from bot.knowledge.model import FormSlot

_NUMBER = re.compile(r"(?<![\w.])[0-9]+(?:[.,][0-9]+)?(?![\w.])")
# Whole messages that end the form being filled (compared case-insensitively, punctuation aside).
_CANCEL = re.compile(r"^\s*(?:cancel|stop|never ?mind|forget it|quit|no thanks?|exit)\b[\s.!]*$", re.IGNORECASE)


def wants_to_stop(text: str) -> bool:
    return _CANCEL.match(text) is not None


def extract(slot: FormSlot, text: str, asked: bool) -> str | None:
    """The slot's value in `text`, or None. A `text` slot takes the whole message, and only when it is the
    one just asked for; the typed slots are read wherever they are ("NW-10023, email jane@example.com")."""
    if slot.type == "email":
        found = EMAIL.search(text)
        return found.group(0).lower() if found else None
    if slot.type == "number":
        found = _NUMBER.search(text)
        return found.group(0).replace(",", ".") if found else None
    if slot.type == "pattern" and slot.pattern is not None:
        found = re.search(slot.pattern, text, re.IGNORECASE)
        return _canonical(found.group(0)) if found else None
    stripped = text.strip()
    return stripped if asked and stripped else None


def _canonical(value: str) -> str:
    """Codes as operators write them: upper case ('nw-10023' is NW-10023)."""
    return value.upper()
