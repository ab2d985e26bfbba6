"""One message at a time per conversation, and rate limits: in this process, and in Redis across processes.

Redis is a real redis-server on a loopback port. "Another process" is another client (its own
connection pool and local locks), or a real second Python process where dying matters (kill -9).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.sync.client import connect

from bot.config import Config
from bot.retrieval.embedding import Embedder
from bot.storage.coordination import Coordination, LocalCoordination, RateCheck
from bot.storage.coordination.redis_coordination import RedisCoordination
from tests.conftest import ConfigFactory, LiveServer
from tests.redis_server import NEEDS_REDIS, RedisServer

Factory = Callable[[], Coordination]


@pytest.fixture(params=["in-process", pytest.param("redis", marks=NEEDS_REDIS)])
def make(request: pytest.FixtureRequest) -> Factory:
    if request.param == "in-process":
        shared = LocalCoordination()
        return lambda: shared  # one process: everything shares one object
    server: RedisServer = request.getfixturevalue("redis_server")
    return lambda: RedisCoordination(server.url, lease_s=5.0, wait_s=60.0)


def key() -> str:
    return uuid.uuid4().hex


def test_a_conversation_takes_one_message_at_a_time_in_arrival_order(make: Factory) -> None:
    async def scenario() -> list[str]:
        first, second = make(), make()  # with Redis: two processes' worth of clients
        conversation, order = key(), []
        inside = 0

        async def message(coordination: Coordination, name: str) -> None:
            nonlocal inside
            async with coordination.conversation_lock(conversation):
                inside += 1
                assert inside == 1, "two messages of one conversation at once"
                order.append(f"{name} in")
                await asyncio.sleep(0.05)
                order.append(f"{name} out")
                inside -= 1

        async with anyio.create_task_group() as tasks:
            for i in range(4):
                tasks.start_soon(message, first, f"a{i}")
                await asyncio.sleep(0)  # arrival order within this process
            for i in range(2):
                tasks.start_soon(message, second, f"b{i}")
        for coordination in {id(first): first, id(second): second}.values():
            await coordination.close()
        return order

    order = anyio.run(scenario)
    assert len(order) == 12 and all(order[i].endswith("in") and order[i + 1].endswith("out") for i in range(0, 12, 2))
    mine = [step.split()[0] for step in order if step.startswith("a") and step.endswith("in")]
    assert mine == ["a0", "a1", "a2", "a3"]  # one process's messages keep their arrival order


def test_rate_limits_are_shared_and_a_refused_message_uses_nothing_up(make: Factory) -> None:
    async def scenario() -> None:
        first, second = make(), make()
        ip, conversation = f"ip:{key()}", f"conversation:{key()}"

        def checks(conv: str = conversation) -> list[RateCheck]:
            return [RateCheck(ip, 3, 60.0), RateCheck(conv, 2, 60.0)]

        assert await first.rate(checks()) == 0.0
        assert await second.rate(checks()) == 0.0
        wait = await first.rate(checks())  # the conversation's 2 per minute are used, whichever process took them
        assert 30.0 < wait <= 60.0  # about the window: the first message is a moment old
        assert await second.rate(checks()) > 0.0
        other = f"conversation:{key()}"
        assert await second.rate(checks(other)) == 0.0  # the refusals above did not use up the address's 3
        assert await first.rate(checks(f"conversation:{key()}")) > 0.0  # now they are: 3 went through
        for coordination in {id(first): first, id(second): second}.values():
            await coordination.close()

    anyio.run(scenario)


def test_a_short_window_allows_again_once_it_has_passed(make: Factory) -> None:
    async def scenario() -> None:
        coordination = make()
        check = [RateCheck(f"k:{key()}", 1, 3.0)]
        assert await coordination.rate(check) == 0.0
        wait = await coordination.rate(check)
        assert 0.0 < wait <= 3.0
        deadline = time.monotonic() + 30
        while await coordination.rate(check) != 0.0:  # a positive signal, with a generous limit
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await coordination.close()

    anyio.run(scenario)


HOLDER = """
import asyncio, sys
from bot.storage.coordination.redis_coordination import RedisCoordination

