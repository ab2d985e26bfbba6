"""Conversation store: every turn, with who answered, from which source, how confidently and how fast.

SQLite embedded (the default) or PostgreSQL for several processes (`store.url`), behind one SQL
interface (bot.storage.sql). The user's turn is written before any answering starts, so a failure later
in the pipeline never loses what the customer said.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.answering.guard import storable
from bot.config import StoreSettings
from bot.conversation.ledger import ConversationLedger
from bot.conversation.stats import StatsReader
from bot.storage.approvals import Approvals
from bot.storage.postgres.database import PostgresDatabase
from bot.storage.sql import MAX_ROW_ID, Database, Row, StoreError
from bot.storage.sqlite.database import SqliteDatabase
from bot.storage.turns import Turn, select_turns
from bot.types import Message, MessageKind, Reply

MAX_TURN_ID = MAX_ROW_ID
DATABASE_PASSWORD_ENV = "SUPPORTBOT_DATABASE_PASSWORD"


@dataclass(frozen=True)
class Conversation:
    id: str
    channel: str
    user_id: str
    created_at: float
    updated_at: float
    handoff: bool
    handoff_summary: str | None = None


__all__ = ["Conversation", "ConversationStore", "StoreError"]


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.ledger = ConversationLedger(db)  # ownership, slots, events, notes, agents' replies
        self.stats = StatsReader(db)  # what /metrics and `bot review` report
        self.approvals = Approvals(db)  # replies approved as fine-tuning examples

    @classmethod
    async def open(cls, where: Path | str, password: str | None = None, pool_size: int = 10) -> ConversationStore:
        """A SQLite file (a path), or a PostgreSQL database (a postgresql:// URL, the password apart)."""
        if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
            return cls(await PostgresDatabase.open(where, password, pool_size))
        return cls(await SqliteDatabase.open(Path(where)))

    @classmethod
    async def from_settings(cls, settings: StoreSettings, environ: Mapping[str, str]) -> ConversationStore:
        """The store config.yml names; PostgreSQL's password from SUPPORTBOT_DATABASE_PASSWORD."""
        return await cls.open(settings.location, environ.get(DATABASE_PASSWORD_ENV), settings.pool_size)

    @property
    def where(self) -> str:
        return self._db.where

    @property
    def kind(self) -> str:
        """ "sqlite" or "postgresql", for /health."""
        return self._db.dialect

    async def ping(self) -> float:
        """Milliseconds for the database to answer a query; raises StoreUnavailable when it cannot (for /health)."""
        started = time.perf_counter()
        await self._db.ping()
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        await self._db.close()

    async def record_user_turn(self, message: Message) -> int:
        """The message's turn id. A message whose client id is stored already (sent twice at once, past the
        pipeline's check) is not stored again: the earlier turn's id is returned."""
        now = time.time()
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO conversations (id, channel, user_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                (message.conversation_id, message.channel, storable(message.user_id), now, now),
            )
            row = await tx.fetchone(
                "INSERT INTO turns (conversation_id, role, text, created_at, metadata, client_message_id, kind) "
                "VALUES (?, 'user', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (
                    message.conversation_id,
                    storable(message.text),
                    message.received_at,
                    json.dumps(dict(message.metadata)),
                    message.client_message_id,
                    str(message.kind),
                ),
            )
        if row is not None:
            return int(row["id"])
        earlier = await self.user_turn_by_client_id(message.conversation_id, message.client_message_id or "")
        if earlier is None:
            raise RuntimeError(f"the user turn of conversation {message.conversation_id!r} was not stored")
        return earlier.id

    async def record_bot_turn(
        self, conversation_id: str, reply: Reply, timings: dict[str, float], reply_to: int | None = None
    ) -> int:
        now = time.time()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO turns (conversation_id, role, text, created_at, answered_by, source_id, confidence, "
                "reason, citations, quick_replies, handoff, timings, reply_to) "
                "VALUES (?, 'bot', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    conversation_id,
                    storable(reply.text),
                    now,
                    str(reply.answered_by),
                    reply.source_id,
                    reply.confidence,
                    reply.reason,
                    json.dumps([asdict(c) for c in reply.citations]),
                    json.dumps(list(reply.quick_replies)),
                    int(reply.handoff),
                    json.dumps({k: round(v, 3) for k, v in timings.items()}),
                    reply_to,
                ),
            )
            await tx.execute(
                "UPDATE conversations SET updated_at = ?, handoff = CASE WHEN ? = 1 THEN 1 ELSE handoff END "
                "WHERE id = ?",
                (now, int(reply.handoff), conversation_id),
            )
        return int(row["id"]) if row is not None else 0

    async def conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._db.fetchone("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if row is None:
            return None
        return Conversation(
            id=row["id"],
            channel=row["channel"],
            user_id=row["user_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            handoff=bool(row["handoff"]),
            handoff_summary=row["handoff_summary"],
        )

    async def set_handoff_summary(self, conversation_id: str, summary: str) -> None:
        await self._db.execute(
            "UPDATE conversations SET handoff_summary = ? WHERE id = ?", (storable(summary), conversation_id)
        )

    async def turns(self, conversation_id: str, limit: int = 200, after: int = 0) -> list[Turn]:
        """Up to the most recent `limit` turns with an id above `after`, oldest first."""
        return await self._select(
            "SELECT * FROM (SELECT * FROM turns WHERE conversation_id = ? AND id > ? ORDER BY id DESC LIMIT ?) "
            "AS recent ORDER BY id",
            (conversation_id, after, limit),
        )

    async def turn(self, conversation_id: str, turn_id: int) -> Turn | None:
        if not 0 <= turn_id <= MAX_TURN_ID:
            return None
        found = await self._select(
            "SELECT * FROM turns WHERE conversation_id = ? AND id = ?", (conversation_id, turn_id)
        )
        return found[0] if found else None

    async def user_turn_by_client_id(self, conversation_id: str, client_message_id: str) -> Turn | None:
        turns = await self._select(
            "SELECT * FROM turns WHERE conversation_id = ? AND client_message_id = ?",
            (conversation_id, client_message_id),
        )
        return turns[0] if turns else None

    async def suggestion(self, bot_turn_id: int, index: int, conversation_id: str) -> str | None:
        """The quick reply at `index` of a bot turn in this conversation: what a tapped button meant.

        None for a turn of another conversation (a button can be crafted; it may only act where it was shown).
        """
        if not 0 <= bot_turn_id <= MAX_TURN_ID:
            return None
        row = await self._db.fetchone(
            "SELECT quick_replies FROM turns WHERE id = ? AND role = 'bot' AND conversation_id = ?",
            (bot_turn_id, conversation_id),
        )
        offered: list[str] = json.loads(row["quick_replies"] or "[]") if row is not None else []
        return offered[index] if 0 <= index < len(offered) else None

    async def reply_to(self, user_turn_id: int) -> Turn | None:
        turns = await self._select("SELECT * FROM turns WHERE reply_to = ? ORDER BY id LIMIT 1", (user_turn_id,))
        return turns[0] if turns else None

    async def exchanges(self, since: float, limit: int) -> list[tuple[Turn, Turn | None]]:
        """The last `limit` customer messages received since `since` (epoch seconds), newest first, each with
        the bot turn that answered it (None if none was stored: the process stopped while answering)."""
        messages = await self._select(
            "SELECT * FROM turns WHERE role = 'user' AND created_at >= ? ORDER BY id DESC LIMIT ?",
            (float(since), limit),
        )
        replies = await self._select(
            "SELECT b.* FROM turns b JOIN (SELECT id FROM turns WHERE role = 'user' AND created_at >= ? "
            "ORDER BY id DESC LIMIT ?) u ON b.reply_to = u.id ORDER BY b.id",
            (float(since), limit),
        )
        first_reply: dict[int, Turn] = {}
        for reply in replies:
            if reply.reply_to is not None:
                first_reply.setdefault(reply.reply_to, reply)
        return [(message, first_reply.get(message.id)) for message in messages]

    # -- delivery: each reply sent once, and what a restart still has to answer or send ----------------------

    async def claim_delivery(self, bot_turn_id: int, owner: str) -> bool:
        """Take the sending of a reply; False when it was sent already or another sender in `owner` has it.

        A claim left by another owner (a process that died while sending) is taken over.
        """
        changed = await self._db.execute(
            "UPDATE turns SET delivery_owner = ? WHERE id = ? AND role = 'bot' AND delivered_at IS NULL "
            "AND (delivery_owner IS NULL OR delivery_owner != ?)",
            (owner, bot_turn_id, owner),
        )
        return changed == 1

    async def mark_delivered(self, bot_turn_id: int) -> None:
        await self._db.execute("UPDATE turns SET delivered_at = ? WHERE id = ?", (time.time(), bot_turn_id))

    async def release_delivery(self, bot_turn_id: int) -> None:
        """The send failed: leave the reply for the next try (at the next start)."""
        await self._db.execute(
            "UPDATE turns SET delivery_owner = NULL WHERE id = ? AND delivered_at IS NULL", (bot_turn_id,)
        )

    async def pending(self, channel: str, since: float, undelivered_too: bool) -> list[tuple[int, Message]]:
        """(user turn id, message) for customer messages on `channel` since `since`, oldest first, that were
        stored but never answered (the process stopped first), or, with `undelivered_too`, whose answer was
        never confirmed sent. Messages kept for a person are not the bot's to answer."""
        sent = "AND b.delivered_at IS NOT NULL" if undelivered_too else ""
        rows = await self._db.fetch(
            "SELECT u.*, c.user_id, c.channel FROM turns u JOIN conversations c ON c.id = u.conversation_id "
            "WHERE u.role = 'user' AND u.held = 0 AND c.channel = ? AND u.created_at >= ? AND NOT EXISTS "
            f"(SELECT 1 FROM turns b WHERE b.reply_to = u.id {sent}) ORDER BY u.id",
            (channel, float(since)),
        )
        return [(row["id"], _message(row)) for row in rows]

    async def _select(self, sql: str, params: tuple[object, ...]) -> list[Turn]:
        return await select_turns(self._db, sql, params)


def _message(row: Row) -> Message:
    return Message(
        conversation_id=row["conversation_id"],
        channel=row["channel"],
        user_id=row["user_id"],
        text=row["text"],
        metadata=json.loads(row["metadata"] or "{}"),
        received_at=row["created_at"],
        client_message_id=row["client_message_id"],
        kind=MessageKind(row["kind"] or MessageKind.TEXT),
    )
