"""Which replies an operator approved as examples for fine-tuning the dialogue model.

An approval names a conversation and either one reply in it (a bot turn: the bot's or an agent's) or,
with no turn, every reply the conversation has. Approving twice changes nothing; nothing unapproved is
ever read for training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    turn_id         INTEGER REFERENCES turns(id),  -- NULL: every reply in the conversation
    approved_by     TEXT NOT NULL,
    approved_at     REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS approvals_once ON approvals (conversation_id, COALESCE(turn_id, 0));
"""


class ApprovalError(ValueError):
    """What was to be approved does not exist (the message says which)."""


@dataclass(frozen=True)
class Approval:
    conversation_id: str
    turn_id: int | None
    approved_by: str
    approved_at: float


class Approvals:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def approve(self, conversation_id: str, turn_id: int | None, approved_by: str) -> bool:
        """Record it; False if it was approved already. Raises ApprovalError for a conversation or a reply
        that is not in the store."""
        async with self._db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) as cursor:
            if await cursor.fetchone() is None:
                raise ApprovalError(f"no conversation {conversation_id!r} in the store")
        if turn_id is not None:
            sql = "SELECT role FROM turns WHERE id = ? AND conversation_id = ?"
            async with self._db.execute(sql, (turn_id, conversation_id)) as cursor:
                row = await cursor.fetchone()
            if row is None or row["role"] != "bot":
                raise ApprovalError(f"conversation {conversation_id!r} has no reply with turn id {turn_id}")
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO approvals (conversation_id, turn_id, approved_by, approved_at) VALUES (?, ?, ?, ?)",
            (conversation_id, turn_id, approved_by, time.time()),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def all(self) -> list[Approval]:
        async with self._db.execute("SELECT * FROM approvals ORDER BY approved_at, conversation_id") as cursor:
            rows = await cursor.fetchall()
        return [Approval(r["conversation_id"], r["turn_id"], r["approved_by"], r["approved_at"]) for r in rows]

    async def approved_turns(self, conversation_id: str) -> set[int] | None:
        """The approved reply ids of a conversation; None when the whole conversation is approved."""
        sql = "SELECT turn_id FROM approvals WHERE conversation_id = ?"
        async with self._db.execute(sql, (conversation_id,)) as cursor:
            rows = await cursor.fetchall()
        ids = [row["turn_id"] for row in rows]
        if any(turn_id is None for turn_id in ids):
            return None
        return set(ids)
