"""Discord over real HTTP and a real WebSocket, against a loopback stand-in for Discord.

One event loop in a background thread runs, for the whole module: a fake Discord (REST routes the
connector uses, plus a gateway WebSocket that does HELLO / IDENTIFY / READY and pushes the events a test
gives it), the real bot (demo knowledge base, real embeddings, SQLite store) and the real connector on
the unmodified discord.py client. Tests push synthetic gateway events, so discord.py's own gateway code
and state parser turn them into objects, and assert on the REST calls the bot makes and on the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.conversation.desk import AgentDesk
from bot.retrieval.embedding import Embedder
from bot.types import AnsweredBy, Reply
from connectors.discord_channel import MESSAGE_LIMIT, SUGGESTION_TEMPLATE
from tests.action_server import ActionServer
from tests.discord_api import (
    ALLOWED_CHANNEL,
    APP_ID,
    BOT_ID,
    BOT_USER,
    DIRECT_MESSAGES,
    GUILD_ID,
    GUILD_MESSAGES,
    GUILDS,
    LONG_QUESTION,
    OTHER_CHANNEL,
    TOKEN,
    TRACK_ORDER_ANSWER,
    TRACK_ORDER_SOURCE,
    assert_discord_py_untouched,
    user_payload,
)
from tests.discord_harness import Harness
from tests.polling import wait_for_count


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_index_template: Path
) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("discord")
    with (
        ActionServer("actions", root / "actions-work") as actions,
        Harness(root, embedder, demo_index_template, actions.url) as running,
    ):
        yield running


def test_start_logs_in_connects_the_gateway_and_publishes_ask(harness: Harness) -> None:
    me = harness.fake.recorded(lambda c: c.path == "/api/v10/users/@me")
    assert me and me[0].authorization == f"Bot {TOKEN}"
    # Over HTTPS to discord.com, as with Discord itself: only the address it resolves to is the stand-in's.
    assert {c.host for c in harness.fake.recorded()} == {"discord.com"}
    assert_discord_py_untouched()
    identify = harness.fake.identifies[0]
    # Guild and direct messages, and no privileged intent: nothing the bot answers needs MESSAGE CONTENT.
    assert identify["token"] == TOKEN and identify["intents"] == GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES
    (sync,) = harness.fake.recorded(
        lambda c: c.method == "PUT" and c.path == f"/api/v10/applications/{APP_ID}/commands"
    )
    (ask,) = sync.body
    assert ask["name"] == "ask" and ask["type"] == 1
    assert [(o["name"], o["type"], o["required"]) for o in ask["options"]] == [("question", 3, True)]
    assert harness.connector.client.user is not None and harness.connector.client.user.id == BOT_ID
    # start() returned once the gateway accepted the session, not after READY_TIMEOUT_SECONDS.
    said = [r.getMessage() for r in harness.start_log]
    assert any(m.startswith(f"discord: connected as northwind-support (id {BOT_ID})") for m in said), said
    assert not any("logged in, still connecting to the gateway" in m for m in said), said
    # The gateway keeps running in the background: the server's GUILD_CREATE arrives and the client gets ready.
    client = harness.connector.client
    harness.call(asyncio.wait_for(client.wait_until_ready(), 30), timeout=35)
    assert [g.id for g in client.guilds] == [GUILD_ID]


def test_a_direct_message_gets_a_cited_answer_with_typing_first(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    event = harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))

    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    content = post.body["content"]
    assert TRACK_ORDER_ANSWER in content and TRACK_ORDER_SOURCE in content
    assert post.body["allowed_mentions"]["parse"] == []  # answers never ping anyone
    assert "message_reference" not in post.body  # a DM needs no reply arrow
    calls = harness.fake.recorded()
    typing = [i for i, c in enumerate(calls) if harness.typing_in(channel)(c)]
    assert typing and typing[0] < calls.index(post)
    turns = harness.turns(f"discord:dm:{user}")
    assert turns[0] == ("user", "How can I track my order?", f"discord:{event['id']}")
    assert [t[0] for t in turns] == ["user", "bot"] and TRACK_ORDER_ANSWER in turns[1][1]


def test_a_redelivered_message_is_answered_once(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    event = harness.dm(user, "do you ship to canada?")
    harness.send("MESSAGE_CREATE", event)
    harness.send("MESSAGE_CREATE", event)  # the gateway may deliver an event again after a resume
    # Messages in one conversation are answered in order, so once the next one is answered the duplicate
    # has been handled.
    harness.send("MESSAGE_CREATE", harness.dm(user, "thanks!"))
    posts = harness.fake.wait_for(harness.posts_to(channel), count=2)
    assert len(harness.fake.recorded(harness.posts_to(channel))) == 2
    assert "Canada" in posts[0].body["content"]
    assert len(harness.fake.recorded(harness.typing_in(channel))) == 2  # no typing for the duplicate either
    turns = harness.turns(f"discord:dm:{user}")
    assert [t[2] for t in turns if t[0] == "user"].count(f"discord:{event['id']}") == 1
    assert [t[0] for t in turns] == ["user", "bot", "user", "bot"]


def test_a_mention_in_an_allowed_channel_is_answered_as_a_reply(harness: Harness) -> None:
    user = harness.new_user()
    event = harness.send(
        "MESSAGE_CREATE", harness.guild_message(user, "How can I track my order?", ALLOWED_CHANNEL, mention=True)
    )
    post = harness.fake.wait_for(
        lambda c: (
            harness.posts_to(ALLOWED_CHANNEL)(c)
            and str((c.body.get("message_reference") or {}).get("message_id")) == event["id"]
        )
    )[0]
    assert TRACK_ORDER_ANSWER in post.body["content"] and TRACK_ORDER_SOURCE in post.body["content"]
    assert post.body["allowed_mentions"]["parse"] == [] and not post.body["allowed_mentions"].get("replied_user")
    # One conversation per person in a channel; the bot's mention is not part of the question.
    assert harness.turns(f"discord:{ALLOWED_CHANNEL}:{user}")[0][:2] == ("user", "How can I track my order?")


def test_what_the_bot_must_not_answer_is_ignored(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.discord_channel")
    user, other_bot = harness.new_user(), harness.new_user()
    ignored = {
        "no mention": harness.guild_message(user, "How can I track my order?", ALLOWED_CHANNEL, mention=False),
        "other channel": harness.guild_message(user, "How can I track my order?", OTHER_CHANNEL, mention=True),
        "another bot": harness.dm(other_bot, "How can I track my order?", author=user_payload(other_bot, "x", True)),
        "itself": {**harness.dm(user, "How can I track my order?"), "author": BOT_USER},
        "another bot mentioning it": harness.guild_message(
            other_bot,
            "How can I track my order?",
            ALLOWED_CHANNEL,
            mention=True,
            author=user_payload(other_bot, "x", True),
        ),
    }
    for why, payload in ignored.items():
        assert not harness.connector.inbound.should_answer(harness.parsed(payload)), why
    for payload in ignored.values():
        harness.send("MESSAGE_CREATE", payload)

    # Every one of them reached the connector and was turned down (its handler has returned by then).
    ids = {p["id"] for p in ignored.values()}

    def turned_down() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.name.startswith("connectors.discord_channel")]
        return [i for i in ids if any(m.startswith(f"discord: message {i} ") and m.endswith("; ignored") for m in said)]

    wait_for_count(turned_down, len(ids), 30, "ignored messages")
    answered = harness.fake.recorded(
        lambda c: isinstance(c.body, dict) and str(c.body.get("message_reference", {}).get("message_id")) in ids
    )
    assert answered == []
    assert harness.fake.recorded(harness.posts_to(OTHER_CHANNEL)) == []
    assert harness.fake.recorded(harness.posts_to(harness.dm_channel(user))) == []
    assert harness.fake.recorded(harness.posts_to(harness.dm_channel(other_bot))) == []
    assert harness.fake.recorded(harness.typing_in(OTHER_CHANNEL)) == []
    assert harness.fake.recorded(harness.typing_in(harness.dm_channel(user))) == []
    assert harness.fake.recorded(harness.typing_in(harness.dm_channel(other_bot))) == []
    for conversation in (
        f"discord:{ALLOWED_CHANNEL}:{user}",
        f"discord:{OTHER_CHANNEL}:{user}",
        f"discord:dm:{user}",
        f"discord:dm:{other_bot}",
        f"discord:{ALLOWED_CHANNEL}:{other_bot}",
    ):
        assert harness.turns(conversation) == [], conversation


def test_a_long_answer_is_split_into_messages_of_at_most_2000_characters(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    harness.send("MESSAGE_CREATE", harness.dm(user, LONG_QUESTION))
    sources = f"Sources: {LONG_QUESTION} (faq/care-guide.yml:1)"
    harness.fake.wait_for(lambda c: harness.posts_to(channel)(c) and sources in c.body["content"])
    pieces = [c.body["content"] for c in harness.fake.recorded(harness.posts_to(channel))]
    assert len(pieces) >= 3 and all(len(p) <= MESSAGE_LIMIT for p in pieces)
    assert pieces[0].startswith("Part 1 of the care guide.") and pieces[-1].endswith(f"*{sources}*")
    # Nothing lost or reordered at the cuts: the pieces read as the stored answer plus its sources.
    answer = harness.turns(f"discord:dm:{user}")[1][1]
    assert " ".join(" ".join(pieces).split()) == " ".join(f"{answer} *{sources}*".split())


def test_suggestions_are_buttons_and_a_click_asks_that_question(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    conversation = f"discord:dm:{user}"
    harness.send("MESSAGE_CREATE", harness.dm(user, "what's the weather in Berlin"))
    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    assert post.body["content"].startswith("I'm not sure I can answer that correctly.")
    buttons = [b for row in post.body["components"] for b in row["components"]]
    with sqlite3.connect(harness.config.store.path) as db:
        row = db.execute(
            "SELECT quick_replies FROM turns WHERE conversation_id = ? AND role = 'bot'", (conversation,)
        ).fetchone()
    suggestions = json.loads(row[0])
    assert len(suggestions) >= 2 and suggestions[-1] == "Talk to a person"
    assert [b["label"] for b in buttons] == suggestions
    assert all(b["type"] == 2 and re.fullmatch(SUGGESTION_TEMPLATE, b["custom_id"]) for b in buttons)

    # The user clicks the first suggestion; Discord sends the message it was on with the click.
    (posted,) = [m for m in harness.fake.created if m["channel_id"] == str(channel)]
    click = harness.send("INTERACTION_CREATE", harness.click(user, posted, buttons[0]["custom_id"]))
    (callback,) = harness.fake.wait_for(harness.callback_for(click))
    assert callback.body["type"] == 5  # "thinking…" while it answers
    (followup,) = harness.fake.wait_for(harness.followups_for(click))
    assert followup.body["content"].startswith(f"> {discord.utils.escape_markdown(suggestions[0])}\n\n")
    assert "Sources:" in followup.body["content"]
    # The suggestion went through the pipeline as the user's next message in the same conversation.
    turns = harness.turns(conversation)
    assert [t[0] for t in turns] == ["user", "bot", "user", "bot"]
    assert turns[2] == ("user", suggestions[0], f"discord:{click['id']}")


def test_a_crafted_button_never_acts_on_another_conversations_reply(harness: Harness) -> None:
    # User A is offered suggestions, the last "Talk to a person"; user B clicks buttons that name A's reply
    # (and a turn id past SQLite's integers) on a message of B's own, labelled "hello".
    owner = harness.new_user()
    harness.send("MESSAGE_CREATE", harness.dm(owner, "what's the weather in Berlin"))
    (post,) = harness.fake.wait_for(harness.posts_to(harness.dm_channel(owner)))
    handoff_button = [b for row in post.body["components"] for b in row["components"]][-1]
    assert handoff_button["label"] == "Talk to a person"
    clicker = harness.new_user()
    for n, custom_id in enumerate([handoff_button["custom_id"], "supportbot:suggest:9999999999999999999:0"]):
        button = {"type": 2, "style": 2, "label": "hello", "custom_id": custom_id}
        message = {**harness.dm(clicker, f"an earlier reply {n}"), "author": BOT_USER,
                   "components": [{"type": 1, "components": [button]}]}  # fmt: skip
        click = harness.send("INTERACTION_CREATE", harness.click(clicker, message, custom_id))
        (followup,) = harness.fake.wait_for(harness.followups_for(click))
        assert followup.body["content"].startswith("> hello")  # the label it showed, not A's suggestion
    turns = harness.turns(f"discord:dm:{clicker}")
    assert [t[1] for t in turns if t[0] == "user"] == ["hello", "hello"]
    with sqlite3.connect(harness.config.store.path) as db:
        handed_over = db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ? AND handoff = 1",
                                 (f"discord:dm:{clicker}",)).fetchone()  # fmt: skip
    assert handed_over == (0,)


def test_ask_answers_with_a_followup_and_a_duplicate_interaction_once(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.ask(user, "How can I track my order?")
    harness.send("INTERACTION_CREATE", ask)
    harness.send("INTERACTION_CREATE", ask)
    # A message in the same conversation after it: answered in order, so the duplicate is done by then.
    harness.send("MESSAGE_CREATE", harness.dm(user, "thanks!"))
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(user)))
    (callback,) = harness.fake.wait_for(harness.callback_for(ask))
    assert callback.body["type"] == 5 and callback.query.get("with_response") in ("1", "true")
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    content = followup.body["content"]
    assert content.startswith("> How can I track my order?")
    assert TRACK_ORDER_ANSWER in content and TRACK_ORDER_SOURCE in content
    assert len(harness.fake.recorded(harness.callback_for(ask))) == 1
    assert len(harness.fake.recorded(harness.followups_for(ask))) == 1
    assert harness.turns(f"discord:dm:{user}")[0] == ("user", "How can I track my order?", f"discord:{ask['id']}")


def test_ask_in_a_channel_that_is_not_configured_is_declined_privately(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.send("INTERACTION_CREATE", harness.ask(user, "How can I track my order?", OTHER_CHANNEL))
    (callback,) = harness.fake.wait_for(harness.callback_for(ask))
    assert callback.body["type"] == 4 and callback.body["data"]["flags"] & 64  # ephemeral
    assert harness.turns(f"discord:{OTHER_CHANNEL}:{user}") == []


def test_ask_in_an_allowed_channel_is_one_conversation_per_person(harness: Harness) -> None:
    user = harness.new_user()
    ask = harness.send("INTERACTION_CREATE", harness.ask(user, "do you ship to canada?", ALLOWED_CHANNEL))
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    assert "Canada" in followup.body["content"]
    assert harness.turns(f"discord:{ALLOWED_CHANNEL}:{user}")[0][1] == "do you ship to canada?"


def test_a_slow_answer_does_not_hold_up_other_chats(harness: Harness) -> None:
    slow, quick = harness.new_user(), harness.new_user()

    gate = harness.hold(f"discord:dm:{slow}")
    try:
        harness.send("MESSAGE_CREATE", harness.dm(slow, "How can I track my order?"))
        harness.fake.wait_for(harness.typing_in(harness.dm_channel(slow)))  # stored, and answering
        harness.send("MESSAGE_CREATE", harness.dm(quick, "How can I track my order?"))
        harness.fake.wait_for(harness.posts_to(harness.dm_channel(quick)))
        assert harness.fake.recorded(harness.posts_to(harness.dm_channel(slow))) == []
        assert harness.turns(f"discord:dm:{slow}")[0][0] == "user"  # stored before answering
    finally:
        harness.release(gate)
    harness.fake.wait_for(harness.posts_to(harness.dm_channel(slow)))


def test_ask_is_acknowledged_at_once_while_an_earlier_answer_in_the_chat_is_in_progress(harness: Harness) -> None:
    # Discord fails an interaction not acknowledged within 3 seconds. A click or /ask in a chat whose
    # previous message is still being answered (a slow model, a double click) waits for that answer,
    # but its "thinking…" must not.
    user = harness.new_user()
    gate = harness.hold(f"discord:dm:{user}")
    try:
        harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))
        harness.fake.wait_for(harness.typing_in(harness.dm_channel(user)))
        ask = harness.send("INTERACTION_CREATE", harness.ask(user, "do you ship to canada?"))
        (callback,) = harness.fake.wait_for(harness.callback_for(ask))  # while the first answer is held
        assert callback.body["type"] == 5  # deferred: "thinking…"
        assert harness.fake.recorded(harness.followups_for(ask)) == []
    finally:
        harness.release(gate)
    (followup,) = harness.fake.wait_for(harness.followups_for(ask))
    assert "Canada" in followup.body["content"]
    assert len(harness.fake.recorded(harness.callback_for(ask))) == 1


def test_views_and_pieces_come_from_plain_methods(harness: Harness) -> None:
    """The formatting is reachable without Discord: replies render as text with sources and handoff."""
    from bot.pipeline import Exchange
    from bot.types import Citation
    from connectors.discord_channel import reply_pieces

    reply = Reply(
        text="I'm passing this conversation to a person from our team.",
        answered_by=AnsweredBy.FALLBACK,
        citations=(Citation("track-order", "faq", "How can I track my order?", "faq/orders.yml", 1),),
        quick_replies=("x" * 120, "Talk to a person"),
        handoff=True,
    )
    (text,) = reply_pieces(reply)
    assert text.endswith("*A person from our team will reply here.*") and TRACK_ORDER_SOURCE in text
    pieces = reply_pieces(Reply(text="word " * 1000, answered_by=AnsweredBy.LLM))
    assert len(pieces) == 3 and all(len(p) <= MESSAGE_LIMIT for p in pieces)

    async def view() -> list[dict[str, Any]]:
        built = harness.connector.build_view(Exchange(1, 42, reply))
        assert built is not None
        return built.to_components()

    (row,) = harness.call(view())
    labels = [b["label"] for b in row["components"]]
    assert labels == ["x" * 79 + "…", "Talk to a person"]
    assert [b["custom_id"] for b in row["components"]] == ["supportbot:suggest:42:0", "supportbot:suggest:42:1"]


def test_an_agent_takes_over_a_dm_and_the_bot_stays_silent_until_released(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    conversation = f"discord:dm:{user}"
    harness.send("MESSAGE_CREATE", harness.dm(user, "How can I track my order?"))
    harness.fake.wait_for(harness.posts_to(channel))
    desk = AgentDesk(harness.bot.store, lambda conversation_id, kind: None)
    harness.call(desk.claim(conversation, "alice"))  # pulled from the bot
    turn = harness.call(desk.reply(conversation, "alice", "Hi, Alice here. Which order is it?"))
    assert harness.call(harness.connector.deliver(turn)) is True
    assert harness.call(harness.connector.deliver(turn)) is False  # sent once
    posts = harness.fake.wait_for(harness.posts_to(channel), count=2)
    assert posts[1].body["content"] == "**alice**: Hi, Alice here. Which order is it?"

    harness.send("MESSAGE_CREATE", harness.dm(user, "order 4711, it never came"))
    deadline = time.monotonic() + 60
    while ("user", "order 4711, it never came") not in [t[:2] for t in harness.turns(conversation)]:
        assert time.monotonic() < deadline, "the message was not stored"
        time.sleep(0.05)
    harness.call(desk.release(conversation, "alice"))
    harness.send("MESSAGE_CREATE", harness.dm(user, "do you ship to canada?"))
    posts = harness.fake.wait_for(harness.posts_to(channel), count=3)
    assert "Canada" in posts[2].body["content"]  # the bot again, and nothing from it in between
    assert [t[0] for t in harness.turns(conversation)] == ["user", "bot", "bot", "user", "user", "bot"]


def test_an_order_status_in_a_dm(harness: Harness) -> None:
    user = harness.new_user()
    channel = harness.dm_channel(user)
    harness.send("MESSAGE_CREATE", harness.dm(user, "where is my order NW-10023? my email is jane@example.com"))
    (post,) = harness.fake.wait_for(harness.posts_to(channel))
    assert "NW-10023" in post.body["content"] and "shipped" in post.body["content"]
    assert "https://www.dhl.com/track?id=JD014600003828341" in post.body["content"]
