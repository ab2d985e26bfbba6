"""Discord: discord.py receives gateway events; the engine answers direct messages, mentions and /ask.

Named discord_channel so that it never shadows the `discord` package it imports. The parts: `render`
(a reply as Discord messages and buttons), `inbound` (which events are for the bot, and as what Message),
`gateway` (logging in and staying connected), `client` (discord.py's event hooks) and `connector`
(answering, resuming after a restart, delivering agents' replies).
"""

from connectors.discord_channel.connector import TOKEN_ENV, DiscordConnector, discord_connector
from connectors.discord_channel.inbound import CHANNEL
from connectors.discord_channel.render import MAX_PIECES, MESSAGE_LIMIT, SUGGESTION_TEMPLATE, reply_pieces

__all__ = [
    "CHANNEL",
    "MAX_PIECES",
    "MESSAGE_LIMIT",
    "SUGGESTION_TEMPLATE",
    "TOKEN_ENV",
    "DiscordConnector",
    "discord_connector",
    "reply_pieces",
]
