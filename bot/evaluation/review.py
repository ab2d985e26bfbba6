"""Reviewing what customers asked and what the bot did, to grow the knowledge base and its eval cases.

Operators read recent messages with the bot's outcome (the item it answered with, or why it declined)
and can export them as a draft case file for `bot eval`: each message labelled with what the bot did.
Correcting the labels that are wrong turns the log into regression cases; the messages it answered that
it should have declined belong in an `out_of_scope.yml`, the ones it declined into FAQ alternates.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.conversation.stats import SupportStats
from bot.evaluation.scoring import OUT_OF_SCOPE
from bot.knowledge.model import normalised
from bot.storage.turns import Turn
from bot.types import AnsweredBy

# Reasons of replies that did not answer from the knowledge base although it was consulted.
_DECLINED = {"not_sure", "out_of_scope", "clarify"}
_ANSWERED = {str(AnsweredBy.KNOWLEDGE), str(AnsweredBy.LLM)}
NO_REPLY = "no reply stored"  # the process stopped while answering
FOR_A_PERSON = "kept for a person"  # a person owned the conversation: the bot stayed silent


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
    if message.held and (reply is None or reply.reason in ("queued", "held")):
        outcome, label = FOR_A_PERSON, None
    elif reply is None:
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
    for_people = sum(m.outcome == FOR_A_PERSON for m in messages)
    other = len(messages) - answered - sum(declined.values()) - unanswered - for_people
    parts = [f"{len(messages)} messages", f"{answered} answered from the knowledge base"]
    parts += [f"{count} {outcome}" for outcome, count in sorted(declined.items())]
    if unanswered:
        parts.append(f"{unanswered} with no reply stored")
    if for_people:
        parts.append(f"{for_people} kept for a person")
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


def support_summary(stats: SupportStats) -> list[str]:
    """The numbers of GET /metrics, in words."""
    lines = [f"{stats.conversations} conversations, {stats.contained} without a person"
             + (f" (containment {stats.containment:.0%})" if stats.containment is not None else "")]  # fmt: skip
    handoffs = ", ".join(f"{trigger} {n}" for trigger, n in sorted(stats.handoffs.items())) or "none"
    lines.append(f"handoffs by trigger: {handoffs}")
    queued, with_agents = stats.owners.get("queued", 0), stats.owners.get("agent", 0)
    lines.append(f"now: {queued} waiting for a person, {with_agents} with an agent")
    replies = ", ".join(f"{channel}/{by} {n}" for (channel, by), n in sorted(stats.replies.items())) or "none"
    lines.append(f"replies by channel/answered_by: {replies}")
    for name, waits in (("time to claim", stats.claim_waits), ("time to first agent reply", stats.first_reply_waits)):
        if waits:
            lines.append(f"{name}: median {statistics.median(waits):.0f} s, longest {max(waits):.0f} s ({len(waits)})")
    return lines
