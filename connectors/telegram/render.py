"""A reply as Telegram messages: HTML-escaped text, side lines in italics, suggestions as buttons."""

from __future__ import annotations

import html

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import MessageLimit

from bot.types import Reply
from connectors.buttons import button_data
from connectors.rendering import ChatFormat, reply_pieces, shortened_label

QUICK_REPLY_PREFIX = "qr:"
BUTTON_TEXT_LIMIT = 64  # longer button texts are shown cut anyway
MAX_PIECES = 5  # a reply never becomes more messages than this (the knowledge base limits answers too)
TELEGRAM = ChatFormat(
    limit=MessageLimit.MAX_TEXT_LENGTH,
    max_pieces=MAX_PIECES,
    escape=html.escape,
    side_line=lambda text: f"<i>{html.escape(text)}</i>",
)


def split_html_safe(reply: Reply) -> list[str]:
    """At most MAX_PIECES messages of Telegram HTML within its limit, the sources with the last one."""
    return reply_pieces(reply, TELEGRAM)


def quick_reply_keyboard(reply: Reply, bot_turn_id: int) -> InlineKeyboardMarkup | None:
    """Suggestions as buttons; each names the stored reply and its place in it (the codec in buttons.py)."""
    if not reply.quick_replies:
        return None
    buttons = [
        [
            InlineKeyboardButton(
                shortened_label(text, BUTTON_TEXT_LIMIT),
                callback_data=button_data(QUICK_REPLY_PREFIX, bot_turn_id, i),
            )
        ]
        for i, text in enumerate(reply.quick_replies)
    ]
    return InlineKeyboardMarkup(buttons)
