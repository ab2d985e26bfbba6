"""discord.py's side: the client whose on_* methods receive events, and the suggestion button."""

from __future__ import annotations

import re
from typing import Any, Protocol

import aiohttp
import discord
from discord import app_commands

from connectors.buttons import button_data
from connectors.discord_channel.inbound import intents
from connectors.discord_channel.render import SUGGESTION_PREFIX, SUGGESTION_TEMPLATE, button_label


class Events(Protocol):
    """What the client hands events to (the connector)."""

    async def setup(self, client: SupportClient) -> None: ...

    async def handle_message(self, message: discord.Message) -> None: ...

    async def on_ready(self) -> None: ...

    async def handle_suggestion(
        self, interaction: discord.Interaction, turn_id: int, index: int, label: str
    ) -> None: ...


class SupportClient(discord.Client):
    """discord.py calls the client's on_* methods for events; these hand them to the connector."""

    def __init__(
        self, events: Events, connector: aiohttp.BaseConnector | None = None, proxy: str | None = None
    ) -> None:
        # No message cache: edits and deletions are not answered, so cached messages would only cost memory.
        # connector: None for Discord itself; a stand-in's (connectors.discord_channel.stand_in) otherwise.
        # proxy: every request and the gateway go through it (aiohttp's HTTP CONNECT), credentials included.
        super().__init__(intents=intents(), max_messages=None, connector=connector, proxy=proxy)
        self.events = events
        self.tree: app_commands.CommandTree[SupportClient] = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.events.setup(self)

    async def on_message(self, message: discord.Message) -> None:
        await self.events.handle_message(message)

    async def on_ready(self) -> None:
        await self.events.on_ready()


class SuggestionButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=SUGGESTION_TEMPLATE):
    """A suggested question. Its custom_id names the bot turn and the suggestion's place in it, so a click is
    understood after a restart too: discord.py matches the id against the template, not against a view
    kept in memory."""

    def __init__(self, turn_id: int, index: int, label: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=button_label(label),
                style=discord.ButtonStyle.secondary,
                custom_id=button_data(SUGGESTION_PREFIX, turn_id, index),
            )
        )
        self.turn_id = turn_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SuggestionButton:
        label = getattr(item, "label", None) or ""
        return cls(int(match["turn"]), int(match["index"]), label)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        if isinstance(client, SupportClient):
            await client.events.handle_suggestion(interaction, self.turn_id, self.index, self.item.label or "")
