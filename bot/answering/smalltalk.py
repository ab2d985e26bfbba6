"""Greetings, thanks and goodbyes: answered as such, never searched in the knowledge base."""

from __future__ import annotations

import re
from enum import StrEnum


class SmallTalk(StrEnum):
    GREETING = "greeting"
    THANKS = "thanks"
    GOODBYE = "goodbye"


_PHRASES: dict[SmallTalk, frozenset[str]] = {
    SmallTalk.GREETING: frozenset(
        [
            "hi",
            "hello",
            "hey",
            "hiya",
            "howdy",
            "yo",
            "hallo",
            "hola",
            "bonjour",
            "ciao",
            "greetings",
            "morning",
            "hi_there",
            "hello_there",
            "hey_there",
            "good_morning",
            "good_afternoon",
            "good_evening",
            "good_day",
        ]
    ),
    SmallTalk.THANKS: frozenset(
        [
            "thanks",
            "thank_you",
            "thx",
            "ty",
            "cheers",
            "thanks_a_lot",
            "thank_you_very_much",
            "many_thanks",
            "thanks_so_much",
            "thank_you_so_much",
            "great_thanks",
            "ok_thanks",
            "okay_thanks",
            "perfect_thanks",
            "awesome_thanks",
            "thanks_again",
            "that_helps",
            "that_helped",
            "great",
            "perfect",
            "awesome",
        ]
    ),
    SmallTalk.GOODBYE: frozenset(
        [
            "bye",
            "goodbye",
            "bye_bye",
            "see_you",
            "see_ya",
            "later",
            "cya",
            "good_night",
            "thats_all",
            "that_is_all",
            "have_a_nice_day",
            "have_a_good_day",
            "thats_it",
        ]
    ),
}
_PRIORITY = (SmallTalk.GOODBYE, SmallTalk.THANKS, SmallTalk.GREETING)


def classify_smalltalk(text: str) -> SmallTalk | None:
    """The kind of small talk, when the whole message is small talk ("thanks, bye!"), else None.

    A greeting followed by a question ("hi, where is my order?") is a question.
    """
    parts = [p for p in re.split(r"[,.!?;:\n]+|\s+-\s+", text.casefold()) if p.strip()]
    if not parts or len(text) > 80:
        return None
    kinds = set()
    for part in parts:
        key = "_".join(re.sub(r"[^\w\s]", "", part).split())
        kind = next((k for k, phrases in _PHRASES.items() if key in phrases), None)
        if kind is None:
            return None
        kinds.add(kind)
    return next(k for k in _PRIORITY if k in kinds)
