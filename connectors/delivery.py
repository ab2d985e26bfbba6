"""A reply a person wrote, sent once to wherever the customer last wrote from: the same on every chat app."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from bot.pipeline import Pipeline
from bot.storage.turns import Turn

log = logging.getLogger(__name__)

Place = TypeVar("Place")


async def deliver_once(
    pipeline: Pipeline,
    turn: Turn,
    channel: str,
    where: Callable[[Mapping[str, str]], Place | None],
    send: Callable[[Place], Awaitable[bool]],
) -> bool:
    """`where` reads the place to send to from the metadata the channel stored with the customer's latest
    message; `send` sends there. Claimed before and confirmed after (pipeline.send_once), so a reply is sent
    once however many times delivery is tried; False when it is kept for another try (or was sent)."""
    origin = await pipeline.origin(turn.conversation_id)
    place = where(origin) if origin is not None else None
    if place is None:
        log.warning("%s: no place known for conversation %s; the agent's reply is kept", channel,
                    turn.conversation_id)  # fmt: skip
        return False
    return await pipeline.send_once(turn.id, lambda: send(place))
