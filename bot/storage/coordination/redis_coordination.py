"""Coordination in Redis, for several bot processes (redis-py's asyncio client).

- **A conversation's lock** is redis-py's `Lock` (SET NX with a token, released by a script that checks
  the token) on `supportbot:lock:CONVERSATION`, with a lease: a holder renews it while it works, so a
  process that dies holding it (kill -9, a lost machine) holds it for at most `lease_s`. Inside one
  process the lock's waiters first queue on an asyncio lock, so this process's messages keep their
  arrival order and only one of them polls Redis at a time.
- **Pushes** (an agent's reply for a widget connected to another process) go through Redis pub/sub on
  `supportbot:TOPIC`.
- **Roles** (one process syncs the knowledge folder, polls Telegram, connects to Discord's gateway) are
  elected with a leased key per role (`supportbot:role:ROLE`, `roles.py`).
- **Rate limits** are sliding windows, one sorted set per key (`supportbot:rate:KEY`), checked and counted
  by one script, on Redis' clock: every process sees the same windows, whatever its own clock says.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from bot.storage.coordination.base import CoordinationUnavailable, RateCheck
from bot.storage.coordination.local import LocalCoordination
from bot.storage.coordination.roles import Role

log = logging.getLogger(__name__)

PREFIX = "supportbot:"

# KEYS: one sorted set per check. ARGV: a unique member, then limit and window (ms) for each key.
# Returns 0 (allowed, counted in every window) or the milliseconds until the first refusing window allows.
_RATE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local until_free = tonumber(oldest[2]) + window - now
    if until_free > wait then wait = until_free end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""


class RedisCoordination:
    kind = "redis"

    def __init__(
        self, url: str, password: str | None = None, *, lease_s: float = 30.0, wait_s: float = 120.0,
        role_lease_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.url = url
        self._client: Any = aioredis.Redis.from_url(url, password=password, socket_timeout=5.0,
                                                    socket_connect_timeout=5.0)  # fmt: skip
        self._lease_s = lease_s
        self._wait_s = wait_s
        self._rate_script: Any = self._client.register_script(_RATE_SCRIPT)
        self._queue = LocalCoordination()  # this process's waiters, in arrival order, before Redis' lock
        self._roles: set[str] = set()  # held now
        self._campaigns: set[str] = set()  # held or waited for
        self._role_lease_s = role_lease_s

    @asynccontextmanager
    async def conversation_lock(self, conversation_id: str) -> AsyncIterator[None]:
        async with self._queue.conversation_lock(conversation_id):
            lock: Any = self._client.lock(f"{PREFIX}lock:{conversation_id}", timeout=self._lease_s, sleep=0.05,
                                          blocking_timeout=self._wait_s, thread_local=False)  # fmt: skip
            try:
                acquired = await lock.acquire()
            except RedisError as err:
                raise CoordinationUnavailable(f"Redis at {self.url}: {err}") from err
            if not acquired:
                raise CoordinationUnavailable(
                    f"conversation {conversation_id}: its lock was not free within {self._wait_s:g} s"
                )
            keeper = asyncio.create_task(self._renew(lock, conversation_id))
            try:
                yield
            finally:
                keeper.cancel()
                with suppress(asyncio.CancelledError):
                    await keeper
                try:
                    await lock.release()
                except LockNotOwnedError:
                    log.warning("conversation %s: its lock lease ran out before the work was done", conversation_id)
                except (LockError, RedisError) as err:
                    log.warning("conversation %s: releasing its lock failed (%s); it expires by itself",
                                conversation_id, err)  # fmt: skip

    async def _renew(self, lock: Any, conversation_id: str) -> None:
        """Renew the lease at a third of its length while the holder works."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await lock.reacquire()
            except (LockError, RedisError) as err:
                log.warning("conversation %s: renewing its lock failed (%s)", conversation_id, err)

    async def rate(self, checks: Sequence[RateCheck]) -> float:
        if not checks:
            return 0.0
        keys = [f"{PREFIX}rate:{check.key}" for check in checks]
        args: list[str | int] = [secrets.token_hex(8)]
        for check in checks:
            args += [check.limit, max(1, int(check.window_s * 1000))]
        try:
            wait_ms = int(await self._rate_script(keys=keys, args=args))
        except RedisError as err:
            raise CoordinationUnavailable(f"Redis at {self.url}: {err}") from err
        return wait_ms / 1000.0

    async def publish(self, topic: str, message: str) -> None:
        try:
            await self._client.publish(f"{PREFIX}{topic}", message)
        except RedisError as err:
            raise CoordinationUnavailable(f"Redis at {self.url}: {err}") from err

    async def follow(self, topic: str) -> AsyncIterator[str]:
        pubsub: Any = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"{PREFIX}{topic}")
            while True:
                # A timeout-less read would hit the client's socket timeout between quiet messages.
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    yield data.decode("utf-8") if isinstance(data, bytes) else str(data)
        except RedisError as err:
            raise CoordinationUnavailable(f"Redis at {self.url}: {err}") from err
        finally:
            with suppress(RedisError):
                await pubsub.aclose()

    async def lead(self, role: str, work: Callable[[], Awaitable[None]]) -> None:
        if role in self._campaigns:
            raise RuntimeError(f"role {role}: already held in this process (or campaigned for)")
        self._campaigns.add(role)
        try:
            await Role(self._client, f"{PREFIX}role:{role}", self._role_lease_s, self._roles, role).lead(work)
        finally:
            self._campaigns.discard(role)

    def roles(self) -> list[str]:
        return sorted(self._roles)

    async def ping(self) -> float:
        started = time.perf_counter()
        try:
            await self._client.ping()
        except RedisError as err:
            raise CoordinationUnavailable(f"Redis at {self.url}: {err}") from err
        return (time.perf_counter() - started) * 1000.0

    async def close(self) -> None:
        await self._client.aclose()
