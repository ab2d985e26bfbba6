"""Roles held by one process at a time (knowledge sync, Telegram polling, Discord's gateway), in Redis.

Redis is a real redis-server on loopback; each "process" is its own client, or a real second Python
process where dying matters (kill -9).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from bot.storage.coordination import LocalCoordination
from bot.storage.coordination.redis_coordination import RedisCoordination
from tests.redis_server import NEEDS_REDIS, RedisServer


def test_in_one_process_the_work_runs_at_once_and_the_role_shows_while_it_runs() -> None:
    async def scenario() -> None:
        coordination = LocalCoordination()
        seen: list[list[str]] = []

        async def work() -> None:
            seen.append(coordination.roles())

        await coordination.lead("knowledge-sync", work)
        assert seen == [["knowledge-sync"]]
        assert coordination.roles() == []

    anyio.run(scenario)


@NEEDS_REDIS
def test_one_process_holds_a_role_and_another_takes_over_when_it_stops(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        role = uuid.uuid4().hex
        processes = [RedisCoordination(redis_server.url, role_lease_s=1.5) for _ in range(3)]
        running: list[int] = []
        started: asyncio.Queue[int] = asyncio.Queue()

        def work(n: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                assert running == [], f"process {n} started while {running} held the role"
                running.append(n)
                started.put_nowait(n)
                try:
                    await asyncio.Event().wait()  # holds until cancelled
                finally:
                    running.remove(n)

            return run

        with anyio.fail_after(60):
            campaigns = {n: asyncio.create_task(c.lead(role, work(n))) for n, c in enumerate(processes)}
            first = await started.get()
            assert [n for n, c in enumerate(processes) if c.roles() == [role]] == [first]
            campaigns[first].cancel()  # stopped (shutting down): it releases the role
            second = await started.get()
            assert second != first and running == [second]
            for task in campaigns.values():
                task.cancel()
            await asyncio.gather(*campaigns.values(), return_exceptions=True)
        for c in processes:
            await c.close()

    anyio.run(scenario)


@NEEDS_REDIS
def test_a_campaign_stopped_while_its_work_winds_down_stops(redis_server: RedisServer) -> None:
    """A stop that arrives while a lost role's work is still finishing ends the campaign (it was swallowed)."""

    async def scenario() -> None:
        role = uuid.uuid4().hex
        coordination = RedisCoordination(redis_server.url, role_lease_s=1.5)
        started, winding_down, may_finish = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                winding_down.set()
                await asyncio.shield(may_finish.wait())  # its cleanup takes a while

        with anyio.fail_after(60):
            campaign = asyncio.create_task(coordination.lead(role, work))
            await started.wait()
            await coordination._client.set(f"supportbot:role:{role}", "someone else", px=60_000)
            await winding_down.wait()  # the campaign waits for the work to finish now
            campaign.cancel()
            may_finish.set()
            await asyncio.gather(campaign, return_exceptions=True)
            assert campaign.cancelled()
        await coordination.close()

    anyio.run(scenario)


@NEEDS_REDIS
def test_a_holder_whose_role_is_taken_stops_its_work(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        role = uuid.uuid4().hex
        coordination = RedisCoordination(redis_server.url, role_lease_s=1.5)
        started, stopped = asyncio.Event(), asyncio.Event()

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

        with anyio.fail_after(60):
            campaign = asyncio.create_task(coordination.lead(role, work))
            await started.wait()
            # Another process's token now (as after this one stalled past its lease and was replaced).
            await coordination._client.set(f"supportbot:role:{role}", "someone else", px=60_000)
            await stopped.wait()
            assert coordination.roles() == []
            assert await coordination._client.get(f"supportbot:role:{role}") == b"someone else"  # left alone
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        await coordination.close()

    anyio.run(scenario)


@NEEDS_REDIS
def test_work_that_finishes_gives_the_role_up(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        role = uuid.uuid4().hex
        first, second = (RedisCoordination(redis_server.url, role_lease_s=30.0) for _ in range(2))
        done: list[str] = []

        async def work(name: str) -> None:
            done.append(name)

        with anyio.fail_after(60):
            await first.lead(role, lambda: work("first"))
            await second.lead(role, lambda: work("second"))  # at once: the key was released, not left to expire
        assert done == ["first", "second"]
        await first.close()
        await second.close()

    anyio.run(scenario)


CANDIDATE = """
import asyncio, sys
from bot.storage.coordination.redis_coordination import RedisCoordination

async def main():
    coordination = RedisCoordination(sys.argv[1], role_lease_s=float(sys.argv[3]))
    async def work():
        print("leading", flush=True)
        await asyncio.sleep(3600)
    await coordination.lead(sys.argv[2], work)

asyncio.run(main())
"""


@NEEDS_REDIS
def test_a_holder_killed_with_sigkill_is_replaced_within_about_a_lease(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    role = uuid.uuid4().hex
    script = tmp_path / "candidate.py"
    script.write_text(CANDIDATE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen([sys.executable, str(script), redis_server.url, role, "2"], env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "leading"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    async def scenario() -> None:
        coordination = RedisCoordination(redis_server.url, role_lease_s=2.0)
        took_over = asyncio.Event()

        async def work() -> None:
            took_over.set()

        with anyio.fail_after(60):  # the dead holder's lease (2 s) runs out; nobody releases it
            await coordination.lead(role, work)
        assert took_over.is_set()
        await coordination.close()

    anyio.run(scenario)


@pytest.mark.parametrize("kind", ["in-process", pytest.param("redis", marks=NEEDS_REDIS)])
def test_a_process_cannot_campaign_twice_for_one_role(kind: str, request: pytest.FixtureRequest) -> None:
    async def scenario() -> None:
        if kind == "redis":
            coordination: LocalCoordination | RedisCoordination = RedisCoordination(
                request.getfixturevalue("redis_server").url
            )
        else:
            coordination = LocalCoordination()
        inside = asyncio.Event()

        async def work() -> None:
            inside.set()
            await asyncio.Event().wait()

        with anyio.fail_after(60):
            role = uuid.uuid4().hex
            campaign = asyncio.create_task(coordination.lead(role, work))
            await inside.wait()
            with pytest.raises(RuntimeError, match="already held"):
                await coordination.lead(role, work)
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        await coordination.close()

    anyio.run(scenario)
