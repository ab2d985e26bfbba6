"""SQLite, embedded: one connection in WAL mode, statements serialised so a transaction is never interleaved
with another coroutine's statements. The connection is in autocommit mode; transactions are explicit
(BEGIN IMMEDIATE: a writer waits for another process's writer rather than failing half-way)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from bot.storage.migrations import Migration, check_applied, migrations
from bot.storage.sql import Params, Row, Sql, StoreError
from bot.storage.sqlite.legacy import upgrade_legacy

_OPEN_TIMEOUT_S = 30.0


class _Statements:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._db.execute(sql, tuple(params))
        return cursor.rowcount

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._db.execute(sql, tuple(params)) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._statements = _Statements(db)
        self._turn = asyncio.Lock()  # one transaction (or statement) on the connection at a time
        self.where = str(path)

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        db: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(path, isolation_level=None, timeout=_OPEN_TIMEOUT_S)
            db.row_factory = aiosqlite.Row
            await _wal(db, deadline=time.monotonic() + _OPEN_TIMEOUT_S)
            await db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            await db.execute("PRAGMA foreign_keys=ON")
            await _migrate(db, migrations("sqlite"), str(path))
        except BaseException as err:
            if db is not None:  # its worker thread would otherwise keep the process from exiting
                await db.close()
            if isinstance(err, sqlite3.Error):
                raise StoreError(f"conversation store {path} cannot be opened: {err}") from err
            raise
        return cls(db, path)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._turn:  # autocommit: one statement is its own transaction
            return await self._statements.execute(sql, params)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._turn:
            return await self._statements.fetch(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._turn:
            return await self._statements.fetchone(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Sql]:
        async with self._turn:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._statements
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    async def close(self) -> None:
        await self._db.close()


async def _migrate(db: aiosqlite.Connection, known: tuple[Migration, ...], where: str) -> None:
    """Apply what the store lacks in one transaction: processes opening it at once migrate it once."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        async with db.execute("SELECT version, name, checksum FROM schema_migrations") as cursor:
            applied = {row[0]: (row[1], row[2]) for row in await cursor.fetchall()}
        for migration in check_applied(known, applied, where):
            if migration.version == 1:
                await upgrade_legacy(db)  # a store from before numbered migrations: its columns first
            for statement in statements(migration.sql):
                await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, migration.checksum, time.time()),
            )
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    await db.execute("COMMIT")


async def _wal(db: aiosqlite.Connection, deadline: float) -> None:
    """Switch to WAL. The switch needs the file to itself and SQLite answers "locked" at once, without
    waiting, while another process opening the same file holds it: wait and try again instead."""
    while True:
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def statements(script: str) -> list[str]:
    """A migration file's statements, one by one (SQLite's own tokenizer decides where each ends)."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip() and not all(part.lstrip().startswith("--") for part in pending.strip().splitlines()):
        raise ValueError(f"a migration ends in an unfinished statement: {pending.strip()[:80]!r}")
    return found
