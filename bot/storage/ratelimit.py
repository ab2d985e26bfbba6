"""Sliding-window rate limits, per key (a conversation, a client address)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Allows at most `limit` events per `window` seconds for each key."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._last_sweep = clock()

    def allow(self, key: str) -> bool:
        """Whether an event for `key` is allowed now; an allowed one is counted, a refused one is not."""
        if not self.allows(key):
            return False
        self.record(key)
        return True

    def allows(self, key: str) -> bool:
        """Whether an event for `key` would be allowed now, counting nothing."""
        now = self._clock()
        self._sweep(now)
        events = self._events.get(key)
        while events and events[0] <= now - self.window:
            events.popleft()
        return not events or len(events) < self.limit

    def record(self, key: str) -> None:
        self._events.setdefault(key, deque()).append(self._clock())

    def retry_after(self, key: str) -> float:
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window - self._clock())

    def _sweep(self, now: float) -> None:
        """Forget idle keys now and then, so memory follows active clients, not all clients ever seen."""
        if now - self._last_sweep < self.window:
            return
        self._last_sweep = now
        for key in [k for k, events in self._events.items() if not events or events[-1] <= now - self.window]:
            del self._events[key]
