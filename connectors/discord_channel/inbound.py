"""Which Discord events are for the bot, and the engine's Message for each."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import discord

from bot.types import Message

CHANNEL = "discord"


def intents() -> discord.Intents:
    """Only what the connector reads, and no privileged intent. Discord sends the text of direct messages
    and of messages that mention the bot without MESSAGE CONTENT, and /ask and button clicks are
    interactions: everything answered here arrives with its text. Requesting the intent would make the
    connector fail (gateway close 4014) wherever an operator has not switched it on, and Discord grants it
    to verified bots only with a reason this bot does not have."""
    return discord.Intents(guilds=True, guild_messages=True, dm_messages=True)


def conversation_id_for(guild_id: int | None, channel_id: int | None, user_id: int) -> str:
    """One conversation per direct-message chat; in a server channel, one per person in that channel."""
    if guild_id is None:
        return f"discord:dm:{user_id}"
    return f"discord:{channel_id}:{user_id}"


class Inbound:
    """Reads events for one bot account: `me` gives the bot's own user once logged in."""

    def __init__(self, me: Callable[[], discord.ClientUser | None], allowed_channels: Iterable[int]) -> None:
        self._me = me
        self._allowed = frozenset(allowed_channels)

    def channel_allowed(self, channel: object) -> bool:
        """Configured channels, and threads started in them."""
        channel_id = getattr(channel, "id", None)
        parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
        return channel_id in self._allowed or (parent_id is not None and parent_id in self._allowed)

    def should_answer(self, message: discord.Message) -> bool:
        """Direct messages, and messages that mention the bot in a configured channel. Never bots (itself
        included), webhooks or system messages (joins, pins)."""
        me = self._me()
        if me is None or message.author.bot or message.author.id == me.id or message.webhook_id is not None:
            return False
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return False
        if message.guild is None and isinstance(message.channel, discord.DMChannel):
            return True
        if not self.channel_allowed(message.channel):
            return False
        return any(user.id == me.id for user in message.mentions)

    def interaction_allowed(self, interaction: discord.Interaction) -> bool:
        return interaction.guild_id is None or self.channel_allowed(interaction.channel)

    def message(self, message: discord.Message) -> Message:
        """The engine's Message for a Discord message: the bot's own mention removed from the text."""
        text = message.content
        me = self._me()
        if me is not None:
            text = re.sub(rf"<@!?{me.id}>\s*", "", text)
        guild_id = message.guild.id if message.guild is not None else _guild_id(message.channel)
        metadata = {
            "discord_message_id": str(message.id),
            "discord_channel_id": str(message.channel.id),
            "discord_user": message.author.name,
        }
        if guild_id is not None:
            metadata["discord_guild_id"] = str(guild_id)
        return Message(
            conversation_id=conversation_id_for(guild_id, message.channel.id, message.author.id),
            channel=CHANNEL,
            user_id=str(message.author.id),
            text=text.strip(),
            metadata=metadata,
            client_message_id=f"discord:{message.id}",
        )

    def interaction_message(self, interaction: discord.Interaction, text: str) -> Message:
        """The engine's Message for /ask or a suggestion click (the interaction id makes it idempotent)."""
        metadata = {
            "discord_interaction_id": str(interaction.id),
            "discord_channel_id": str(interaction.channel_id),
            "discord_user": interaction.user.name,
        }
        if interaction.guild_id is not None:
            metadata["discord_guild_id"] = str(interaction.guild_id)
        return Message(
            conversation_id=conversation_id_for(interaction.guild_id, interaction.channel_id, interaction.user.id),
            channel=CHANNEL,
            user_id=str(interaction.user.id),
            text=text,
            metadata=metadata,
            client_message_id=f"discord:{interaction.id}",
        )


def _guild_id(channel: object) -> int | None:
    guild = getattr(channel, "guild", None)
    if guild is not None:
        return int(guild.id)
    guild_id = getattr(channel, "guild_id", None)
    return int(guild_id) if guild_id is not None else None
