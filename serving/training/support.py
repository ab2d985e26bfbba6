"""Whether an answer says what a passage says: the share of its content words the passage contains.

A reply is supported by a passage when at least `SUPPORTED` of the reply's content words (lower-cased
words of three or more letters, less common function words) occur in the passage's title and text. Word
overlap is crude, but it is exact, runs anywhere without a model, and is what a reviewer checks first: an
answer whose words the passage does not contain is saying something the passage does not. It cannot tell
a negated claim from the claim itself; the report names that limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.retrieval.index import Hit

SUPPORTED = 0.5
_WORD = re.compile(r"[a-z0-9][a-z0-9'’-]{2,}")
_FUNCTION_WORDS_TEXT = (
    "the and for you your are can with this that have has our from not but all any was were will would "
    "there their they them its it's what when where which who how why about into out also just than then "
    "been being get got let may might must should could did does doing done yes"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split(" "))


def content_words(text: str) -> set[str]:
    return {w.strip("'’-") for w in _WORD.findall(text.lower())} - _FUNCTION_WORDS


def overlap(reply: str, passage: str) -> float:
    """The share of the reply's content words found in the passage (0 for a reply with none)."""
    words = content_words(reply)
    return len(words & content_words(passage)) / len(words) if words else 0.0


def supporting_passage(reply: str, hits: Sequence[Hit]) -> int | None:
    """The 1-based number of the passage that supports `reply` best, if one reaches SUPPORTED."""
    scored = [(overlap(reply, f"{hit.title}\n{hit.body}"), n) for n, hit in enumerate(hits, start=1)]
    best = max(scored, default=(0.0, 0))
    return best[1] if best[0] >= SUPPORTED else None