async def main():
    coordination = RedisCoordination(sys.argv[1], lease_s=float(sys.argv[3]))
    async with coordination.conversation_lock(sys.argv[2]):
        print("holding", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@NEEDS_REDIS
def test_a_process_killed_while_holding_a_conversation_holds_it_only_for_its_lease(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    conversation = key()
    script = tmp_path / "holder.py"
    script.write_text(HOLDER, encoding="utf-8")
    holder = subprocess.Popen([sys.executable, str(script), redis_server.url, conversation, "2"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    async def scenario() -> float:
        coordination = RedisCoordination(redis_server.url, lease_s=2.0, wait_s=60.0)
        started = time.monotonic()
        async with coordination.conversation_lock(conversation):
            waited = time.monotonic() - started
        await coordination.close()
        return waited

    assert anyio.run(scenario) < 30.0  # it got the conversation: the dead holder's lease ran out


@NEEDS_REDIS
def test_a_holder_that_works_longer_than_its_lease_keeps_it(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        coordination = RedisCoordination(redis_server.url, lease_s=3.0, wait_s=60.0)
        conversation = key()
        client = coordination._client
        async with coordination.conversation_lock(conversation):
            token = await client.get(f"supportbot:lock:{conversation}")
            for _ in range(6):  # three leases long
                await asyncio.sleep(1.5)  # renewed every second: a stalled second still leaves one
                assert await client.get(f"supportbot:lock:{conversation}") == token  # renewed, still ours
        assert await client.get(f"supportbot:lock:{conversation}") is None  # released at the end
        await coordination.close()

    anyio.run(scenario)


@NEEDS_REDIS
def test_two_bot_processes_share_the_rate_limits_of_a_conversation(
    redis_server: RedisServer, write_config: ConfigFactory, embedder: Embedder
) -> None:
    from bot.config import load_config

    config: Config = load_config(write_config(
        coordination={"redis_url": redis_server.url},
        web={"messages_per_minute_per_conversation": 3, "messages_per_minute_per_ip": 100},
    ))  # fmt: skip
    with LiveServer(config, embedder) as first, LiveServer(config, embedder) as second:
        assert first.client().get("/health").json()["coordination"]["kind"] == "redis"
        conversation = None
        codes = []
        for server in (first, second, first, second):
            body = {"text": "Do you ship to Norway?"} | ({"conversation_id": conversation} if conversation else {})
            response = httpx.post(f"{server.url}/api/chat", json=body, timeout=60)
            conversation = conversation or response.json().get("conversation_id")
            codes.append(response.status_code)
    assert codes == [200, 200, 200, 429]  # 3 per minute for the conversation, across both processes


@NEEDS_REDIS
def test_a_bot_that_loses_redis_says_so_and_stores_nothing(write_config: ConfigFactory, embedder: Embedder,
                                                            tmp_path: Path) -> None:  # fmt: skip
    from bot.config import load_config
    from tests.conftest import free_port

    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    config = load_config(write_config(coordination={"redis_url": redis.url}))
    with LiveServer(config, embedder) as server:
        client = server.client()
        assert client.get("/health").status_code == 200
        redis.stop()
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["coordination"]["ok"] is False
        refused = client.post("/api/chat", json={"text": "Do you ship to Norway?"})
        assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
    import sqlite3

    with sqlite3.connect(config.store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0  # nothing acknowledged, nothing kept


def test_what_one_process_publishes_every_follower_gets_in_order(make: Factory) -> None:
    async def scenario() -> list[str]:
        publisher, follower = make(), make()
        topic, got = f"t-{key()}", []
        subscribed = asyncio.Event()

        async def follow() -> None:
            async for message in follower.follow(topic):
                subscribed.set()
                if message != "hello?":
                    got.append(message)
                if len(got) == 3:
                    return

        task = asyncio.create_task(follow())
        deadline = time.monotonic() + 30
        while not subscribed.is_set():  # pub/sub keeps nothing for later: ask until the follower is there
            assert time.monotonic() < deadline and not task.done()
            await publisher.publish(topic, "hello?")
            await asyncio.sleep(0.05)
        for n in ("1", "2", "3"):
            await publisher.publish(topic, n)
        await asyncio.wait_for(task, 30)
        for coordination in {id(publisher): publisher, id(follower): follower}.values():
            await coordination.close()
        return got

    assert anyio.run(scenario) == ["1", "2", "3"]


@NEEDS_REDIS
def test_an_agents_reply_reaches_a_widget_connected_to_another_process(
    redis_server: RedisServer, write_config: ConfigFactory, embedder: Embedder
) -> None:
    import json

    from bot.config import load_config
    from tests.test_handoff import AGENTS, BOB, as_agent

    config = load_config(write_config(coordination={"redis_url": redis_server.url}))
    agents_side, widget_side = LiveServer(config, embedder, environ=AGENTS), LiveServer(config, embedder,
                                                                                        environ=AGENTS)  # fmt: skip
    with agents_side, widget_side, connect(widget_side.ws_url, open_timeout=30) as ws:
        conversation = json.loads(ws.recv(timeout=30))["conversation_id"]
        ws.send(json.dumps({"type": "message", "text": "Talk to a person", "client_message_id": "m1"}))
        while json.loads(ws.recv(timeout=30))["type"] != "reply":
            pass
        with agents_side.client() as client:
            base = f"/api/agent/conversations/{conversation}"
            assert client.post(f"{base}/claim", headers=as_agent(BOB)).status_code == 200
            sent = client.post(f"{base}/messages", headers=as_agent(BOB), json={"text": "Bob here"})
        pushed = json.loads(ws.recv(timeout=30))
    assert pushed["type"] == "reply" and pushed["reply"] == "Bob here" and pushed["author"] == "bob"
    assert sent.json()["delivered"] is True  # the other process pushed it and said so in the store
