"""Three `bot serve` processes on one PostgreSQL, Redis and Chroma server, behind nginx (deploy/nginx.conf):
messages spread over all three are stored once and answered once in order, also when one process is
killed (-9) in the middle; a knowledge edit is live on all three; an agent's reply written on one process
reaches a widget connected to another; the widget's WebSocket goes through nginx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bot.storage.store import ConversationStore
from tests.botprocess import BotProcess, wait_until
from tests.chroma_server import NEEDS_CHROMA, ChromaServer
from tests.conftest import ConfigFactory, free_port
from tests.nginx_server import NEEDS_NGINX, NginxServer
from tests.postgres_server import NEEDS_POSTGRES, PostgresServer
from tests.redis_server import NEEDS_REDIS, RedisServer
from tests.test_handoff import AGENTS, BOB, as_agent
from tests.test_live_reload import NEW_FAQ

pytestmark = [NEEDS_POSTGRES, NEEDS_REDIS, NEEDS_CHROMA, NEEDS_NGINX]
CONVERSATIONS = 50
QUESTIONS = ("How much does shipping cost?", "How do I return an item?", "Can I change my delivery address?")
DOGS = "are dogs allowed in the shop?"


class Cluster:
    def __init__(self, bots: list[BotProcess], nginx: NginxServer) -> None:
        self.bots = bots
        self.nginx = nginx

    def health(self, bot: BotProcess) -> dict[str, Any]:
        return bot.health() or {}

    def leader(self, role: str) -> BotProcess:
        holding = [bot for bot in self.bots if role in self.health(bot).get("roles", [])]
        assert len(holding) == 1, [self.health(bot).get("roles") for bot in self.bots]
        return holding[0]


@pytest.fixture
def cluster(
    write_config: ConfigFactory, tmp_path: Path, postgres_server: PostgresServer, postgres_url: str,
    redis_server: RedisServer, chroma_server: ChromaServer,
) -> Iterator[Cluster]:  # fmt: skip
    base = yaml.safe_load(write_config(
        store={"url": postgres_url, "pool_size": 4},
        coordination={"redis_url": redis_server.url, "role_lease_s": 2.0, "lock_lease_s": 5.0},
        index={"server_url": chroma_server.url, "collection": f"nginx-{free_port()}"},
        web={"messages_per_minute_per_conversation": 1000, "messages_per_minute_per_ip": 100_000},
        knowledge={"watch": True},
    ).read_text())  # fmt: skip
    environ = AGENTS | {"SUPPORTBOT_DATABASE_PASSWORD": postgres_server.password}
    bots = []
    for n in range(3):
        port = free_port()
        path = tmp_path / f"config-{n}.yml"
        path.write_text(yaml.safe_dump(base | {"server": {"port": port}}), encoding="utf-8")
        bots.append(BotProcess(path, port, tmp_path / f"bot-{n}.log", environ))
    nginx_folder = tmp_path / "nginx"
    nginx_folder.mkdir()
    nginx = NginxServer(free_port(), [bot.url.removeprefix("http://") for bot in bots], nginx_folder)
    starting = [threading.Thread(target=bot.start) for bot in bots]  # all three load their models at once
    try:
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        nginx.start()
        yield Cluster(bots, nginx)
    finally:
        nginx.stop()
        for bot in bots:
            bot.__exit__()


class Widget:
    """The chat widget's side of /api/ws: reconnects (to its conversation) when the connection drops."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/api/ws"
        self.reconnects = 0
        self._ws = connect(self.url, open_timeout=30)
        self.conversation_id = json.loads(self._ws.recv(timeout=30))["conversation_id"]
        self.ask("hello", "w-0")  # stored: from now on the conversation exists and can be reconnected to

    def close(self) -> None:
        self._ws.close()

    def ask(self, text: str, client_message_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ws.send(json.dumps({"type": "message", "text": text, "client_message_id": client_message_id}))
                while True:
                    frame = json.loads(self._ws.recv(timeout=60))
                    if frame["type"] == "reply" and frame.get("client_message_id") == client_message_id:
                        return str(frame["reply"])
            except (ConnectionClosed, OSError, TimeoutError):
                assert time.monotonic() < deadline, f"{self.conversation_id}: no reply to {client_message_id}"
                self.reconnects += 1
                self._ws = connect(f"{self.url}?conversation_id={self.conversation_id}", open_timeout=30)
                ready = json.loads(self._ws.recv(timeout=30))
                assert ready["conversation_id"] == self.conversation_id, ready


def post_until_acknowledged(url: str, body: dict[str, str], timeout: float = 180.0) -> dict[str, Any]:
    """As a client does: send again (the same client_message_id) until the bot answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.post(f"{url}/api/chat", json=body, timeout=60, trust_env=False)
            if response.status_code == 200:
                return dict(response.json())
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as err:
            problem = repr(err)
        assert time.monotonic() < deadline, f"{body} not acknowledged: {problem}"
        time.sleep(0.2)


def served_generations(cluster: Cluster) -> set[object]:
    return {cluster.health(bot).get("knowledge", {}).get("generation") for bot in cluster.bots}


def test_three_processes_behind_nginx(cluster: Cluster, knowledge_dir: Path, postgres_server: PostgresServer,
                                      postgres_url: str) -> None:  # fmt: skip
    nginx = cluster.nginx
    wait_until(lambda: len(served_generations(cluster)) == 1 and None not in served_generations(cluster),
               "all three on one generation of the shared index")  # fmt: skip
    knowledge_leader = cluster.leader("knowledge-sync")

    # Three widgets on WebSockets through nginx: one on each process (round robin).
    widgets = [Widget(nginx.port) for _ in range(3)]

    # 50 conversations, each opened first, then three messages each, from 10 clients at once.
    conversations = [post_until_acknowledged(nginx.url, {"text": "hello", "client_message_id": f"c{n}-0"})
                     ["conversation_id"] for n in range(CONVERSATIONS)]  # fmt: skip
    acknowledged: list[str] = []

    def converse(n: int) -> None:
        for k, question in enumerate(QUESTIONS, start=1):
            body = {"conversation_id": conversations[n], "text": question, "client_message_id": f"c{n}-{k}"}
            post_until_acknowledged(nginx.url, body)
            acknowledged.append(body["client_message_id"])

    with ThreadPoolExecutor(10) as clients:
        running = [clients.submit(converse, n) for n in range(CONVERSATIONS)]
        wait_until(lambda: len(acknowledged) >= CONVERSATIONS, "a third of the messages answered")
        knowledge_leader.kill()  # in the middle: nginx sends what it had (and what follows) to the others
        for future in running:
            future.result()
    assert len(acknowledged) == CONVERSATIONS * len(QUESTIONS)
    # The widget whose process died reconnects through nginx to its conversation; each is answered.
    for widget in widgets:
        assert "shipping" in widget.ask("How much does shipping cost?", "w-1").lower()
    assert sum(widget.reconnects for widget in widgets) >= 1, "no widget was on the killed process"
    for widget in widgets:
        widget.close()
    assert {bot.url.removeprefix("http://") for bot in cluster.bots} <= nginx.upstreams_used()

    async def stored() -> dict[str, list[tuple[str, str, int, int | None]]]:
        store = await ConversationStore.open(postgres_url, postgres_server.password)
        try:
            return {c: [(t.role, t.text, t.id, t.reply_to) for t in await store.turns(c)] for c in conversations}
        finally:
            await store.close()

    for conversation, turns in anyio.run(stored).items():
        users = [(text, turn_id) for role, text, turn_id, _ in turns if role == "user"]
        assert [text for text, _ in users] == ["hello", *QUESTIONS], (conversation, turns)  # once each, in order
        replies = [reply_to or 0 for role, _, _, reply_to in turns if role == "bot"]
        assert sorted(replies) == sorted(turn_id for _, turn_id in users), (conversation, turns)  # answered once

    # Another process took the knowledge over; the killed one, started again, follows it.
    others = [bot for bot in cluster.bots if bot is not knowledge_leader]
    wait_until(lambda: any("knowledge-sync" in cluster.health(bot).get("roles", []) for bot in others),
               "another process elected to sync the knowledge")  # fmt: skip
    knowledge_leader.start()
    (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
    for bot in cluster.bots:

        def served(bot: BotProcess = bot) -> bool:
            return "Well-behaved dogs" in str(post_until_acknowledged(bot.url, {"text": DOGS})["reply"])

        wait_until(served, f"the edit served by {bot.url}")

    # An agent's reply written on one process reaches the widget connected to another.
    widget_side, agents_side = cluster.bots[0], cluster.bots[1]
    with connect(f"ws://{widget_side.url.removeprefix('http://')}/api/ws", open_timeout=30) as ws:
        conversation = json.loads(ws.recv(timeout=30))["conversation_id"]
        ws.send(json.dumps({"type": "message", "text": "Talk to a person", "client_message_id": "m1"}))
        while json.loads(ws.recv(timeout=60))["type"] != "reply":
            pass
        with agents_side.client() as client:
            base = f"/api/agent/conversations/{conversation}"
            assert client.post(f"{base}/claim", headers=as_agent(BOB)).status_code == 200
            assert client.post(f"{base}/messages", headers=as_agent(BOB), json={"text": "Bob here"}).status_code == 200
        pushed = json.loads(ws.recv(timeout=60))
    assert pushed["type"] == "reply" and pushed["reply"] == "Bob here"
