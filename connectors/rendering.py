"""A reply as chat messages, the same on every chat app: what is shown, in which order, and how it is cut.

Each app brings its markup (a `ChatFormat`): how its text is escaped, how a side line (the sources, the
handoff note) is set off, how an agent's name is shown, and its message size. What a reply shows, its
wording, the splitting at natural boundaries and the bound on how many messages one reply may become are
here, once, for Telegram and Discord alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.types import Reply
from connectors.splitting import split_message

SHORTENED = "… (shortened: the full answer is too long for this chat)"
HANDED_OVER = "A person from our team will reply here."
ELLIPSIS = "…"


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class ChatFormat:
    """One chat app's markup and limits."""

    limit: int  # characters per message
    max_pieces: int  # messages one reply may become, at most
    escape: Callable[[str], str] = _same  # the app's escaping of the reply's own text
    side_line: Callable[[str], str] = _same  # plain text -> a set-off line in the app's markup, escaped
    author: Callable[[str], str] = lambda name: f"{name}:\n"  # the agent's name before their reply, unescaped


def sources(reply: Reply) -> str | None:
    """The citations as one plain line: 'Sources: title (file:line); ...'."""
    if not reply.citations:
        return None
    return "Sources: " + "; ".join(f"{c.title} ({c.source}:{c.line})" for c in reply.citations)


def side_lines(reply: Reply) -> list[str]:
    """What follows the answer, plain: its sources, then the handoff note."""
    lines = [line for line in (sources(reply),) if line]
    if reply.handoff:
        lines.append(HANDED_OVER)
    return lines


def shortened_label(text: str, limit: int) -> str:
    """A button's label within the app's limit, cut with an ellipsis (the full text stays in the store)."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def reply_pieces(reply: Reply, chat: ChatFormat, lead: str = "") -> list[str]:
    """The reply as at most `chat.max_pieces` messages of at most `chat.limit` characters, in the app's
    markup: `lead` (already in markup: a quoted question), the author and text, then the side lines with
    the last piece. The plain text is split (and, past the bound, shortened) before it is escaped, so no cut
    ever lands inside an entity or a tag; the side lines are never cut off by shortening."""
    tail = "\n\n".join(chat.side_line(line) for line in side_lines(reply))
    text = f"{chat.author(reply.author)}{reply.text}" if reply.author else reply.text
    reserve = len(tail) + 2 if tail else 0
    chunk_limit = chat.limit
    while True:
        plain = split_message(text, chunk_limit)
        if len(plain) >= chat.max_pieces:  # the last piece allowed must also hold the side lines
            room = chunk_limit - reserve - len(SHORTENED)
            if len(plain) > chat.max_pieces or len(plain[chat.max_pieces - 1]) > chunk_limit - reserve:
                plain = [*plain[: chat.max_pieces - 1], plain[chat.max_pieces - 1][:room].rstrip() + SHORTENED]
        pieces = [chat.escape(piece) for piece in plain]
        lead_placed = not lead
        if lead and pieces and len(lead) + 2 + len(pieces[0]) <= chat.limit:
            pieces[0], lead_placed = f"{lead}\n\n{pieces[0]}", True
        elif lead and len(pieces) < chat.max_pieces:
            pieces.insert(0, lead[: chat.limit])
            lead_placed = True
        tail_fits = not tail or len(pieces) < chat.max_pieces or len(pieces[-1]) + reserve <= chat.limit
        if lead_placed and tail_fits and all(len(p) <= chat.limit for p in pieces):
            break
        if chunk_limit <= len(SHORTENED) + reserve + len(lead):
            break  # side lines near the size of a message (never from the knowledge base's limits)
        chunk_limit = int(chunk_limit * 0.8)  # escaping (or the lead) made a piece grow past the limit
    if tail and pieces and len(pieces[-1]) + reserve <= chat.limit:
        pieces[-1] = f"{pieces[-1]}\n\n{tail}"
    elif tail:
        pieces.append(tail)
    return pieces or [chat.escape(ELLIPSIS)]
