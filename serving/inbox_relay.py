"""The agent inbox across processes (when coordination is shared: `coordination.redis_url`).

Every process relays the inbox events that happened on it (a handoff, a claim, a customer's message
while a person owns the conversation) and the agents online through it, on one pub/sub topic. Each
process hands the others' events to its own open inboxes, and counts the others' agents as online, so
"a person will reply" means the same on every process. An event is posted to the ownership webhook
only by the process where it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from bot.storage.coordination import Coordination
from bot.storage.unavailable import Unavailable
from serving.agents import AgentPresence, InboxFeed

log = logging.getLogger(__name__)

TOPIC = "inbox"
HEARTBEAT_S = 2.0  # how often a process says who is online through it
HEARD_FOR_S = 10.0  # another process's agents count as online this long after it last said so


class InboxRelay:
    def __init__(self, coordination: Coordination, feed: InboxFeed, presence: AgentPresence, instance: str) -> None:
        self._coordination = coordination
        self._feed = feed
        self._presence = presence
        self._instance = instance

    async def run(self) -> None:
        """Relay until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._send_events())
            tasks.create_task(self._send_presence())
            tasks.create_task(self._receive())

    async def _send_events(self) -> None:
        queue = self._feed.subscribe(here_only=True)
        try:
            while True:
                event = await queue.get()
                await self._send({"type": "event", **event})
        finally:
            self._feed.unsubscribe(queue)

    async def _send_presence(self) -> None:
        while True:
            await self._send({"type": "presence", "agents": self._presence.here()})
            await asyncio.sleep(HEARTBEAT_S)

    async def _send(self, note: dict[str, object]) -> None:
        try:
            await self._coordination.publish(TOPIC, json.dumps(note | {"origin": self._instance}))
        except Unavailable as err:  # the others miss it; their inboxes reload when the feed reconnects
            log.warning("agent inbox: not relayed to other processes: %s", err)

    async def _receive(self) -> None:
        while True:
            try:
                async for raw in self._coordination.follow(TOPIC):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self._take(json.loads(raw))
            except Unavailable as err:
                log.warning("agent inbox: following other processes: %s; again in 1 s", err)
                await asyncio.sleep(1.0)

    def _take(self, note: dict[str, object]) -> None:
        if note["origin"] == self._instance:
            return
        if note["type"] == "event":
            self._feed.publish(str(note["conversation_id"]), str(note["kind"]), here=False)
        elif note["type"] == "presence" and isinstance(note["agents"], list):
            self._presence.heard([str(agent) for agent in note["agents"]], HEARD_FOR_S)
