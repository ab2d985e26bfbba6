"""Coordination inside one process: asyncio locks and sliding windows in memory."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from bot.storage.coordination.base import RateCheck
from bot.storage.ratelimit import RateLimiter


class LocalCoordination:
    kind = "in-process"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # asyncio.Lock wakes its waiters in the order they came: messages are answered in arrival order.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._limiters: dict[tuple[int, float], RateLimiter] = {}
        self._clock = clock
        self._followers: dict[str, set[asyncio.Queue[str]]] = {}
        self._roles: set[str] = set()

    @asynccontextmanager
    async def conversation_lock(self, conversation_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        async with lock:
            yield

    def _limiter(self, check: RateCheck) -> RateLimiter:
        found = self._limiters.get((check.limit, check.window_s))
        if found is None:
            found = self._limiters[(check.limit, check.window_s)] = RateLimiter(check.limit, check.window_s,
                                                                                 self._clock)  # fmt: skip
        return found

    async def rate(self, checks: Sequence[RateCheck]) -> float:
        waits = [self._limiter(c).retry_after(c.key) or 1.0 for c in checks if not self._limiter(c).allows(c.key)]
        if waits:
            return max(waits)
        for check in checks:
            self._limiter(check).record(check.key)
        return 0.0

    async def publish(self, topic: str, message: str) -> None:
        for queue in list(self._followers.get(topic, ())):
            queue.put_nowait(message)

    async def follow(self, topic: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        followers = self._followers.setdefault(topic, set())
        followers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            followers.discard(queue)

    async def lead(self, role: str, work: Callable[[], Awaitable[None]]) -> None:
        """One process: it holds every role (two candidates here would be one process's mistake)."""
        if role in self._roles:
            raise RuntimeError(f"role {role}: already held in this process")
        self._roles.add(role)
        try:
            await work()
        finally:
            self._roles.discard(role)

    def roles(self) -> list[str]:
        return sorted(self._roles)

    async def ping(self) -> float:
        return 0.0

    async def close(self) -> None:
        return None
