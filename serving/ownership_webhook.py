"""handoff.webhook_url: every ownership event POSTed as JSON, signed, so a helpdesk bridge needs no polling.

The body is signed with HMAC-SHA256 under SUPPORTBOT_WEBHOOK_SECRET (from the environment):
`X-Supportbot-Signature: sha256=<hex of HMAC(secret, body)>`. A receiver recomputes it over the raw body
and compares in constant time. Delivery is retried with backoff; an event still refused after the last try
is logged (the store keeps every event: GET /api/agent/conversations/{id} lists them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from serving.agents import InboxFeed

log = logging.getLogger(__name__)

SECRET_ENV = "SUPPORTBOT_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Supportbot-Signature"
OWNERSHIP_KINDS = {"handoff", "claim", "pull", "release"}
ATTEMPTS = 5


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class OwnershipWebhook:
    def __init__(
        self, url: str, secret: str, feed: InboxFeed, describe: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> None:
        self._url = url
        self._secret = secret
        self._feed = feed
        self._describe = describe  # conversation id -> its channel, state, owner and trigger now

    async def run(self) -> None:
        queue = self._feed.subscribe(here_only=True)  # several processes: each posts the events it made
        try:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                while True:
                    event = await queue.get()
                    if event["kind"] not in OWNERSHIP_KINDS:
                        continue
                    payload = {"event": event["kind"], "conversation_id": event["conversation_id"], "at": time.time()}
                    payload |= await self._describe(event["conversation_id"])
                    await self._post(client, json.dumps(payload).encode())
        finally:
            self._feed.unsubscribe(queue)

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> None:
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature(self._secret, body)}
        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await client.post(self._url, content=body, headers=headers)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as err:
                problem = str(err) or type(err).__name__
            if attempt == ATTEMPTS:
                log.error("handoff webhook: giving up on an event after %d tries (%s)", attempt, problem)
                return
            log.warning("handoff webhook: %s; retrying in %.1fs", problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
