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
    """An agent is online for `window_s` after their last call, and while their inbox feed is open."""

    window_s: float
    last_seen: dict[str, float] = field(default_factory=dict)
    open_feeds: dict[str, int] = field(default_factory=dict)

    def seen(self, agent: str) -> None:
        self.last_seen[agent] = time.monotonic()

    def online(self) -> list[str]:
        now = time.monotonic()
        recent = {a for a, at in self.last_seen.items() if now - at <= self.window_s}
        return sorted(recent | {a for a, n in self.open_feeds.items() if n > 0})

    def any_online(self) -> bool:
        return bool(self.online())


@dataclass
class InboxFeed:
    """Live events for open inboxes: {"conversation_id", "kind"}; each subscriber has its own queue."""

    subscribers: set[asyncio.Queue[dict[str, str]]] = field(default_factory=set)

    def publish(self, conversation_id: str, kind: str) -> None:
        event = {"conversation_id": conversation_id, "kind": kind}
        for queue in list(self.subscribers):
            if queue.full():  # a stalled inbox: tell it to reload instead of growing without bound
                queue.get_nowait()
                event = {"conversation_id": "", "kind": "reload"}
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, str]]:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue(maxsize=FEED_QUEUE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, str]]) -> None:
        self.subscribers.discard(queue)
