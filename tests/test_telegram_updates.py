"""Every kind of Telegram update a customer can send is stored and answered, and nothing crafted is trusted.

Against the loopback Bot API (tests/telegram_api.py), a stand-in for Telegram's servers.
"""

from __future__ import annotations

import html
import json
import logging
import sqlite3
import time
from typing import Any

import pytest

from bot.config import Config
from bot.retrieval.embedding import Embedder
from connectors.telegram import SECRET_HEADER
from connectors.telegram.connector import EXPIRED_BUTTON
from tests.conftest import ConfigFactory, LiveServer
from tests.polling import wait_for_count
from tests.telegram_api import BOT_USER, FakeBotApi
from tests.telegram_fixtures import SECRET, env, telegram_config, user_turns

PHOTO = [{"file_id": "p1", "file_unique_id": "u1", "width": 90, "height": 90}]
NOT_TEXT: dict[str, dict[str, Any]] = {
    "sticker": {
        "sticker": {"file_id": "s", "file_unique_id": "s", "width": 512, "height": 512, "is_animated": False,
                    "is_video": False, "type": "regular"},
    },
    "voice message": {"voice": {"file_id": "v", "file_unique_id": "v", "duration": 3}},
    "location": {"location": {"latitude": 52.37, "longitude": 4.89}},
    "contact": {"contact": {"phone_number": "+31 20 000 0000", "first_name": "Ada"}},
    "photo": {"photo": PHOTO},
}  # fmt: skip


def media(api: FakeBotApi, chat_id: int, **fields: Any) -> dict[str, Any]:
    message = api.user_message("", chat_id=chat_id, user_id=chat_id)
    del message["text"]
    return {**message, **fields}


def command(api: FakeBotApi, text: str, chat_id: int = 555, **extra: Any) -> dict[str, Any]:
    length = len(text.split()[0])
    return api.user_message(text, chat_id=chat_id, entities=[{"type": "bot_command", "offset": 0, "length": length}],
                            **extra)  # fmt: skip


def replies_to(api: FakeBotApi, chat_id: int) -> list[str]:
    """What chat `chat_id` was sent, as the customer reads it (the HTML entities read back)."""
    return [html.unescape(c.params["text"]) for c in api.sent() if c.params["chat_id"] == str(chat_id)]


def reply_to(api: FakeBotApi, chat_id: int) -> str:
    return wait_for_count(lambda: replies_to(api, chat_id), 1, 30, f"replies to chat {chat_id}")[0]


