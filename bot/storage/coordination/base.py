"""The coordination interface both implementations keep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from bot.storage.unavailable import Unavailable


class CoordinationUnavailable(Unavailable):
    """The shared coordination service cannot be reached: the process must not act alone."""


@dataclass(frozen=True)
class RateCheck:
    """At most `limit` events per `window_s` seconds under `key`."""

    key: str
    limit: int
    window_s: float


class Coordination(Protocol):
    kind: str  # "in-process" or "redis", for /health

    def conversation_lock(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Held while one message of the conversation is stored or answered; the next waits, in order."""
        ...

    async def rate(self, checks: Sequence[RateCheck]) -> float:
        """0.0 when every check allows one more event, which is then counted in each; otherwise the seconds
        until every refusing one allows again, and nothing is counted (a refused event uses nothing up)."""
        ...

    async def publish(self, topic: str, message: str) -> None:
        """Send `message` to every process following `topic` (this one included)."""
        ...

    def follow(self, topic: str) -> AsyncIterator[str]:
        """The messages published on `topic` from now on, in order, until cancelled.
        Raises CoordinationUnavailable when the connection is lost (follow again to resume)."""
        ...

    async def lead(self, role: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in one process only of those sharing this coordination: wait to be elected for `role`,
        run it while holding the role (cancelled at once if the role is lost), return when `work` returns.
        Another process takes the role over within about a lease when the holder dies."""
        ...

    def roles(self) -> list[str]:
        """The roles this process holds now (for /health)."""
        ...

    async def ping(self) -> float:
        """Round trip to the shared service in milliseconds (0.0 in process); CoordinationUnavailable if down."""
        ...

    async def close(self) -> None: ...
