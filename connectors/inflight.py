"""Answers a connector is working on, so that stopping waits for them: shared by the chat apps.

A message being answered is already stored; an answer dropped half-way at shutdown is answered again at
the next start, but one that is about to be sent should be sent now. Stopping waits a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator


class InFlight:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()
        self.stopping = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Awaitable[None]) -> None:
        """Run `work` in the background, tracked."""
        task: asyncio.Future[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.contextmanager
    def this_task(self) -> Iterator[bool]:
        """Track the running task (an event handler answering) while inside; False once stopping."""
        task = asyncio.current_task()
        if self.stopping or task is None:
            yield False
            return
        self._tasks.add(task)
        try:
            yield True
        finally:
            self._tasks.discard(task)

    async def drain(self, grace_s: float, cancel_late: bool, take_new_meanwhile: bool = False) -> int:
        """Wait up to `grace_s` for the work in progress (and, with `take_new_meanwhile`, for work that
        starts meanwhile), then take no more; how many were still running (cancelled with `cancel_late`:
        the next start answers those again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self.stopping = self.stopping or not take_new_meanwhile
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        self.stopping = True
        late = set(self._tasks)
        if cancel_late:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        return len(late)
