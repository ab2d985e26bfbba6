"""Roles only one process may hold at a time (syncing the knowledge folder, polling Telegram, Discord's
gateway), elected through Redis.

A role is a key holding the holder's random token with a lease (`SET NX PX`). The holder renews it at a
third of the lease while its work runs; a renewal that finds another token, or that cannot reach Redis
before the lease would run out, means the role is lost and the work is cancelled at once. The others
try to take the role every third of a lease, so a holder killed with -9 is replaced within about a lease
and a third. A holder that lost its role waits a whole lease before trying again, so it does not take
the role back from the process that just took it over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the role. ARGV: the holder's token, the lease in ms. 1 when renewed, 0 when another holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Role:
    """One process's candidacy for one role."""

    def __init__(self, client: Any, key: str, lease_s: float, held: set[str], name: str) -> None:
        self._client = client
        self._key = key
        self._lease_ms = max(1, int(lease_s * 1000))
        self._lease_s = lease_s
        self._token = secrets.token_hex(16)
        self._renew: Any = client.register_script(_RENEW)
        self._release: Any = client.register_script(_RELEASE)
        self._held = held  # the coordination's roles held now, for /health
        self._name = name

    async def lead(self, work: Callable[[], Awaitable[None]]) -> None:
        """Campaign until elected, run `work` while holding the role; returns when `work` returns."""
        unreachable = False
        while True:
            try:
                taken = bool(await self._client.set(self._key, self._token, nx=True, px=self._lease_ms))
                unreachable = False
            except RedisError as err:
                if not unreachable:
                    log.warning("role %s: Redis cannot be reached (%s); trying again", self._name, err)
                unreachable, taken = True, False
            if not taken:
                await asyncio.sleep(self._lease_s / 3)
                continue
            log.info("role %s: held by this process", self._name)
            if await self._hold(work):
                return
            await asyncio.sleep(self._lease_s)  # let the process that took over keep it

    async def _hold(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run `work` while the role is renewed: True when it finished, False when the role was lost."""
        self._held.add(self._name)
        working = asyncio.ensure_future(work())
        keeping = asyncio.ensure_future(self._keep())
        try:
            await asyncio.wait({working, keeping}, return_when=asyncio.FIRST_COMPLETED)
            if working.done():
                working.result()  # its error, if it failed
                return True
            log.warning("role %s: lost; stopping its work (another process takes it over)", self._name)
            return False
        finally:
            self._held.discard(self._name)
            for task in (working, keeping):
                task.cancel()
            # Waited for, not awaited: awaiting a cancelled child here and suppressing its CancelledError
            # would also swallow this task's own cancellation (a stop arriving now), and it would campaign on.
            await asyncio.wait({working, keeping})
            with suppress(RedisError):
                await self._release(keys=[self._key], args=[self._token])

    async def _keep(self) -> None:
        """Renew the lease every third of it; returns when the role is no longer this process's."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                if not int(await self._renew(keys=[self._key], args=[self._token, self._lease_ms])):
                    return  # another process holds it now
                renewed = time.monotonic()
            except RedisError as err:
                # The lease may still be ours; once it would have run out, another process may hold it.
                if time.monotonic() - renewed > self._lease_s * 2 / 3:
                    log.warning("role %s: cannot renew (%s)", self._name, err)
                    return
