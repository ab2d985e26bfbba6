"""Names an operator lists with an out-of-scope group: other companies, brands, apps, devices.

A customer who names a company or product the knowledge base knows nothing about ("where is my parcel
from <other shop>", "cancel my <streaming service> subscription") asks about something the store cannot
answer, yet the rest of the message matches the store's own topics closely: a sentence embedding weighs
the one unfamiliar word little. Like a lookup table in Rasa, a group's `names` catch those messages by
their words: a message that mentions a listed name is declined with the group's reply.

A name the store's own knowledge mentions (a carrier it uses, a payment method it takes) is ignored,
so listing it never stops the bot answering about it. So is a mention that is only context, such as
where the customer saw a lower price (`NameTable.find`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.knowledge.model import KnowledgeItem, OutOfScopeGroup

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_POSSESSIVE = re.compile(r"'s\b")
_SEPARATORS = re.compile(r"[\W_]+")
# Words after which a name is context (where something was bought, compared or sent), not the subject.
_CONTEXT_WORDS = frozenset({"on", "off", "at", "via", "with", "through", "than", "by", "from", "in"})


def name_words(text: str) -> tuple[str, ...]:
    """The words a name or a message is matched by: case, accents' forms, punctuation and possessives aside."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return tuple(word for word in _SEPARATORS.split(_POSSESSIVE.sub("", folded)) if word)


@dataclass(frozen=True)
class NameMatch:
    group: str  # the out-of-scope group that lists the name
    name: str  # as the operator wrote it


@dataclass(frozen=True)
class IgnoredName:
    group: str
    name: str  # listed, but the knowledge base mentions it, so it does not decline anything


class NameTable:
    """Finds the first listed name a message mentions, as whole words."""

    def __init__(self, names: Mapping[tuple[str, ...], NameMatch], ignored: Sequence[IgnoredName] = ()) -> None:
        self._names = dict(names)
        self._longest = max((len(words) for words in self._names), default=0)
        self.ignored = tuple(ignored)

    @classmethod
    def build(cls, listed: Iterable[tuple[str, Sequence[str]]], known_texts: Iterable[str]) -> NameTable:
        """`listed`: (group id, its names) in file order; `known_texts`: everything the store answers with.

        A name listed twice keeps its first group.
        """
        wanted: dict[tuple[str, ...], NameMatch] = {}
        for group, names in listed:
            for name in names:
                words = name_words(name)
                if words and words not in wanted:
                    wanted[words] = NameMatch(group, name)
        longest = max((len(words) for words in wanted), default=0)
        mentioned: set[tuple[str, ...]] = set()
        for text in known_texts:
            mentioned.update(phrase for _, phrase in _mentions(name_words(text), longest, wanted))
        ignored = [IgnoredName(m.group, m.name) for words, m in wanted.items() if words in mentioned]
        return cls({w: m for w, m in wanted.items() if w not in mentioned}, ignored)

    @classmethod
    def of_items(cls, items: Sequence[KnowledgeItem]) -> NameTable:
        """The table for parsed knowledge (groups in the order given)."""
        listed = [(item.id, item.names) for item in items if isinstance(item, OutOfScopeGroup)]
        known = [
            text for item in items if not isinstance(item, OutOfScopeGroup) for text in (*item.utterances(), item.body)
        ]
        return cls.build(listed, known)

    def __len__(self) -> int:
        return len(self._names)

    def find(self, text: str) -> NameMatch | None:
        """The first listed name `text` mentions as what it asks about, if any.

        A name right after a word like "on", "from" or "than" is where the customer bought, compared or sent
        something ("cheaper on X", "bought it second-hand off X", "posted my return with X"): the question is
        still about the store, so that mention does not decline the message.
        """
        words = name_words(text)
        for start, phrase in _mentions(words, self._longest, self._names):
            if start == 0 or words[start - 1] not in _CONTEXT_WORDS:
                return self._names[phrase]
        return None


def _mentions(
    words: Sequence[str], longest: int, wanted: Mapping[tuple[str, ...], NameMatch]
) -> list[tuple[int, tuple[str, ...]]]:
    """(where, name) for each name (key of `wanted`) in `words`, as written or with a plural "s" on a word."""
    found = _phrases(words, longest, wanted)
    singular = tuple(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)
    if singular != tuple(words):
        found = sorted(set(found) | set(_phrases(singular, longest, wanted)))
    return found


def _phrases(
    words: Sequence[str], longest: int, wanted: Mapping[tuple[str, ...], NameMatch]
) -> list[tuple[int, tuple[str, ...]]]:
    """(where, run) for the runs of `words` (up to `longest` long) that are keys of `wanted`, in order."""
    found = []
    for start in range(len(words)):
        for length in range(1, min(longest, len(words) - start) + 1):
            phrase = tuple(words[start : start + length])
            if phrase in wanted:
                found.append((start, phrase))
    return found
