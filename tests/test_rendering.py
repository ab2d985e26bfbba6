"""The shared channel code: one reply reads the same on Telegram and Discord, in each app's markup."""

from __future__ import annotations

import re

from bot.types import AnsweredBy, Citation, Reply
from connectors.buttons import button_data, button_template, read_button
from connectors.discord_channel.render import DISCORD, SUGGESTION_PREFIX, SUGGESTION_TEMPLATE
from connectors.discord_channel.render import reply_pieces as discord_pieces
from connectors.rendering import HANDED_OVER, SHORTENED, reply_pieces, shortened_label
from connectors.telegram.render import TELEGRAM, split_html_safe

CITATION = Citation("returns", "faq", "How do I return an item?", "faq/returns.yml", 4)


def _words(markup: str) -> list[str]:
    plain = re.sub(r"</?i>|\*", "", markup).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return plain.split()


def test_the_same_reply_shows_the_same_parts_in_the_same_order_on_both_apps() -> None:
    reply = Reply(text="Send it back <within> 30 days & keep the receipt.", answered_by=AnsweredBy.HUMAN,
                  citations=(CITATION,), handoff=True, author="Dana")  # fmt: skip
    (telegram,) = split_html_safe(reply)
    (discord,) = discord_pieces(reply)
    assert telegram.startswith("Dana:\nSend it back &lt;within&gt; 30 days &amp; keep")  # escaped for HTML
    assert discord.startswith("**Dana**: Send it back <within> 30 days & keep")  # Markdown: sent as written
    assert "<i>Sources: How do I return an item? (faq/returns.yml:4)</i>" in telegram
    assert f"<i>{HANDED_OVER}</i>" in telegram and discord.endswith(f"*{HANDED_OVER}*")
    assert _words(telegram)[1:] == _words(discord)[1:]  # past the name's own markup, word for word


def test_a_huge_reply_keeps_its_lead_and_sources_within_the_bound_on_each_app() -> None:
    reply = Reply(text="<&> word " * 50_000, answered_by=AnsweredBy.KNOWLEDGE, citations=(CITATION,))
    for chat in (TELEGRAM, DISCORD):
        pieces = reply_pieces(reply, chat, lead="> which one?")
        assert len(pieces) == chat.max_pieces and all(len(piece) <= chat.limit for piece in pieces)
        assert pieces[0].startswith("> which one?\n\n")
        assert SHORTENED in pieces[-1] and "Sources: How do I return an item?" in pieces[-1]


def test_a_lead_too_long_to_share_the_first_message_gets_its_own() -> None:
    reply = Reply(text="x " * 990, answered_by=AnsweredBy.KNOWLEDGE)  # one message of 1979 characters
    pieces = discord_pieces(reply, quote="q" * 250)
    assert pieces[0].startswith("> qqq") and pieces[1].startswith("x x") and len(pieces) == 2


def test_labels_are_cut_with_an_ellipsis_and_buttons_share_one_codec() -> None:
    assert shortened_label("a" * 100, 64) == "a" * 63 + "…" and shortened_label("short", 64) == "short"
    data = button_data(SUGGESTION_PREFIX, 42, 3)
    assert button_template(SUGGESTION_PREFIX) == SUGGESTION_TEMPLATE
    found = re.fullmatch(SUGGESTION_TEMPLATE, data)
    assert found is not None and (found["turn"], found["index"]) == ("42", "3")
    assert read_button(data, SUGGESTION_PREFIX) == (42, 3) and read_button("qr:42:3", SUGGESTION_PREFIX) is None
