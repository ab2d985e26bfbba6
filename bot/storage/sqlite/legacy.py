"""Stores written before numbered migrations (schema user_version 1 to 6): their tables gained columns in
place, release by release. Migration 1 is that schema; a store from then first gets the columns it lacks,
in the order they came (SQLite gives existing rows the column's default, so old conversations stay readable).
"""

from __future__ import annotations

import aiosqlite

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


async def upgrade_legacy(db: aiosqlite.Connection) -> None:
    """Add the columns a pre-migration store lacks (a new, empty file has no tables: nothing to do)."""
    present: dict[str, set[str]] = {}  # table -> its columns
    for table, column, declaration in _ADDED_COLUMNS:
        if table not in present:
            async with db.execute(f"PRAGMA table_info({table})") as cursor:
                present[table] = {row[1] for row in await cursor.fetchall()}
        if present[table] and column not in present[table]:
            await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
