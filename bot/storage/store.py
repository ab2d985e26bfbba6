"""Conversation store: every turn, with who answered, from which source, how confidently and how fast.

SQLite, embedded. The user's turn is written before any answering starts, so a failure later in
the pipeline never loses what the customer said.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosqlite

from bot.answering.guard import storable
from bot.conversation.ledger import ConversationLedger
from bot.conversation.stats import StatsReader
from bot.storage.approvals import SCHEMA as APPROVALS_SCHEMA
from bot.storage.approvals import Approvals
from bot.storage.turns import Turn, select_turns
from bot.types import Message, MessageKind, Reply

_SCHEMA_VERSION = 6  # 6: approvals (bot.storage.approvals)
MAX_TURN_ID = 2**63 - 1  # SQLite's largest integer: no turn id is above it
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    handoff     INTEGER NOT NULL DEFAULT 0,
    handoff_summary TEXT,  -- for the person who takes over, written by the model after a handoff
    owner_state TEXT NOT NULL DEFAULT 'bot',  -- bot.conversation.state.Owner
    owner_agent TEXT,      -- the agent who owns it (owner_state 'agent')
    owner_trigger TEXT,    -- why it last left the bot
    owner_since REAL,      -- when it entered owner_state
    last_hold_at REAL,     -- the last holding message while queued
    slots TEXT,            -- JSON object: what the conversation has collected (an email address...)
    active_form TEXT       -- the form being filled (bot.actions.forms), if any
);
CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    kind            TEXT NOT NULL,  -- bot.conversation.state.EventKind
    actor           TEXT NOT NULL,  -- bot, customer, or the agent's name
    trigger         TEXT,
    text            TEXT,
    created_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    role            TEXT NOT NULL CHECK (role IN ('user', 'bot')),
    text            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    answered_by     TEXT,
    source_id       TEXT,
    confidence      REAL,
    reason          TEXT,
    citations       TEXT,   -- JSON list of citations
    quick_replies   TEXT,   -- JSON list of suggested replies
    handoff         INTEGER NOT NULL DEFAULT 0,
    timings         TEXT,   -- JSON object of milliseconds per step
    metadata        TEXT,   -- JSON object from the channel
    client_message_id TEXT, -- the sender's id for a user turn, so a resent message is answered once
    reply_to        INTEGER REFERENCES turns(id),  -- for a bot turn: the user turn it answers
    kind            TEXT,   -- for a user turn: what the customer sent (bot.types.MessageKind)
    delivered_at    REAL,   -- for a bot turn: when its channel confirmed the send (NULL: not yet)
    delivery_owner  TEXT,   -- for a bot turn: the process (Pipeline.instance) sending it now
    author          TEXT,   -- for a reply written by a person (answered_by 'human'): the agent's name
    held            INTEGER NOT NULL DEFAULT 0  -- for a user turn: kept for a person, not for the bot to answer
);
"""
# Created after `_migrate`: on a store from an earlier version they need its added columns.
_INDEXES = """
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS turns_by_client_id ON turns (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS turns_by_reply_to ON turns (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX IF NOT EXISTS turns_by_time ON turns (created_at);
CREATE INDEX IF NOT EXISTS events_by_conversation ON events (conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner_state, owner_since);
"""


@dataclass(frozen=True)
class Conversation:
    id: str
    channel: str
    user_id: str
    created_at: float
    updated_at: float
    handoff: bool
    handoff_summary: str | None = None


