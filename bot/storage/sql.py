"""The store's view of a SQL database: statements with `?` placeholders, rows as dicts, transactions.

Two implementations: bot.storage.sqlite (embedded, one connection) and bot.storage.postgres (a pool, for
several processes). The SQL the store writes is the subset both dialects share; each implementation
owns its schema as numbered migrations (bot.storage.migrations).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from bot.storage.unavailable import Unavailable

Row = dict[str, Any]
MAX_ROW_ID = 2**63 - 1  # the largest integer SQLite and PostgreSQL (bigint) store: no row id is above it
Params = Sequence[object]


class Sql(Protocol):
    """Statements run one at a time; on a Database each is its own transaction."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...


class Database(Sql, Protocol):
    dialect: str  # "sqlite" or "postgresql"
    where: str  # the file or the server, for messages (never a password)

    def transaction(self) -> AbstractAsyncContextManager[Sql]:
        """Statements that commit together, or not at all when the block raises."""
        ...

    async def ping(self) -> None:
        """Raises when the database cannot answer a query now."""
        ...

    async def close(self) -> None: ...


class StoreUnavailable(Unavailable):
    """The store's database cannot be reached now (PostgreSQL down, the network between)."""


class StoreError(Exception):
    """The conversation store cannot be opened or migrated; the message names where and why, and it is left
    as it was."""
