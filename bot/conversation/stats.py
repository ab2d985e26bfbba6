"""The numbers a support lead asks for, read from the store (so every process reports the same totals):
replies by channel and who answered, handoffs by trigger, containment, the queue, and the waits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.conversation.state import EventKind, Owner
from bot.storage.sql import Database
from bot.types import AnsweredBy


@dataclass(frozen=True)
class SupportStats:
    replies: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, answered_by) -> count
    handoffs: dict[str, int] = field(default_factory=dict)  # trigger -> conversations handed over
    conversations: int = 0
    contained: int = 0  # conversations no person ever took part in
    owners: dict[str, int] = field(default_factory=dict)  # owner state -> conversations in it now
    claim_waits: list[float] = field(default_factory=list)  # seconds from a handoff to its claim
    # seconds from a handoff (or a pull) to the first reply a person wrote
    first_reply_waits: list[float] = field(default_factory=list)

    @property
    def containment(self) -> float | None:
        return self.contained / self.conversations if self.conversations else None


class StatsReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def snapshot(self, since: float = 0.0) -> SupportStats:
        """Everything since `since` (epoch seconds; conversations by when they began)."""
        since = float(since)
        replies = {
            (str(channel), str(answered_by or AnsweredBy.FALLBACK)): int(n)
            for channel, answered_by, n in await self._rows(
                "SELECT c.channel, t.answered_by, COUNT(*) FROM turns t JOIN conversations c ON c.id = "
                "t.conversation_id WHERE t.role = 'bot' AND t.created_at >= ? GROUP BY 1, 2", (since,))
        }  # fmt: skip
        handoffs = {
            str(trigger): int(n)
            for trigger, n in await self._rows(
                "SELECT trigger, COUNT(*) FROM events WHERE kind IN (?, ?) AND created_at >= ? GROUP BY 1",
                (str(EventKind.HANDOFF), str(EventKind.PULL), since))
        }  # fmt: skip
        ((total, contained),) = await self._rows(
            "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM events e WHERE "
            "e.conversation_id = c.id AND e.kind IN (?, ?)) THEN 0 ELSE 1 END), 0) AS contained "
            "FROM conversations c WHERE c.created_at >= ?",
            (str(EventKind.HANDOFF), str(EventKind.PULL), since),
        )
        owners = {str(s): 0 for s in Owner} | {
            str(state): int(n)
            for state, n in await self._rows("SELECT owner_state, COUNT(*) FROM conversations GROUP BY 1", ())
        }
        claim_waits = [
            float(wait)
            for (wait,) in await self._rows(
                "SELECT e.created_at - (SELECT MAX(h.created_at) FROM events h WHERE h.conversation_id = "
                "e.conversation_id AND h.kind = ? AND h.created_at <= e.created_at) FROM events e "
                "WHERE e.kind = ? AND e.created_at >= ?",
                (str(EventKind.HANDOFF), str(EventKind.CLAIM), since),
            )
            if wait is not None
        ]
        first_reply_waits = [
            float(wait)
            for (wait,) in await self._rows(
                # From each claim or pull: the first reply a person wrote after it, counted from when the
                # customer began to wait (the handoff before the claim; the pull itself).
                "SELECT (SELECT MIN(t.created_at) FROM turns t WHERE t.conversation_id = e.conversation_id "
                "AND t.answered_by = ? AND t.created_at >= e.created_at) - COALESCE((SELECT MAX(h.created_at) "
                "FROM events h WHERE h.conversation_id = e.conversation_id AND h.kind = ? AND h.created_at <= "
                "e.created_at AND e.kind = ?), e.created_at) FROM events e WHERE e.kind IN (?, ?) "
                "AND e.created_at >= ?",
                (
                    str(AnsweredBy.HUMAN),
                    str(EventKind.HANDOFF),
                    str(EventKind.CLAIM),
                    str(EventKind.CLAIM),
                    str(EventKind.PULL),
                    since,
                ),
            )
            if wait is not None
        ]
        return SupportStats(replies, handoffs, int(total), int(contained), owners, claim_waits, first_reply_waits)

    async def _rows(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Rows as tuples, in the order of the columns selected (each selected column has its own name)."""
        return [tuple(row.values()) for row in await self._db.fetch(sql, params)]
