"""Starts the chat-app channels enabled in config next to the web server, and stops them.

A channel that cannot start (missing or rejected token, unreachable API) is reported in one clear line
naming it, and the other channels keep running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bot.config import Config
from bot.pipeline import Pipeline
from connectors.base import ChannelConnector, ChannelError, Deliverer
from connectors.telegram import TelegramConnector, telegram_connector

log = logging.getLogger(__name__)


@dataclass
class RunningChannels:
    connectors: list[ChannelConnector] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # channel -> why it is not running

    def status(self) -> dict[str, object]:
        """For /health: the channels answering now, and why each of the others is not."""
        broken = {c.name: c.failure for c in self.connectors if c.failure is not None}
        return {"running": [c.name for c in self.connectors if c.failure is None], "failed": self.failures | broken}

    @property
    def telegram(self) -> TelegramConnector | None:
        return next((c for c in self.connectors if isinstance(c, TelegramConnector)), None)

    def deliverer(self, channel: str) -> Deliverer | None:
        """The running connector that delivers people's replies on `channel`."""
        connector = next((c for c in self.connectors if c.name == channel and c.failure is None), None)
        return connector if isinstance(connector, Deliverer) else None

    async def stop(self) -> None:
        for connector in reversed(self.connectors):
            try:
                await connector.stop()
            except Exception:
                log.exception("%s: error while stopping", connector.name)
        self.connectors.clear()


def _factories(
    config: Config, pipeline: Callable[[], Pipeline], environ: Mapping[str, str]
) -> list[tuple[str, Callable[[], ChannelConnector]]]:
    factories: list[tuple[str, Callable[[], ChannelConnector]]] = []
    if config.channels.telegram.enabled:
        factories.append(("telegram", lambda: telegram_connector(pipeline, config.channels.telegram, environ)))
    if config.channels.discord.enabled:
        from connectors.discord_channel import discord_connector

        factories.append(("discord", lambda: discord_connector(pipeline, config.channels.discord, environ)))
    return factories


async def start_channels(
    config: Config, pipeline: Callable[[], Pipeline], environ: Mapping[str, str]
) -> RunningChannels:
    running = RunningChannels()
    for name, factory in _factories(config, pipeline, environ):
        try:
            connector = factory()
            await connector.start()
        except ChannelError as err:
            log.error("%s (this channel is off; the others keep running)", err)
            running.failures[name] = str(err)
            continue
        except Exception as err:
            log.exception("%s: failed to start (this channel is off; the others keep running)", name)
            running.failures[name] = f"{name}: {err}"
            continue
        running.connectors.append(connector)
    return running
