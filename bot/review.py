"""Reviewing what customers asked and what the bot did, to grow the knowledge base and its eval cases.

Operators read recent messages with the bot's outcome (the item it answered with, or why it declined)
and can export them as a draft case file for `bot eval`: each message labelled with what the bot did.
Correcting the labels that are wrong turns the log into regression cases; the messages it answered that
it should have declined belong in an `out_of_scope.yml`, the ones it declined into FAQ alternates.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.evaluation import OUT_OF_SCOPE
from bot.knowledge.model import normalised
from bot.turns import Turn
from bot.types import AnsweredBy

# Reasons of replies that did not answer from the knowledge base although it was consulted.
_DECLINED = {"not_sure", "out_of_scope", "clarify"}
_ANSWERED = {str(AnsweredBy.KNOWLEDGE), str(AnsweredBy.LLM)}
NO_REPLY = "no reply stored"  # the process stopped while answering


@dataclass(frozen=True)
class ReviewedMessage:
    text: str
    conversation_id: str
    received_at: float
    outcome: str  # the answering item's id, "declined: <why>", or what else happened ("greeting", "handoff", ...)
    confidence: float | None
    label: str | None  # the draft eval label: the answering item's id, "out_of_scope" for a decline, or None
    reason: str | None  # the reply's machine-readable reason ("not_sure", "out_of_scope", "faq", ...)

    @property
    def declined(self) -> bool:
        return self.label == OUT_OF_SCOPE


def review(exchanges: Iterable[tuple[Turn, Turn | None]]) -> list[ReviewedMessage]:
    """Each customer message with what the bot did about it."""
    return [_reviewed(message, reply) for message, reply in exchanges]


def _reviewed(message: Turn, reply: Turn | None) -> ReviewedMessage:
    if reply is None:
        outcome, label = NO_REPLY, None
    elif reply.reason in _DECLINED:
        outcome = f"declined: {reply.reason}" + (f" ({reply.source_id})" if reply.source_id else "")
        label = OUT_OF_SCOPE
    elif reply.source_id and reply.answered_by in _ANSWERED:
        outcome, label = reply.source_id, reply.source_id
    else:
        outcome, label = reply.reason or str(reply.answered_by), None
    confidence, reason = (reply.confidence, reply.reason) if reply is not None else (None, None)
    return ReviewedMessage(
        message.text, message.conversation_id, message.created_at, outcome, confidence, label, reason
    )


def select(
    messages: Sequence[ReviewedMessage], declined_only: bool = False, below: float | None = None
) -> list[ReviewedMessage]:
    """The messages worth a look: only declines, and/or only those with a confidence under `below`."""
    return [
        m
        for m in messages
        if (not declined_only or m.declined)
        and (below is None or (m.label is not None and m.confidence is not None and m.confidence < below))
    ]


def summary(messages: Sequence[ReviewedMessage]) -> str:
    answered = sum(m.label not in (None, OUT_OF_SCOPE) for m in messages)
    declined = Counter(f"declined: {m.reason}" for m in messages if m.declined)
    unanswered = sum(m.outcome == NO_REPLY for m in messages)
    other = len(messages) - answered - sum(declined.values()) - unanswered
    parts = [f"{len(messages)} messages", f"{answered} answered from the knowledge base"]
    parts += [f"{count} {outcome}" for outcome, count in sorted(declined.items())]
    if unanswered:
        parts.append(f"{unanswered} with no reply stored")
    parts.append(f"{other} other (small talk, handoff, invalid, errors)")
    return ", ".join(parts)


def write_cases(path: Path, messages: Iterable[ReviewedMessage]) -> int:
    """A draft `text,expected` case file from the labelled messages (each text once); returns the row count."""
    seen: set[str] = set()
    rows = []
    for message in messages:
        key = normalised(message.text)
        if message.label is None or key in seen:
            continue
        seen.add(key)
        rows.append((message.text, message.label))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("text", "expected"))
        writer.writerows(rows)
    return len(rows)
