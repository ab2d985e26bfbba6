"""One reply is never more than a few chat messages, whatever its length, on each chat app."""

from __future__ import annotations

from bot.types import AnsweredBy, Citation, Reply
from connectors.discord_channel import MAX_PIECES as DISCORD_PIECES
from connectors.discord_channel import reply_pieces
from connectors.telegram.render import MAX_PIECES, split_html_safe


def test_a_huge_reply_is_at_most_a_few_messages_each_within_telegrams_limit() -> None:
    citation = Citation("x", "faq", "A very long answer", "faq/x.yml", 1)
    for text in ("word " * 200_000, "<&> " * 100_000, "x" * 1_000_000):
        pieces = split_html_safe(Reply(text=text, answered_by=AnsweredBy.KNOWLEDGE, citations=(citation,)))
        assert len(pieces) == MAX_PIECES
        assert all(len(piece) <= 4096 for piece in pieces)
        assert "shortened" in pieces[-1] and "<i>Sources: A very long answer (faq/x.yml:1)</i>" in pieces[-1]


def test_a_huge_reply_is_at_most_a_few_discord_messages_too() -> None:
    pieces = reply_pieces(Reply(text="word " * 200_000, answered_by=AnsweredBy.KNOWLEDGE), quote="a question")
    assert len(pieces) == DISCORD_PIECES and all(len(piece) <= 2000 for piece in pieces)
    assert pieces[-1].endswith("(shortened: the full answer is too long for this chat)")