# Columns added since the first release, in the order they came: (table, column, declaration).
# SQLite adds a column to existing rows with its default, so earlier conversations stay readable.
_ADDED_COLUMNS = (
    ("turns", "quick_replies", "TEXT"),
    ("turns", "handoff", "INTEGER NOT NULL DEFAULT 0"),
    ("turns", "client_message_id", "TEXT"),
    ("turns", "reply_to", "INTEGER REFERENCES turns(id)"),
    ("conversations", "handoff_summary", "TEXT"),
    ("turns", "kind", "TEXT"),
    ("turns", "delivered_at", "REAL"),
    ("turns", "delivery_owner", "TEXT"),
    ("conversations", "owner_state", "TEXT NOT NULL DEFAULT 'bot'"),
    ("conversations", "owner_agent", "TEXT"),
    ("conversations", "owner_trigger", "TEXT"),
    ("conversations", "owner_since", "REAL"),
    ("conversations", "last_hold_at", "REAL"),
    ("conversations", "slots", "TEXT"),
    ("turns", "author", "TEXT"),
    ("turns", "held", "INTEGER NOT NULL DEFAULT 0"),
    ("conversations", "active_form", "TEXT"),
)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a store written by an earlier version up to this schema (columns are only ever added)."""
    present: dict[str, set[str]] = {}  # table -> its columns
    for table, column, declaration in _ADDED_COLUMNS:
        if table not in present:
            async with db.execute(f"PRAGMA table_info({table})") as cursor:
                present[table] = {row[1] for row in await cursor.fetchall()}
        if column not in present[table]:
            await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class StoreError(Exception):
    """The conversation store cannot be opened; the message names the file and why. The file is left as it was."""


class ConversationStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.ledger = ConversationLedger(db)  # ownership, slots, events, notes, agents' replies
        self.stats = StatsReader(db)  # what /metrics and `bot review` report
        self.approvals = Approvals(db)  # replies approved as fine-tuning examples

    @classmethod
    async def open(cls, path: Path) -> ConversationStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(path)
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            await db.execute("PRAGMA foreign_keys=ON")
            await db.executescript(_SCHEMA)
            await _migrate(db)
            await db.executescript(_INDEXES)
            await db.executescript(APPROVALS_SCHEMA)
            await db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            await db.commit()
        except BaseException as err:
            if db is not None:  # its worker thread would otherwise keep the process from exiting
                await db.close()
            if isinstance(err, sqlite3.Error):
                raise StoreError(f"conversation store {path} cannot be opened: {err}") from err
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def record_user_turn(self, message: Message) -> int:
        now = time.time()
        await self._db.execute(
            "INSERT INTO conversations (id, channel, user_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
            (message.conversation_id, message.channel, storable(message.user_id), now, now),
        )
        cursor = await self._db.execute(
            "INSERT INTO turns (conversation_id, role, text, created_at, metadata, client_message_id, kind) "
            "VALUES (?, 'user', ?, ?, ?, ?, ?)",
            (
                message.conversation_id,
                storable(message.text),
                message.received_at,
                json.dumps(dict(message.metadata)),
                message.client_message_id,
                str(message.kind),
            ),
        )
        await self._db.commit()
        return int(cursor.lastrowid or 0)

    async def record_bot_turn(
        self, conversation_id: str, reply: Reply, timings: dict[str, float], reply_to: int | None = None
    ) -> int:
        now = time.time()
        cursor = await self._db.execute(
            "INSERT INTO turns (conversation_id, role, text, created_at, answered_by, source_id, confidence, "
            "reason, citations, quick_replies, handoff, timings, reply_to) "
            "VALUES (?, 'bot', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                reply.text,
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
        if reply.handoff:
            await self._db.execute("UPDATE conversations SET handoff = 1 WHERE id = ?", (conversation_id,))
        await self._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        await self._db.commit()
        return int(cursor.lastrowid or 0)

    async def conversation(self, conversation_id: str) -> Conversation | None:
        async with self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)) as cursor:
            row = await cursor.fetchone()
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
        await self._db.commit()

    async def turns(self, conversation_id: str, limit: int = 200, after: int = 0) -> list[Turn]:
        """Up to the most recent `limit` turns with an id above `after`, oldest first."""
        return await self._select(
            "SELECT * FROM (SELECT * FROM turns WHERE conversation_id = ? AND id > ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id",
            (conversation_id, after, limit),
        )

    async def turn(self, conversation_id: str, turn_id: int) -> Turn | None:
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
        async with self._db.execute(
            "SELECT quick_replies FROM turns WHERE id = ? AND role = 'bot' AND conversation_id = ?",
            (bot_turn_id, conversation_id),
        ) as cursor:
            row = await cursor.fetchone()
        offered: list[str] = json.loads(row["quick_replies"] or "[]") if row is not None else []
        return offered[index] if 0 <= index < len(offered) else None

    async def reply_to(self, user_turn_id: int) -> Turn | None:
        turns = await self._select("SELECT * FROM turns WHERE reply_to = ? ORDER BY id LIMIT 1", (user_turn_id,))
        return turns[0] if turns else None

    async def exchanges(self, since: float, limit: int) -> list[tuple[Turn, Turn | None]]:
        """The last `limit` customer messages received since `since` (epoch seconds), newest first, each with
        the bot turn that answered it (None if none was stored: the process stopped while answering)."""
        messages = await self._select(
            "SELECT * FROM turns WHERE role = 'user' AND created_at >= ? ORDER BY id DESC LIMIT ?", (since, limit)
        )
        replies = await self._select(
            "SELECT b.* FROM turns b JOIN (SELECT id FROM turns WHERE role = 'user' AND created_at >= ? "
            "ORDER BY id DESC LIMIT ?) u ON b.reply_to = u.id ORDER BY b.id",
            (since, limit),
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
        cursor = await self._db.execute(
            "UPDATE turns SET delivery_owner = ? WHERE id = ? AND role = 'bot' AND delivered_at IS NULL "
            "AND (delivery_owner IS NULL OR delivery_owner != ?)",
            (owner, bot_turn_id, owner),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def mark_delivered(self, bot_turn_id: int) -> None:
        await self._db.execute("UPDATE turns SET delivered_at = ? WHERE id = ?", (time.time(), bot_turn_id))
        await self._db.commit()

    async def release_delivery(self, bot_turn_id: int) -> None:
        """The send failed: leave the reply for the next try (at the next start)."""
        await self._db.execute(
            "UPDATE turns SET delivery_owner = NULL WHERE id = ? AND delivered_at IS NULL", (bot_turn_id,)
        )
        await self._db.commit()

    async def pending(self, channel: str, since: float, undelivered_too: bool) -> list[tuple[int, Message]]:
        """(user turn id, message) for customer messages on `channel` since `since`, oldest first, that were
        stored but never answered (the process stopped first), or, with `undelivered_too`, whose answer was
        never confirmed sent. Messages kept for a person are not the bot's to answer."""
        sent = "AND b.delivered_at IS NOT NULL" if undelivered_too else ""
        async with self._db.execute(
            "SELECT u.*, c.user_id, c.channel FROM turns u JOIN conversations c ON c.id = u.conversation_id "
            "WHERE u.role = 'user' AND u.held = 0 AND c.channel = ? AND u.created_at >= ? AND NOT EXISTS "
            f"(SELECT 1 FROM turns b WHERE b.reply_to = u.id {sent}) ORDER BY u.id",
            (channel, since),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            (row["id"], Message(
                conversation_id=row["conversation_id"],
                channel=row["channel"],
                user_id=row["user_id"],
                text=row["text"],
                metadata=json.loads(row["metadata"] or "{}"),
                received_at=row["created_at"],
                client_message_id=row["client_message_id"],
                kind=MessageKind(row["kind"] or MessageKind.TEXT),
            ))
            for row in rows
        ]  # fmt: skip

    async def _select(self, sql: str, params: tuple[object, ...]) -> list[Turn]:
        return await select_turns(self._db, sql, params)
