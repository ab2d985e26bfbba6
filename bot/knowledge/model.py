"""Knowledge items as the rest of the engine sees them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

OUT_OF_SCOPE_KIND = "out_of_scope"  # the kind of an operator's group of messages to decline

# Where one sentence ends and the next begins (also how training targets are cut short: serving.training).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(])")
_MIN_SENTENCE_CHARS = 20


@dataclass(frozen=True)
class Problem:
    """Something wrong in a knowledge file, precise enough to fix without guessing."""

    file: str  # path relative to the knowledge directory
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class FaqEntry:
    id: str
    question: str
    alternates: tuple[str, ...]
    answer: str
    tags: tuple[str, ...]
    file: str
    line: int
    handoff: bool = False  # marked for a person: answered, then handed over (complaints, legal threats)
    action: str | None = None  # a business action the entry runs (through the form that collects for it)

    kind = "faq"

    @property
    def title(self) -> str:
        return self.question

    @property
    def body(self) -> str:
        return self.answer

    def utterances(self) -> tuple[str, ...]:
        """The texts that are embedded to find this entry: its question and every alternate."""
        return _unique((self.question, *self.alternates))


@dataclass(frozen=True)
class Passage:
    id: str  # "<file without .md>#<heading slug>"
    heading_path: tuple[str, ...]  # from the document title down to this section
    text: str
    file: str
    line: int
    questions: tuple[str, ...] = ()  # how customers ask about it, written by operators (bot.knowledge.policy)
    handoff: bool = False  # marked for a person (`<!-- handoff: true -->` under its heading)

    kind = "passage"

    @property
    def title(self) -> str:
        return " › ".join(self.heading_path)

    @property
    def body(self) -> str:
        return self.text

    def utterances(self) -> tuple[str, ...]:
        """The whole section under its heading path, each sentence under its heading, and its questions.

        A customer's question usually matches one sentence of a policy better than the whole section,
        whose embedding averages every topic the section touches.
        """
        heading = self.heading_path[-1]
        sentences = (f"{heading}: {s}" for s in _sentences(self.text) if len(s) >= _MIN_SENTENCE_CHARS)
        return _unique((f"{self.title}\n{self.text}", *sentences, *self.questions))


@dataclass(frozen=True)
class OutOfScopeGroup:
    """Examples of messages to decline rather than answer (see bot.knowledge.out_of_scope)."""

    id: str
    examples: tuple[str, ...]
    reply: str | None  # None: the configured default
    file: str
    line: int
    names: tuple[str, ...] = ()  # companies, brands, products: a message naming one is declined (bot.knowledge.names)

    kind = OUT_OF_SCOPE_KIND

    @property
    def title(self) -> str:
        return self.examples[0]

    @property
    def body(self) -> str:
        return self.reply or ""

    def utterances(self) -> tuple[str, ...]:
        return _unique(self.examples)


@dataclass(frozen=True)
class FormSlot:
    """One thing a form asks for, and how the answer is read (bot.actions.slots)."""

    name: str
    ask: str  # the question the bot asks for it
    type: str  # "email" | "number" | "text" | "pattern"
    pattern: str | None = None  # for type "pattern": a regular expression the answer must contain


@dataclass(frozen=True)
class Form:
    """A form (bot.knowledge.forms): slots to collect, then the action that runs with them. Never searched."""

    id: str
    action: str
    slots: tuple[FormSlot, ...]
    file: str
    line: int
    validate: str | None = None  # a rasa-sdk FormValidationAction (validate_<form>) that checks answers

    kind = "form"

    @property
    def title(self) -> str:
        return self.id

    @property
    def body(self) -> str:
        return ""

    def utterances(self) -> tuple[str, ...]:
        return ()


KnowledgeItem = FaqEntry | Passage | OutOfScopeGroup | Form


def marked_for_a_person(item: KnowledgeItem) -> bool:
    """An FAQ entry or policy section whose answer hands the conversation to a person."""
    return isinstance(item, FaqEntry | Passage) and item.handoff


def answer_as_passage(entry_id: str, question: str, answer: str, file: str, line: int) -> Passage:
    """An FAQ answer split as a passage is: calibration embeds its texts too, to learn how answers are worded."""
    return Passage(entry_id, ("FAQ", question), answer, file, line)


def texts_to_embed(item: KnowledgeItem) -> int:
    """How many texts the index and its calibration embed for `item` (bot.knowledge.limits.MAX_TEXTS)."""
    if isinstance(item, FaqEntry):
        answer = answer_as_passage(item.id, item.question, item.answer, item.file, item.line)
        return len(item.utterances()) + len(answer.utterances())
    return len(item.utterances())


def item_fingerprint(item: KnowledgeItem) -> str:
    """Changes whenever anything a reply shows (answer, title, citation line) changes."""
    payload = {
        "kind": item.kind,
        "id": item.id,
        "title": item.title,
        "body": item.body,
        "file": item.file,
        "line": item.line,
        "tags": list(item.tags) if isinstance(item, FaqEntry) else [],
    }
    if isinstance(item, OutOfScopeGroup) and item.names:
        payload["names"] = list(item.names)
    if isinstance(item, Passage) and item.questions:
        payload["questions"] = len(item.questions)
    if marked_for_a_person(item):
        payload["handoff"] = True
    if isinstance(item, FaqEntry) and item.action:
        payload["action"] = item.action  # decides the passage bonus (bot.retrieval.ranking.scorer)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KnowledgeFile:
    """One parsed file: its items if it is valid, else the problems that make it unusable."""

    path: str  # relative to the knowledge directory, with forward slashes
    items: tuple[KnowledgeItem, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _sentences(text: str) -> list[str]:
    """Sentences and list items of a Markdown passage, with the Markdown markers removed."""
    plain = re.sub(r"[*_`>#]+", "", text)
    pieces: list[str] = []
    for line in plain.splitlines():
        line = re.sub(r"^\s*(?:[-+]|\d+[.)])\s+", "", line).strip()
        pieces.extend(p.strip() for p in SENTENCE_END.split(line))
    return [p for p in pieces if p]


def normalised(text: str) -> str:
    """A text as exact matches compare it: case and runs of spacing aside."""
    return " ".join(text.split()).casefold()


def _unique(texts: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for text in texts:
        key = text.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            out.append(text.strip())
    return tuple(out)
