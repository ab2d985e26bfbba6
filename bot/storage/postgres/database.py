"""PostgreSQL through an asyncpg pool, for several bot processes sharing one store.

The store's SQL uses `?` placeholders; they become `$1`, `$2`... here. Opening applies the migrations under
a transaction-level advisory lock, so processes starting together migrate once.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from bot.storage.migrations import check_applied, migrations
from bot.storage.sql import Params, Row, Sql, StoreError, StoreUnavailable

_MIGRATION_LOCK = 0x5B0751  # pg_advisory_xact_lock key: one process migrates, the others wait for it
_PLACEHOLDER = re.compile(r"\?")
# The server or the way to it is gone (what a retry after it is back would fix), not a fault in a statement.
_LOST = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
         asyncpg.exceptions.OperatorInterventionError)  # fmt: skip
_ACQUIRE_TIMEOUT_S = 10.0


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$n` (the store's SQL has no `?` inside string literals)."""
    counter = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def redacted(url: str) -> str:
    """The URL without any password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class _Statements:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        status: str = await self._conn.execute(numbered(sql), *params)
        last = status.rsplit(" ", 1)[-1]  # "UPDATE 1", "INSERT 0 1", "DELETE 0"
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return [dict(record) for record in await self._conn.fetch(numbered(sql), *params)]

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        record = await self._conn.fetchrow(numbered(sql), *params)
        return dict(record) if record is not None else None


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool = pool
        self.where = where

    @classmethod
    async def open(cls, url: str, password: str | None, pool_size: int) -> PostgresDatabase:
        where = redacted(url)
        try:
            pool = await asyncpg.create_pool(url, password=password, min_size=1, max_size=pool_size, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            raise StoreError(f"conversation store {where} cannot be opened: {err}") from err
        database = cls(pool, where)
        try:
            await database._migrate()
        except BaseException as err:
            await pool.close()
            if isinstance(err, asyncpg.PostgresError):
                raise StoreError(f"conversation store {where} cannot be migrated: {err}") from err
            raise
        return database

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "checksum TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            applied = {row["version"]: (row["name"], row["checksum"]) for row in rows}
            for migration in check_applied(migrations("postgres"), applied, self.where):
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                    migration.version, migration.name, migration.checksum, time.time(),
                )  # fmt: skip

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=_ACQUIRE_TIMEOUT_S) as conn:
                yield conn
        except _LOST as err:
            raise StoreUnavailable(f"conversation store {self.where} cannot be reached: {err!r}") from err

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._connection() as conn:
            return await _Statements(conn).execute(sql, params)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._connection() as conn:
            return await _Statements(conn).fetch(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._connection() as conn:
            return await _Statements(conn).fetchone(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Sql]:
        async with self._connection() as conn, conn.transaction():
            yield _Statements(conn)

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()
