"""Which replies an operator approved as examples for fine-tuning the dialogue model.

An approval names a conversation and either one reply in it (a bot turn: the bot's or an agent's) or,
with no turn, every reply the conversation has. Approving twice changes nothing; nothing unapproved is
ever read for training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.storage.sql import MAX_ROW_ID, Database


class ApprovalError(ValueError):
    """What was to be approved does not exist (the message says which)."""


@dataclass(frozen=True)
class Approval:
    conversation_id: str
    turn_id: int | None
    approved_by: str
    approved_at: float


class Approvals:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def approve(self, conversation_id: str, turn_id: int | None, approved_by: str) -> bool:
        """Record it; False if it was approved already. Raises ApprovalError for a conversation or a reply
        that is not in the store."""
        if await self._db.fetchone("SELECT 1 AS found FROM conversations WHERE id = ?", (conversation_id,)) is None:
            raise ApprovalError(f"no conversation {conversation_id!r} in the store")
        if turn_id is not None:
            row = None
            if 0 <= turn_id <= MAX_ROW_ID:
                sql = "SELECT role FROM turns WHERE id = ? AND conversation_id = ?"
                row = await self._db.fetchone(sql, (turn_id, conversation_id))
            if row is None or row["role"] != "bot":
                raise ApprovalError(f"conversation {conversation_id!r} has no reply with turn id {turn_id}")
        added = await self._db.execute(
            "INSERT INTO approvals (conversation_id, turn_id, approved_by, approved_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (conversation_id, turn_id, approved_by, time.time()),
        )
        return added == 1

    async def all(self) -> list[Approval]:
        rows = await self._db.fetch("SELECT * FROM approvals ORDER BY approved_at, conversation_id")
        return [Approval(r["conversation_id"], r["turn_id"], r["approved_by"], r["approved_at"]) for r in rows]

    async def approved_turns(self, conversation_id: str) -> set[int] | None:
        """The approved reply ids of a conversation; None when the whole conversation is approved."""
        rows = await self._db.fetch("SELECT turn_id FROM approvals WHERE conversation_id = ?", (conversation_id,))
        ids = [row["turn_id"] for row in rows]
        if any(turn_id is None for turn_id in ids):
            return None
        return set(ids)
