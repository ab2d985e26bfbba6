"""Telegram end to end: the real connector and python-telegram-bot against a loopback Bot API server."""

from __future__ import annotations

import html
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from telegram.error import BadRequest

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from connectors.telegram import SECRET_HEADER, telegram_connector
from tests.conftest import ConfigFactory, LiveServer
from tests.polling import wait_for_count
from tests.telegram_api import BOT_USER, Call, FakeBotApi, flood_control, server_error
from tests.telegram_fixtures import SECRET, env, telegram_config, user_turns


def test_private_message_gets_a_cited_answer_by_long_polling(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    api.push_update({"message": api.user_message("How can I track my order?")})
    (sent,) = api.wait_for("sendMessage", 1)
    assert sent.params["chat_id"] == "555" and sent.params["parse_mode"] == "HTML"
    assert "tracking link" in sent.params["text"]
    assert "<i>Sources: How can I track my order? (faq/orders.yml:1)</i>" in sent.params["text"]
    typing = api.sent("sendChatAction")
    assert typing and typing[0].params["action"] == "typing" and typing[0].at <= sent.at
    assert user_turns(config) == [("telegram:555", "How can I track my order?")]


def test_text_is_escaped_for_html(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, _ = polling_bot
    api.push_update({"message": api.user_message("<b>hi</b> & how do I return something?")})
    (sent,) = api.wait_for("sendMessage", 1)
    text = sent.params["text"]
    # Only our own tags appear; every other '<' in the reply is escaped.
    assert text.replace("<i>", "").replace("</i>", "").count("<") == 0


def test_flood_control_is_retried_after_retry_after(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, _ = polling_bot
    api.scripted_send_failures.extend([flood_control(1)])
    api.push_update({"message": api.user_message("Do you ship to Canada?")})
    first, second = api.wait_for("sendMessage", 2)
    assert second.at - first.at >= 0.95  # waited as Telegram asked
    assert not api.scripted_send_failures


def test_server_errors_are_retried_with_backoff(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    api.scripted_send_failures.extend([server_error(), server_error()])
    api.push_update({"message": api.user_message("Can I pay with PayPal?")})
    calls = api.wait_for("sendMessage", 3)
    assert [c.params["chat_id"] for c in calls] == ["555", "555", "555"]
    assert len(user_turns(config)) == 1


def logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 30) -> list[logging.LogRecord]:
    """The connector's log records containing `text`, once there is one."""
    return wait_for_count(
        lambda: [r for r in caplog.records if r.name == "connectors.telegram" and text in r.getMessage()],
        1,
        timeout,
        f"log records saying {text!r}",
    )


def test_groups_answer_only_mentions_and_replies_to_the_bot(
    polling_bot: tuple[FakeBotApi, Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.telegram")
    api, config = polling_bot
    group: dict[str, Any] = {"chat_id": -100, "chat_type": "group"}
    alps = api.user_message("anyone been to the alps?", user_id=7, **group)
    api.push_update({"message": alps})
    text = "@northwind_bot how do I return an item?"
    mention = [{"type": "mention", "offset": 0, "length": len("@northwind_bot")}]
    api.push_update({"message": api.user_message(text, user_id=8, entities=mention, **group)})
    api.wait_for("sendMessage", 1)
    bot_message = {"message_id": 77, "date": int(time.time()), "chat": {"id": -100, "type": "group"}, "from": BOT_USER}
    api.push_update({"message": api.user_message("and the refund?", user_id=9, reply_to_message=bot_message, **group)})
    api.wait_for("sendMessage", 2)
    logged(caplog, f"message {alps['message_id']} in chat -100 not addressed to the bot; ignored")
    assert len(api.sent("sendMessage")) == 2
    # One conversation per person in a group (none for the unaddressed message); the mention is not part of
    # the question.
    assert user_turns(config) == [
        ("telegram:-100:8", "how do I return an item?"),
        ("telegram:-100:9", "and the refund?"),
    ]


def press_button(api: FakeBotApi, sent: Call, callback_data: str, press_id: str) -> None:
    """Ada (chat 555) presses a button under the bot's message `sent` (a recorded sendMessage call)."""
    message = {
        "message_id": 900,
        "date": int(time.time()),
        "chat": {"id": 555, "type": "private", "first_name": "Ada"},
        "from": BOT_USER,
        "text": sent.params["text"],
        "reply_markup": sent.params["reply_markup"],
    }
    press = {
        "id": press_id,
        "from": {"id": 555, "is_bot": False, "first_name": "Ada"},
        "chat_instance": "ci",
        "message": message,
        "data": callback_data,
    }
    api.push_update({"callback_query": press})


def test_suggestions_are_buttons_and_a_press_is_answered(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    api.push_update({"message": api.user_message("what will the weather be like in Berlin tomorrow")})
    (sent,) = api.wait_for("sendMessage", 1)
    keyboard = sent.params["reply_markup"]["inline_keyboard"]
    labels = [row[0]["text"] for row in keyboard]
    assert labels[-1] == "Talk to a person"
    press_button(api, sent, keyboard[-1][0]["callback_data"], "cbq-1")
    api.wait_for("answerCallbackQuery", 1)
    second = api.wait_for("sendMessage", 2)[1]
    # No agents are set up (SUPPORTBOT_AGENT_TOKENS): the bot says so instead of promising a person.
    assert second.params["text"].startswith("I&#x27;m sorry, no one from our team can take over this chat.")
    assert user_turns(config)[-1] == ("telegram:555", "Talk to a person")


def test_a_suggestion_longer_than_its_button_is_asked_in_full(polling_bot: tuple[FakeBotApi, Config]) -> None:
    api, config = polling_bot
    # Answered from the transit-damage section; related topics with titles over 64 characters come too.
    api.push_update({"message": api.user_message("my parcel arrived damaged")})
    (sent,) = api.wait_for("sendMessage", 1)
    keyboard = sent.params["reply_markup"]["inline_keyboard"]
    cut = next(row[0] for row in keyboard if len(row[0]["text"]) == 64 and row[0]["text"].endswith("…"))
    press_button(api, sent, cut["callback_data"], "cbq-2")
    second = api.wait_for("sendMessage", 2)[1]
    conversation, asked = user_turns(config)[-1]
    assert conversation == "telegram:555" and asked.startswith(cut["text"].removesuffix("…")) and len(asked) > 64
    with sqlite3.connect(config.store.path) as db:
        (source,) = db.execute(
            "SELECT source_id FROM turns WHERE conversation_id = ? AND role = 'bot' ORDER BY id DESC LIMIT 1",
            (conversation,),
        ).fetchone()
    assert source is not None  # answered from the very item the button named, not a near one:
    assert f"<i>Sources: {html.escape(asked)} (" in second.params["text"]
    assert second.params["text"]


def test_a_vague_message_is_asked_back_with_buttons_and_a_press_is_answered_from_that_topic(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    config = load_config(
        write_config(
            answering={"clarify": "auto"},
            channels={"telegram": {"enabled": True, "base_url": api.base_url, "poll_timeout": 1.0}},
        )
    )
    with LiveServer(config, embedder, environ=env(api)):
        asked_back_and_tapped(api, config)


def asked_back_and_tapped(api: FakeBotApi, config: Config) -> None:
    api.push_update({"message": api.user_message("my order")})
    (sent,) = api.wait_for("sendMessage", 1)
    assert sent.params["text"].startswith(config.messages.clarify)
    keyboard = sent.params["reply_markup"]["inline_keyboard"]
    *topics, person = [row[0]["text"] for row in keyboard]
    assert person == "Talk to a person" and 2 <= len(topics) <= 3
    press_button(api, sent, keyboard[0][0]["callback_data"], "cbq-3")
    second = api.wait_for("sendMessage", 2)[1]
    assert user_turns(config)[-1] == ("telegram:555", topics[0])
    with sqlite3.connect(config.store.path) as db:
        reasons = db.execute(
            "SELECT reason, answered_by FROM turns WHERE conversation_id = 'telegram:555' AND role = 'bot' ORDER BY id"
        ).fetchall()
    assert reasons == [("clarify", "fallback"), ("faq", "knowledge")]
    assert f"<i>Sources: {html.escape(topics[0])} (" in second.params["text"]


def test_long_replies_are_split_at_telegrams_limit(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder, knowledge_dir: Path
) -> None:
    paragraph = "Our winter expedition guide covers layering, sleeping systems and stoves. " * 20
    answer = "\n\n".join(f"Part {n}. {paragraph}" for n in range(1, 7))  # ~9,000 characters
    (knowledge_dir / "faq" / "guide.yml").write_text(
        "- id: winter-guide\n  question: Do you have a winter expedition guide?\n  answer: |\n"
        + "".join(f"    {line}\n" for line in answer.splitlines())
    )
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ=env(api)):
        api.push_update({"message": api.user_message("Do you have a winter expedition guide?")})
        # The pieces go out in order and the sources come with the last one.
        wait_for_count(lambda: [c for c in api.sent() if "Sources:" in c.params["text"]], 1, 30, "the last piece")
        calls = api.sent("sendMessage")
    assert len(calls) >= 3
    texts = [c.params["text"] for c in calls]
    assert all(len(t) <= 4096 for t in texts)
    assert all(t.startswith("Part ") for t in texts[:-1])  # cut at paragraph boundaries
    assert "".join(texts).count("Our winter expedition guide") == 120
    assert "Sources:" in texts[-1]


def test_webhook_mode_checks_the_secret_and_answers_duplicates_once(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connectors.telegram")
    config = telegram_config(write_config, api, mode="webhook", webhook_url="https://bot.example/telegram/webhook")
    with LiveServer(config, embedder, environ=env(api)) as server, server.client() as client:
        (registered,) = api.sent("setWebhook")
        assert registered.params["url"] == "https://bot.example/telegram/webhook"
        assert registered.params["secret_token"] == SECRET
        message = api.user_message("Where is my parcel?")
        update = {"update_id": 5000, "message": message}
        assert client.post("/telegram/webhook", json=update).status_code == 403
        assert client.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "wrong"}).status_code == 403
        for _ in range(2):  # Telegram re-delivers an update it thinks was not received
            response = client.post("/telegram/webhook", json=update, headers={SECRET_HEADER: SECRET})
            assert response.status_code == 200
        api.wait_for("sendMessage", 1)
        logged(caplog, f"duplicate update telegram:555:{message['message_id']} answered before; not sending again")
    assert len(api.sent("sendMessage")) == 1
    assert len(user_turns(config)) == 1


def test_a_rejected_token_turns_telegram_off_and_the_web_keeps_working(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ={"TELEGRAM_BOT_TOKEN": "999:WRONG"}) as server, server.client() as client:
        health = client.get("/health").json()
        assert health["channels"]["running"] == []
        assert "telegram" in health["channels"]["failed"]
        assert "rejected" in health["channels"]["failed"]["telegram"]
        assert client.post("/api/chat", json={"text": "How can I track my order?"}).json()["answered_by"] == "knowledge"


def failed_channels(client: httpx.Client, timeout: float = 30) -> dict[str, str]:
    """/health's failed channels, once Telegram is among them."""
    deadline = time.monotonic() + timeout
    while "telegram" not in (failed := client.get("/health").json()["channels"]["failed"]):
        assert time.monotonic() < deadline, "health never reported the revoked token"
        time.sleep(0.2)
    return dict(failed)


def test_a_token_revoked_while_polling_shows_in_health(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ=env(api)) as server, server.client() as client:
        assert client.get("/health").json()["channels"]["running"] == ["telegram"]
        api.token = "123456:REVOKED"  # BotFather revoked it: every call now answers 401
        failed = failed_channels(client)
        assert "TELEGRAM_BOT_TOKEN was rejected" in failed["telegram"]
        assert client.get("/health").json()["channels"]["running"] == []
        assert client.post("/api/chat", json={"text": "How can I track my order?"}).json()["answered_by"] == "knowledge"


def test_a_token_revoked_in_webhook_mode_shows_in_health_at_the_first_reply(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    config = telegram_config(write_config, api, mode="webhook", webhook_url="https://bot.example/telegram/webhook")
    with LiveServer(config, embedder, environ=env(api)) as server, server.client() as client:
        assert client.get("/health").json()["channels"]["running"] == ["telegram"]
        api.token = "123456:REVOKED"  # nothing polls in webhook mode: only the next reply can notice
        update = {"update_id": 7000, "message": api.user_message("Where is my parcel?")}
        assert client.post("/telegram/webhook", json=update, headers={SECRET_HEADER: SECRET}).status_code == 200
        failed = failed_channels(client)
        assert "TELEGRAM_BOT_TOKEN was rejected when sending to chat 555" in failed["telegram"]
        assert client.get("/health").json()["channels"]["running"] == []
    assert user_turns(config)[-1][1] == "Where is my parcel?"  # the message is kept though no reply went out


def test_a_missing_token_is_named(write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder) -> None:
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ={}) as server, server.client() as client:
        failed = client.get("/health").json()["channels"]["failed"]
    assert failed == {"telegram": "telegram: TELEGRAM_BOT_TOKEN is not set"}


def test_a_refused_webhook_turns_telegram_off_and_leaves_none_of_it_running(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> None:
    api.webhook_refusal = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    config = telegram_config(write_config, api, mode="webhook", webhook_url="https://bot.example/telegram/webhook")
    with LiveServer(config, embedder, environ=env(api)) as server, server.client() as client:
        failed = client.get("/health").json()["channels"]["failed"]
    assert "bad webhook: an https url must be provided" in failed["telegram"].lower()

    connector = telegram_connector(lambda: pytest.fail("no update may arrive"), config.channels.telegram, env(api))
    with pytest.raises(BadRequest):
        anyio.run(connector.start)
    assert not connector.running
