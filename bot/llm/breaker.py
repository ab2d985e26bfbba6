"""A circuit breaker: stop calling a model server that keeps failing, and try again later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls are refused until the reset time has passed
    HALF_OPEN = "half_open"  # one trial call is out; its outcome closes or re-opens the breaker


class CircuitBreaker:
    def __init__(self, failures: int, reset_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset_after = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """Whether to call now. After the reset time one caller gets a trial call; the others wait it out."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            # A trial that never reported back (cancelled) must not block the model for good.
            if self._clock() - self._opened_at >= self._reset_after:
                self._state = BreakerState.HALF_OPEN
                self._opened_at = self._clock()
                return True
            return False

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._state = BreakerState.CLOSED

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()

    def seconds_until_retry(self) -> float:
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._reset_after - (self._clock() - self._opened_at))
