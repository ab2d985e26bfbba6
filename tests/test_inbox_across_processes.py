"""The agent inbox across two bot processes on one Redis and one store: who is online, the live feed, and
the ownership webhook posted by the process where each event happened, once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bot.config import MessagesSettings, load_config
from bot.retrieval.embedding import Embedder
from tests.conftest import ConfigFactory, LiveServer
from tests.redis_server import NEEDS_REDIS, RedisServer
from tests.test_handoff import AGENTS, ALICE, BOB, as_agent
from tests.test_handoff_options import SECRET, Receiver


class FeedReader:
    """An agent's inbox feed (server-sent events) read in a background thread."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[dict[str, str]] = []
        self.connected = threading.Event()
        self._url, self._token = url, token
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with httpx.stream("GET", f"{self._url}/api/agent/events", headers=as_agent(self._token), timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("data: "):
                    self.events.append(json.loads(line.removeprefix("data: ")))

    def wait_for(self, conversation_id: str, kind: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while {"conversation_id": conversation_id, "kind": kind} not in self.events:
            assert time.monotonic() < deadline, f"no {kind} of {conversation_id} in {self.events}"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The ownership webhook's receiver, shared by both processes."""
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture
def two_processes(
    redis_server: RedisServer, write_config: ConfigFactory, embedder: Embedder, receiver: Receiver
) -> Iterator[tuple[LiveServer, LiveServer]]:
    config = load_config(write_config(
        coordination={"redis_url": redis_server.url},
        handoff={"webhook_url": f"http://127.0.0.1:{receiver.port}/events"},
    ))  # fmt: skip
    environ = AGENTS | {"SUPPORTBOT_WEBHOOK_SECRET": SECRET}
    with (
        LiveServer(config, embedder, environ=environ) as first,
        LiveServer(config, embedder, environ=environ) as second,
    ):
        yield first, second


def _online(server: LiveServer, token: str) -> list[str]:
    response = httpx.get(f"{server.url}/api/agent/me", headers=as_agent(token), timeout=30)
    return list(response.json()["online"])


def _ask_for_a_person(server: LiveServer) -> dict[str, str]:
    response = httpx.post(f"{server.url}/api/chat", json={"text": "Can I talk to a person?"}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


@NEEDS_REDIS
def test_an_agent_online_on_one_process_is_online_on_the_other_and_sees_its_events(
    two_processes: tuple[LiveServer, LiveServer], receiver: Receiver
) -> None:
    first, second = two_processes
    alice = FeedReader(first.url, ALICE)  # alice's inbox is open on the first process only
    assert alice.connected.wait(60)
    deadline = time.monotonic() + 60
    while "alice" not in _online(second, BOB):
        assert time.monotonic() < deadline, "the second process never heard that alice is online"
        time.sleep(0.1)

    asked = _ask_for_a_person(second)  # the customer's widget is on the second process
    assert asked["reply"] == MessagesSettings().handoff  # "a person will reply", not "nobody is online"
    alice.wait_for(asked["conversation_id"], "handoff")  # in alice's inbox, on the other process

    later = _ask_for_a_person(first)  # made on the first process after the relayed event reached it
    ids = {asked["conversation_id"], later["conversation_id"]}
    deadline = time.monotonic() + 60
    while not (len(receiver.calls) >= 3 and any(later["conversation_id"].encode() in b for _, b in receiver.calls)):
        assert time.monotonic() < deadline, f"{len(receiver.calls)} webhook calls"
        time.sleep(0.05)  # (the receiver refuses its first call: that event comes again, the same body)
    # Each process posts in order: had the first also posted the relayed handoff, it would have been posted
    # before the first's own, later one, with its own body. Each event is posted by one process, once.
    posted = {body for _, body in receiver.calls}
    assert sorted(json.loads(body)["conversation_id"] for body in posted) == sorted(ids)
    alice.wait_for(later["conversation_id"], "handoff")
    assert receiver.accepted(2)
