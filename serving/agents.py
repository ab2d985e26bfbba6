"""Agents: who they are (tokens from the environment), who is online, and the inbox's live feed.

SUPPORTBOT_AGENT_TOKENS="alice:TOKEN1,bob:TOKEN2" names the agents and their bearer tokens. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TOKENS_ENV = "SUPPORTBOT_AGENT_TOKENS"
MIN_TOKEN_CHARS = 16
FEED_QUEUE = 1000  # events kept for a slow inbox before it is told to reload
FEED_CLOSED = "feed-closed"  # the kind that ends an open inbox's feed (the process is stopping)


class AgentTokenError(ValueError):
    """SUPPORTBOT_AGENT_TOKENS is malformed; the message says which entry (never the token)."""


@dataclass(frozen=True)
class AgentDirectory:
    tokens: Mapping[str, str]  # token -> agent name

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AgentDirectory:
        raw = environ.get(TOKENS_ENV, "").strip()
        tokens: dict[str, str] = {}
        for position, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), start=1):
            name, sep, token = entry.partition(":")
            name, token = name.strip(), token.strip()
            if not sep or not name or not token:
                raise AgentTokenError(f"{TOKENS_ENV}: entry {position} is not name:token")
            if len(token) < MIN_TOKEN_CHARS:
                raise AgentTokenError(f"{TOKENS_ENV}: token of {name!r} is under {MIN_TOKEN_CHARS} characters")
            if token in tokens:
                raise AgentTokenError(f"{TOKENS_ENV}: {name!r} and {tokens[token]!r} have the same token")
            if name in tokens.values():
                raise AgentTokenError(f"{TOKENS_ENV}: {name!r} is listed twice")
            tokens[token] = name
        return cls(tokens)

    def agent_for(self, authorization: str | None) -> str | None:
        """The agent a `Bearer <token>` header names, or None."""
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode()
        found = None
        for known, name in self.tokens.items():  # every token compared: the time says nothing
            if hmac.compare_digest(known.encode(), given):
                found = name
        return found


@dataclass
class AgentPresence:
    """An agent is online for `window_s` after their last call, and while their inbox feed is open, on this
    process or (with shared coordination: serving.inbox_relay) on another one that said so recently."""

    window_s: float
    last_seen: dict[str, float] = field(default_factory=dict)
    open_feeds: dict[str, int] = field(default_factory=dict)
    elsewhere: dict[str, float] = field(default_factory=dict)  # agent -> online until (monotonic), per others

    def seen(self, agent: str) -> None:
        self.last_seen[agent] = time.monotonic()

    def here(self) -> list[str]:
        """The agents online through this process."""
        now = time.monotonic()
        recent = {a for a, at in self.last_seen.items() if now - at <= self.window_s}
        return sorted(recent | {a for a, n in self.open_feeds.items() if n > 0})

    def heard(self, agents: list[str], valid_for_s: float) -> None:
        """Another process says these agents are online through it."""
        until = time.monotonic() + valid_for_s
        for agent in agents:
            self.elsewhere[agent] = max(until, self.elsewhere.get(agent, 0.0))

    def online(self) -> list[str]:
        now = time.monotonic()
        return sorted(set(self.here()) | {a for a, until in self.elsewhere.items() if until >= now})

    def any_online(self) -> bool:
        return bool(self.online())


@dataclass
class InboxFeed:
    """Live events for open inboxes: {"conversation_id", "kind"}; each subscriber has its own queue.

    An event happens here (`here=True`) or was relayed from another process; a subscriber that acts once
    per event across all processes (the ownership webhook, the relay itself) takes only those from here."""

    subscribers: set[asyncio.Queue[dict[str, str]]] = field(default_factory=set)
    from_here: set[asyncio.Queue[dict[str, str]]] = field(default_factory=set)
    closed: bool = False

    def publish(self, conversation_id: str, kind: str, here: bool = True) -> None:
        event = {"conversation_id": conversation_id, "kind": kind}
        for queue in list(self.subscribers) + (list(self.from_here) if here else []):
            if queue.full():  # a stalled inbox: tell it to reload instead of growing without bound
                queue.get_nowait()
                queue.put_nowait({"conversation_id": "", "kind": "reload"})
            else:
                queue.put_nowait(event)

    def subscribe(self, here_only: bool = False) -> asyncio.Queue[dict[str, str]]:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue(maxsize=FEED_QUEUE)
        (self.from_here if here_only else self.subscribers).add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, str]]) -> None:
        self.subscribers.discard(queue)
        self.from_here.discard(queue)

    def close(self) -> None:
        """Ends every open inbox's feed: the process is stopping, and the server waits for open responses
        to finish. Each inbox's EventSource reconnects (to another process, or to this one restarted)."""
        self.closed = True
        for queue in list(self.subscribers):
            while queue.full():
                queue.get_nowait()
            queue.put_nowait({"conversation_id": "", "kind": FEED_CLOSED})
