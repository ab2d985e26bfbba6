"""First look at a user's text: clean it, and spot messages that cannot be answered as asked."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

_BAD_CATEGORIES = {"Cc", "Cn", "Co", "Cs"}  # control, unassigned, private use, lone surrogates
_KEEP_CONTROLS = {"\n", "\t", "\r"}
_GARBLED_SHARE = 0.1


class InputProblem(StrEnum):
    EMPTY = "empty"
    TOO_LONG = "too_long"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class GuardedText:
    text: str  # normalised, safe to embed, store and echo
    length: int  # characters in the original message
    problem: InputProblem | None


def storable(text: str) -> str:
    """The text with lone surrogates (valid in JSON, not in UTF-8 or SQLite) and NUL (valid in SQLite, not
    in PostgreSQL's text) replaced by U+FFFD, so both stores keep the same text."""
    if not _has_unstorable(text):
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" or ch == "\x00" else ch for ch in text)


def guard_input(raw: str, max_chars: int) -> GuardedText:
    length = len(raw)
    if length > max_chars:
        return GuardedText(storable(raw[:max_chars]), length, InputProblem.TOO_LONG)
    bad = sum(1 for ch in raw if ch not in _KEEP_CONTROLS and unicodedata.category(ch) in _BAD_CATEGORIES)
    bad += raw.count("\ufffd")
    cleaned = "".join(
        ch
        for ch in unicodedata.normalize("NFKC", storable(raw))
        if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in _BAD_CATEGORIES
    )
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if not cleaned:
        problem = InputProblem.UNREADABLE if bad else InputProblem.EMPTY
        return GuardedText("", length, problem)
    readable = any(unicodedata.category(ch)[0] in "LN" for ch in cleaned)
    if not readable or bad / length > _GARBLED_SHARE:
        return GuardedText(cleaned, length, InputProblem.UNREADABLE)
    return GuardedText(cleaned, length, None)


def _has_unstorable(text: str) -> bool:
    return "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text)
