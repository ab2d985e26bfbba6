"""A reply as Discord messages: Markdown with the sources in italics, suggestions as buttons, no pings."""

from __future__ import annotations

import discord

from bot.types import Reply
from connectors import rendering
from connectors.buttons import button_template
from connectors.rendering import ChatFormat, shortened_label

MESSAGE_LIMIT = 2000  # characters per Discord message
MAX_PIECES = 8  # a reply is never more messages than this (the knowledge base limits answers to six)
BUTTON_LABEL_LIMIT = 80  # characters per button label
MAX_BUTTONS = 25  # five rows of five
QUOTE_LIMIT = 300  # how much of a /ask question or clicked suggestion is echoed above the answer
SUGGESTION_PREFIX = "supportbot:suggest:"
SUGGESTION_TEMPLATE = button_template(SUGGESTION_PREFIX)
# Replies quote knowledge and sometimes the customer's own words: they must never ping anyone.
NO_MENTIONS = discord.AllowedMentions.none()
# The reply's own text is sent as written (knowledge may use Markdown); names and sources are escaped.
DISCORD = ChatFormat(
    limit=MESSAGE_LIMIT,
    max_pieces=MAX_PIECES,
    side_line=lambda text: f"*{discord.utils.escape_markdown(text)}*",
    author=lambda name: f"**{discord.utils.escape_markdown(name)}**: ",
)


def quoted(question: str) -> str:
    """The question being answered (for /ask and buttons), as a Markdown quote."""
    shown = shortened_label(question, QUOTE_LIMIT)
    return "\n".join("> " + discord.utils.escape_markdown(line) for line in shown.splitlines())


def reply_pieces(reply: Reply, quote: str | None = None) -> list[str]:
    """The reply as at most MAX_PIECES Discord messages of at most 2000 characters each."""
    return rendering.reply_pieces(reply, DISCORD, lead=quoted(quote) if quote else "")


def button_label(text: str) -> str:
    return shortened_label(text, BUTTON_LABEL_LIMIT)
