"""Recognising a customer who asks for a person instead of the bot."""

from __future__ import annotations

import re

_ASKS_FOR_HUMAN = re.compile(
    # "someone else" is a third party ("transfer my gift card to someone else"), never our staff.
    r"\b(talk|speak|chat|connect|transfer|put)\b.{0,25}\b(human|person|agent|(?:someone|somebody)(?!\s+else)|"
    r"representative|operator|staff|employee|real|live)\b(?!\s+else)"
    r"|\b(human|live|real)\s+(agent|person|support|being)\b"
    r"|\b(customer\s+service|support)\s+(agent|representative|rep)\b"
    r"|^\s*(agent|human|operator|representative)\s*[.!?]*\s*$",
    re.IGNORECASE,
)


# The web widget's "Talk to a person" button in each interface language (serving/static/widget.js).
WIDGET_BUTTON_LABELS = (
    "Talk to a person",
    "Mit einem Menschen sprechen",
    "Parler à une personne",
    "Hablar con una persona",
    "Met een medewerker praten",
)


def pressed_talk_button(text: str, button_label: str) -> bool:
    """The message is a talk-to-a-person button's own label (the chat's or one of the widget's)."""
    said = text.strip().casefold()
    return said in {label.casefold() for label in (button_label, *WIDGET_BUTTON_LABELS)}


def asks_for_human(text: str, button_label: str) -> bool:
    """True for "talk to a person", "human agent please", or a talk-to-a-person button's own label."""
    return pressed_talk_button(text, button_label) or bool(_ASKS_FOR_HUMAN.search(text))
