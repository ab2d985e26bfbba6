"""A stored turn, as read back from the conversation store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.storage.sql import Params, Row, Sql
from bot.types import AnsweredBy, Citation, MessageKind, Reply


@dataclass(frozen=True)
class Turn:
    id: int
    conversation_id: str
    role: str
    text: str
    created_at: float
    answered_by: str | None
    source_id: str | None
    confidence: float | None
    reason: str | None
    citations: list[dict[str, Any]]
    quick_replies: list[str]
    handoff: bool
    timings: dict[str, float]
    client_message_id: str | None
    reply_to: int | None
    kind: MessageKind = MessageKind.TEXT  # for a user turn
    delivered_at: float | None = None  # for a bot turn
    author: str | None = None  # for a reply written by a person: the agent's name
    metadata: dict[str, str] = field(default_factory=dict)  # for a user turn: from the channel
    held: bool = False  # for a user turn: kept for a person (the bot did not answer it)

    def as_reply(self) -> Reply:
        """A stored bot turn as the Reply it was."""
        return Reply(
            text=self.text,
            answered_by=AnsweredBy(self.answered_by or AnsweredBy.FALLBACK),
            confidence=self.confidence or 0.0,
            citations=tuple(Citation(**c) for c in self.citations),
            quick_replies=tuple(self.quick_replies),
            handoff=self.handoff,
            source_id=self.source_id,
            reason=self.reason or "",
            author=self.author,
        )


async def select_turns(db: Sql, sql: str, params: Params) -> list[Turn]:
    return [turn_from_row(row) for row in await db.fetch(sql, params)]


def turn_from_row(row: Row) -> Turn:
    return Turn(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        text=row["text"],
        created_at=row["created_at"],
        answered_by=row["answered_by"],
        source_id=row["source_id"],
        confidence=row["confidence"],
        reason=row["reason"],
        citations=json.loads(row["citations"] or "[]"),
        quick_replies=json.loads(row["quick_replies"] or "[]"),
        handoff=bool(row["handoff"]),
        timings=json.loads(row["timings"] or "{}"),
        client_message_id=row["client_message_id"],
        reply_to=row["reply_to"],
        kind=MessageKind(row["kind"] or MessageKind.TEXT),
        delivered_at=row["delivered_at"],
        author=row["author"],
        metadata=json.loads(row["metadata"] or "{}"),
        held=bool(row["held"]),
    )
