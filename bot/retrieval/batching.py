"""Shared batches for per-message work that is cheaper in bulk (query embedding and search).

Encoding eight short texts in one call costs about as much as encoding two of them one by one, so
when several conversations ask at once their texts are processed together. There is no batching
thread and no waiting window: the first caller to find the encoder idle encodes everything queued
so far and hands each caller its vector, so a lone caller pays nothing extra. With `workers` > 1 up to
that many batches run at once (the encoder releases the GIL), so a message arriving while one batch is
being encoded starts on a free core instead of waiting for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Result = TypeVar("Result")


@dataclass
class _Request(Generic[Result]):
    text: str
    result: Result | None = None
    done: bool = False
    taken: bool = False  # in a batch being processed
    error: BaseException | None = None


class QueryBatcher(Generic[Result]):
    """Runs `process_many` (texts -> one result per text, in order) on shared batches of callers' texts."""

    def __init__(
        self, process_many: Callable[[Sequence[str]], Sequence[Result]], max_batch: int = 32, workers: int = 1
    ) -> None:
        self._process_many = process_many
        self._max_batch = max_batch
        self._workers = workers
        self._cond = threading.Condition()
        self._queue: list[_Request[Result]] = []
        self._running = 0  # batches being processed now
        self.batches = 0  # calls made, for benchmarks and tests

    @property
    def pending(self) -> int:
        """Texts queued and not yet taken into a batch (read-only; for benchmarks and tests)."""
        with self._cond:
            return len(self._queue)

    def run(self, text: str) -> Result:
        """The result for `text`; blocks the calling thread (never call it on an event loop)."""
        request: _Request[Result] = _Request(text)
        with self._cond:
            self._queue.append(request)
            while not request.done:
                # Wait while every worker is busy, or while another caller's batch holds this request.
                if self._running >= self._workers or request.taken:
                    self._cond.wait()
                    continue
                self._run_one_batch()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]  # set whenever done without error

    def _run_one_batch(self) -> None:
        """Called holding the lock; releases it while encoding."""
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        for request in batch:
            request.taken = True
        self._running += 1
        self._cond.release()
        try:
            results = self._process_many([r.text for r in batch])
        except BaseException as error:  # every waiter must wake, whatever went wrong
            for request in batch:
                request.error = error
                request.done = True
        else:
            for request, result in zip(batch, results, strict=True):
                request.result = result
                request.done = True
        finally:
            self._cond.acquire()
            self._running -= 1
            self.batches += 1
            self._cond.notify_all()
