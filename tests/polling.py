"""Waiting, in tests, for a fake server to have seen enough calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for_count(read: Callable[[], list[T]], count: int, timeout: float, what: str) -> list[T]:
    """Poll `read` until it returns at least `count` items; fail with what was seen after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read()
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} {what} within {timeout}s; got {read()}")
