"""What every long-running channel connector (Telegram, Discord) offers the server that runs it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from bot.storage.turns import Turn


class ChannelError(RuntimeError):
    """A channel cannot run (missing or rejected token, unreachable API). Names the channel."""


class ChannelConnector(Protocol):
    name: str

    @property
    def failure(self) -> str | None:
        """Why it stopped working after it started, if it did."""

    async def start(self) -> None:
        """Connect and begin receiving. Raises ChannelError with a clear reason when it cannot."""

    async def stop(self) -> None:
        """Stop receiving and release connections; idempotent."""


@runtime_checkable
class Deliverer(Protocol):
    async def deliver(self, turn: Turn) -> bool:
        """Send a stored reply a person wrote to the customer, once; True when it was sent."""
