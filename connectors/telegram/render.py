"""A reply as Telegram messages: HTML-escaped text, sources in italics, suggestions as buttons."""

from __future__ import annotations

import html

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import MessageLimit

from bot.types import Reply
from connectors.buttons import button_data
from connectors.splitting import split_message

QUICK_REPLY_PREFIX = "qr:"
BUTTON_TEXT_LIMIT = 64  # longer button texts are shown cut anyway
MAX_PIECES = 5  # a reply never becomes more messages than this (the knowledge base limits answers too)
SHORTENED = "… (shortened: the full answer is too long for this chat)"


def render_html(reply: Reply) -> str:
    """The reply as Telegram HTML: every piece of text escaped, sources and handoff in italics."""
    parts = [html.escape(reply.text)]
    if reply.citations:
        sources = "; ".join(f"{c.title} ({c.source}:{c.line})" for c in reply.citations)
        parts.append(f"<i>Sources: {html.escape(sources)}</i>")
    if reply.handoff:
        parts.append("<i>A person from our team will reply here.</i>")
    return "\n\n".join(parts)


def split_html_safe(reply: Reply, limit: int = MessageLimit.MAX_TEXT_LENGTH) -> list[str]:
    """At most MAX_PIECES messages of at most `limit` characters, the sources with the last one.

    The plain text is split (and, past MAX_PIECES, shortened) before it is escaped, so no cut ever lands
    inside an entity or a tag.
    """
    tail = render_html(Reply(text="", answered_by=reply.answered_by, citations=reply.citations, handoff=reply.handoff))
    tail = tail.strip()
    reserve = len(tail) + 2 if tail else 0
    chunk_limit = limit
    while True:
        plain = split_message(f"{reply.author}:\n{reply.text}" if reply.author else reply.text, chunk_limit)
        if len(plain) >= MAX_PIECES:  # the last piece allowed must also hold the sources
            room = chunk_limit - reserve - len(SHORTENED)
            if len(plain) > MAX_PIECES or len(plain[MAX_PIECES - 1]) > chunk_limit - reserve:
                plain = [*plain[: MAX_PIECES - 1], plain[MAX_PIECES - 1][:room].rstrip() + SHORTENED]
        pieces = [html.escape(p) for p in plain]
        tail_fits = not tail or len(pieces) < MAX_PIECES or len(pieces[-1]) + reserve <= limit
        if tail_fits and all(len(p) <= limit for p in pieces):
            break
        chunk_limit = int(chunk_limit * 0.8)  # escaping made a piece grow past the limit
    if tail and pieces and len(pieces[-1]) + reserve <= limit:
        pieces[-1] = f"{pieces[-1]}\n\n{tail}"
    elif tail:
        pieces.append(tail)
    return pieces or [tail]


def quick_reply_keyboard(reply: Reply, bot_turn_id: int) -> InlineKeyboardMarkup | None:
    """Suggestions as buttons; each names the stored reply and its place in it (the codec in buttons.py)."""
    if not reply.quick_replies:
        return None
    buttons = [
        [InlineKeyboardButton(text[:BUTTON_TEXT_LIMIT], callback_data=button_data(QUICK_REPLY_PREFIX, bot_turn_id, i))]
        for i, text in enumerate(reply.quick_replies)
    ]
    return InlineKeyboardMarkup(buttons)
