"""Knowledge items as the rest of the engine sees them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


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

    kind = "passage"

    @property
    def title(self) -> str:
        return " › ".join(self.heading_path)

    @property
    def body(self) -> str:
        return self.text

    def utterances(self) -> tuple[str, ...]:
        # The heading path gives the embedding the section's topic; the body gives its substance.
        return (f"{self.title}\n{self.text}",)


KnowledgeItem = FaqEntry | Passage


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


def _unique(texts: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for text in texts:
        key = text.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            out.append(text.strip())
    return tuple(out)
