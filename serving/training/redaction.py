"""Personal data taken out of conversation text before it is written to a training set.

What is replaced, each by a placeholder naming its kind, and counted:
- email addresses (the router's pattern, the one the bot reads addresses with);
- phone numbers, found and validated by `phonenumbers` (Google's libphonenumber), in any region's format
  when written with a country code, and in `region`'s otherwise;
- payment card numbers: 13-19 digits (spaces or dashes between groups) passing the Luhn check;
- order numbers: whatever the knowledge base's forms define as one (their `pattern` slots), plus
  the common shape of two to four capitals, an optional dash and five or more digits;
- names the customer gave: "my name is …", "I'm …", "this is …", "name: …" followed by capitalised
  words (and those words wherever else they appear in the conversation: `names_in`), and every value
  the conversation's form slots hold (a name, an address, an order number
  collected by a form is removed wherever it appears).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import phonenumbers

from bot.conversation.router import EMAIL

_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_ORDER = re.compile(r"\b[A-Z]{2,4}-?[0-9]{5,}\b")
# The lead-in in any case, the name itself capitalised (so "i'm looking for" names nobody).
_NAME = re.compile(
    r"\b(?i:my name is|my name's|i am|i'm|this is|name:|call me)\s+"
    r"((?:[A-Z][a-z'’-]+)(?:\s+[A-Z][a-z'’-]+){0,2})"
)
_NOT_NAMES = frozenset({"Not", "Very", "So", "Still", "Just", "Really", "Trying", "Looking", "Having", "Sorry"})


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@dataclass
class Redactor:
    """`redact(text)` returns the text with personal data replaced; `counts` adds up what was replaced."""

    order_patterns: tuple[str, ...] = ()
    region: str = "US"
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._orders = [re.compile(p, re.IGNORECASE) for p in self.order_patterns] + [_ORDER]

    def redact(self, text: str, known_values: Iterable[str] = (), names: Iterable[str] = ()) -> str:
        """`known_values`: what the conversation's slots hold; `names`: names the customer gave in it."""
        text = self._replace(EMAIL, text, "email")
        text = self._cards(text)
        text = self._phones(text)
        for pattern in self._orders:
            text = self._replace(pattern, text, "order")
        for values, kind in ((known_values, "value"), (names, "name")):
            for value in sorted({v.strip() for v in values if len(v.strip()) >= 3}, key=len, reverse=True):
                text = self._replace(re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE), text, kind)
        return self._names(text)

    def names_in(self, text: str) -> list[str]:
        """The names a customer gives in `text` ("my name is Jane Doe"): redact them wherever else they appear."""
        return [m.group(1) for m in _NAME.finditer(text) if m.group(1).split()[0] not in _NOT_NAMES]

    def _replace(self, pattern: re.Pattern[str], text: str, kind: str) -> str:
        placeholder = _PLACEHOLDERS[kind]

        def swap(match: re.Match[str]) -> str:
            if match.group(0).startswith("["):  # already a placeholder
                return match.group(0)
            self.counts[kind] += 1
            return placeholder

        return pattern.sub(swap, text)

    def _cards(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            digits = re.sub(r"\D", "", match.group(0))
            if 13 <= len(digits) <= 19 and _luhn(digits):
                self.counts["card"] += 1
                return _PLACEHOLDERS["card"]
            return match.group(0)

        return _CARD.sub(swap, text)

    def _phones(self, text: str) -> str:
        spans = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(text, self.region, leniency=phonenumbers.Leniency.VALID)
        ]
        for start, end in reversed(spans):
            self.counts["phone"] += 1
            text = text[:start] + _PLACEHOLDERS["phone"] + text[end:]
        return text

    def _names(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            if match.group(1).split()[0] in _NOT_NAMES:
                return match.group(0)
            self.counts["name"] += 1
            return match.group(0)[: match.start(1) - match.start(0)] + _PLACEHOLDERS["name"]

        return _NAME.sub(swap, text)


_PLACEHOLDERS = {
    "email": "[email]",
    "phone": "[phone]",
    "card": "[card number]",
    "order": "[order number]",
    "name": "[name]",
    "value": "[redacted]",
}