def stored_metadata(config: Config, conversation_id: str) -> list[dict[str, str]]:
    with sqlite3.connect(config.store.path) as db:
        rows = db.execute(
            "SELECT metadata FROM turns WHERE conversation_id = ? AND role = 'user' ORDER BY id", (conversation_id,)
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


def test_a_photo_or_file_caption_is_the_question(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    api.push_update({"message": media(api, 601, photo=PHOTO, caption="How can I track my order?")})
    api.push_update({"message": media(api, 602, caption="Can I pay with PayPal?",
                                      document={"file_id": "d", "file_unique_id": "d"})})  # fmt: skip
    assert "tracking link" in reply_to(api, 601)
    assert "PayPal" in reply_to(api, 602)
    assert ("telegram:601", "How can I track my order?") in user_turns(config)
    assert stored_metadata(config, "telegram:601")[0]["attachment"] == "photo"
    assert stored_metadata(config, "telegram:602")[0]["attachment"] == "file"


def test_what_is_not_text_gets_an_honest_reply_and_is_stored(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    chats = {name: 700 + n for n, name in enumerate(NOT_TEXT)}
    for name, fields in NOT_TEXT.items():
        api.push_update({"message": media(api, chats[name], **fields)})
    for name, chat in chats.items():
        assert reply_to(api, chat) == config.messages.not_text.format(attachment=name)
        assert (f"telegram:{chat}", f"[{name}]") in user_turns(config)


def test_an_edited_message_is_answered_again_as_edited(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    message = api.user_message("Can I pay with cash?")
    api.push_update({"message": message})
    reply_to(api, 555)
    edited = {**message, "text": "How can I track my order?", "edit_date": int(time.time()) + 5}
    api.push_update({"edited_message": edited})
    second = wait_for_count(lambda: replies_to(api, 555), 2, 30, "the answer to the edit")[1]
    assert "tracking link" in second
    assert [text for _, text in user_turns(config)] == ["Can I pay with cash?", "How can I track my order?"]


def test_commands_are_answered_and_a_start_payload_is_kept(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    api.push_update({"message": command(api, "/start promo-42", chat_id=801, user_id=801)})
    api.push_update({"message": command(api, "/help", chat_id=802, user_id=802)})
    api.push_update({"message": command(api, "/track how can I track my order?", chat_id=803, user_id=803)})
    api.push_update({"message": command(api, "/frobnicate", chat_id=804, user_id=804)})
    assert reply_to(api, 801) == config.messages.greeting
    assert stored_metadata(config, "telegram:801")[0]["start_payload"] == "promo-42"
    assert reply_to(api, 802) == config.messages.help
    assert "tracking link" in reply_to(api, 803)  # the words after an unknown command are the question
    assert reply_to(api, 804) == config.messages.unknown_command.format(command="/frobnicate")
    assert len(user_turns(config)) == 4


def test_in_groups_another_bots_command_is_ignored_and_a_bare_mention_is_greeted(
    polling_bot: tuple[FakeBotApi, Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.telegram")
    api, config = polling_bot
    group: dict[str, Any] = {"chat_id": -100, "chat_type": "group"}
    other = command(api, "/start@other_bot", user_id=7, **group)
    api.push_update({"message": other})
    mention = [{"type": "mention", "offset": 0, "length": len("@northwind_bot")}]
    api.push_update({"message": api.user_message("@northwind_bot", user_id=8, entities=mention, **group)})
    assert reply_to(api, -100) == config.messages.greeting
    wait_for_count(
        lambda: [r for r in caplog.records if f"message {other['message_id']} in chat -100 not addressed" in r.message],
        1, 30, "the other bot's command ignored",
    )  # fmt: skip
    assert user_turns(config) == [("telegram:-100:8", "hello")]
    assert len(api.sent()) == 1


def press(api: FakeBotApi, press_id: str, data: str, chat_id: int = 555) -> None:
    message = {"message_id": 900, "date": int(time.time()), "chat": {"id": chat_id, "type": "private"},
               "from": BOT_USER, "text": "earlier reply"}  # fmt: skip
    query = {"id": press_id, "from": {"id": chat_id, "is_bot": False, "first_name": "Ada"}, "chat_instance": "ci",
             "message": message, "data": data}  # fmt: skip
    api.push_update({"callback_query": query})


def test_crafted_button_data_is_refused_and_never_acts_in_another_conversation(
    polling_bot: tuple[FakeBotApi, Config],
) -> None:
    api, config = polling_bot
    # Chat 1001 gets a reply with buttons; its turn ids are valid, but only in chat 1001.
    api.push_update({"message": api.user_message("what will the weather be like in Berlin", chat_id=1001,
                                                 user_id=1001)})  # fmt: skip
    (offered,) = wait_for_count(lambda: [c for c in api.sent() if "reply_markup" in c.params], 1, 30, "buttons")
    other_chats_button = offered.params["reply_markup"]["inline_keyboard"][-1][0]["callback_data"]  # Talk to a person
    crafted = [other_chats_button, "qr:99999999999999999999999:0", "qr:١٢٣:0", "qr:1:99999", "qr:", "junk"]
    for n, data in enumerate(crafted):
        press(api, f"crafted-{n}", data)
    notices = api.wait_for("answerCallbackQuery", len(crafted))
    assert [c.params.get("text") for c in notices] == [EXPIRED_BUTTON] * len(crafted)
    # Each press was read and turned down: nothing was stored, nothing sent, nobody handed over.
    assert user_turns(config) == [("telegram:1001", "what will the weather be like in Berlin")]
    assert len(api.sent()) == 1
    with sqlite3.connect(config.store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM turns WHERE handoff = 1").fetchone() == (0,)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([{"update_id": 1}], "the body is a JSON list"),
        ("an update", "the body is a JSON str"),
        ({}, "no integer update_id"),
        ({"update_id": "7"}, "no integer update_id"),
        ({"update_id": 7, "message": "hello"}, "not a Telegram update"),
        ({"update_id": 8, "message": {"message_id": 1}}, "not a Telegram update"),
    ],
)
def test_bad_webhook_bodies_get_400_and_one_log_line(
    write_config: ConfigFactory,
    api: FakeBotApi,
    embedder: Embedder,
    caplog: pytest.LogCaptureFixture,
    body: object,
    why: str,
) -> None:
    config = telegram_config(write_config, api, mode="webhook", webhook_url="https://bot.example/telegram/webhook")
    with LiveServer(config, embedder, environ=env(api)) as server, server.client() as client:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            response = client.post("/telegram/webhook", json=body, headers={SECRET_HEADER: SECRET})
        assert response.status_code == 400, response.text
        assert why in response.json()["detail"]
        refused = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(refused) == 1 and refused[0].exc_info is None, [r.getMessage() for r in refused]
        assert "Traceback" not in caplog.text
