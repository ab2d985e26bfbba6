"""Forms and business actions end to end over HTTP, against the demo's real rasa-sdk action server."""

from __future__ import annotations

import html
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from tests.action_server import ActionServer
from tests.browser import NEEDS_CHROMIUM
from tests.conftest import ConfigFactory, LiveServer, free_port
from tests.telegram_api import FakeBotApi
from tests.telegram_fixtures import env

TOKEN = "forms-action-token-0123456"
ENV = {"SUPPORTBOT_ACTIONS_TOKEN": TOKEN}
ASK_ORDER = "What is your order number? It starts with NW- and is in your order confirmation email."
ASK_EMAIL = "And which email address did you order with?"


@pytest.fixture(scope="module")
def actions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActionServer]:
    with ActionServer("actions", tmp_path_factory.mktemp("form-actions"), token=TOKEN) as server:
        yield server


@pytest.fixture
def with_actions(write_config: ConfigFactory, actions: ActionServer) -> Config:
    return load_config(write_config(actions={"url": actions.url, "start": False, "timeout_s": 5}))


def say(client: httpx.Client, text: str, conversation: str | None = None, **extra: str) -> dict[str, Any]:
    body = {"text": text, **({"conversation_id": conversation} if conversation else {}), **extra}
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_order_number_and_email_in_one_message_get_the_status_at_once(
    with_actions: Config, embedder: Embedder
) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        status = say(client, "where is my order NW-10023? my email is jane@example.com")
        wrong = say(client, "where is my order NW-10023? my email is eve@example.com")
        health = client.get("/health").json()
    assert status["answered_by"] == "action" and "shipped" in status["reply"]
    assert "https://www.dhl.com/track?id=JD014600003828341" in status["reply"]
    assert "couldn't find" in wrong["reply"] and "shipped" not in wrong["reply"]  # a wrong email learns nothing
    actions = health["actions"]
    assert (actions["url"], actions["ok"], actions["problem"]) == (with_actions.actions.url, True, None)  # type: ignore[union-attr]
    assert actions["latency_ms"] >= 0


def test_a_form_asks_for_what_is_missing_answers_a_question_in_between_and_resumes(
    with_actions: Config, embedder: Embedder
) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        asked = say(client, "can you look up my order for me")
        conversation = asked["conversation_id"]
        assert asked["reply"].startswith("You can see each order's status") and asked["answered_by"] == "action"
        assert asked["reply"].endswith(f"\n\n{ASK_ORDER}")  # the entry's answer, then the form's question
        aside = say(client, "Do you ship to Canada?", conversation)
        assert aside["answered_by"] == "knowledge" and aside["reply"].endswith(f"Back to where we were: {ASK_ORDER}")
        assert say(client, "it's nw10023", conversation)["reply"] == ASK_EMAIL  # read in any case, no dash
        done = say(client, "Jane@Example.com", conversation)
        again = say(client, "How can I track my order?", conversation)  # the form is over: a normal answer
    assert "NW-10023" in done["reply"] and "shipped" in done["reply"]
    assert again["answered_by"] == "knowledge" and again["citations"]


def test_cancel_ends_the_form_and_the_next_message_is_a_question_again(
    with_actions: Config, embedder: Embedder
) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        conversation = say(client, "can you look up my order for me")["conversation_id"]
        cancelled = say(client, "cancel", conversation)
        after = say(client, "How can I track my order?", conversation)
    assert cancelled["reply"] == with_actions.messages.form_cancelled
    assert after["answered_by"] == "knowledge"


def test_the_slots_and_the_open_form_survive_a_restart(with_actions: Config, embedder: Embedder) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        conversation = say(client, "can you look up my order for me")["conversation_id"]
        assert say(client, "NW-10023", conversation)["reply"] == ASK_EMAIL
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        done = say(client, "jane@example.com", conversation)
    assert "shipped" in done["reply"]


def test_a_resent_message_runs_its_action_once(with_actions: Config, embedder: Embedder) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        text = "where is my order NW-10023? my email is jane@example.com"
        first = say(client, text, client_message_id="resend-1")
        second = say(client, text, first["conversation_id"], client_message_id="resend-1")
    assert first["reply"] == second["reply"] and first["turn_id"] == second["turn_id"]
    with sqlite3.connect(with_actions.store.path) as db:
        (ran,) = db.execute("SELECT count(*) FROM events WHERE kind = 'form' AND text = 'ran action_order_status' "
                            "AND conversation_id = ?", (first["conversation_id"],)).fetchone()  # fmt: skip
    assert ran == 1


def test_an_action_server_that_is_down_gets_a_clear_message_and_the_offer_of_a_person(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = load_config(write_config(actions={"url": dead, "start": False, "timeout_s": 2}))
    with LiveServer(config, embedder, environ=ENV) as server, server.client() as client:
        failed = say(client, "where is my order NW-10023? my email is jane@example.com")
        after = say(client, "How can I track my order?", failed["conversation_id"])
        health = client.get("/health").json()
    assert failed["reply"] == config.messages.action_failed
    assert failed["quick_replies"] == [config.messages.talk_to_human_button]
    assert after["answered_by"] == "knowledge"  # never stuck in the form
    assert health["actions"]["ok"] is False and "cannot reach" in health["actions"]["problem"]


def test_a_form_over_telegram(write_config: ConfigFactory, actions: ActionServer, embedder: Embedder) -> None:
    with FakeBotApi() as api:
        telegram = {"enabled": True, "base_url": api.base_url, "poll_timeout": 1.0}
        config = load_config(write_config(channels={"telegram": telegram},
                                          actions={"url": actions.url, "start": False}))  # fmt: skip
        with LiveServer(config, embedder, environ=env(api) | ENV):
            replies = []
            for n, text in enumerate(("can you look up my order for me", "NW-10023", "jane@example.com"), 1):
                api.push_update({"message": api.user_message(text)})
                replies.append(api.wait_for("sendMessage", n)[-1].params["text"])
    assert replies[0].endswith(html.escape(ASK_ORDER)) and replies[1] == html.escape(ASK_EMAIL)
    assert "NW-10023" in replies[2] and "shipped" in replies[2] and "dhl.com/track" in replies[2]


@NEEDS_CHROMIUM
def test_a_form_in_the_widget(browser: Browser, with_actions: Config, embedder: Embedder) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        with LiveServer(with_actions, embedder, environ=ENV) as server:
            page.goto(server.url + "/")
            page.get_by_role("button", name="Open chat").click()
            box, log = page.get_by_role("textbox", name="Type your message"), page.get_by_role("log")
            box.fill("can you look up my order for me")
            box.press("Enter")
            expect(log).to_contain_text(ASK_ORDER)
            box.fill("NW-10023 and my email is jane@example.com")
            box.press("Enter")
            expect(log).to_contain_text("is shipped. It is with DHL")
    finally:
        context.close()


def test_a_return_is_started_once_even_when_the_last_answer_is_resent(with_actions: Config, embedder: Embedder,
                                                                      actions: ActionServer) -> None:  # fmt: skip
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        asked = say(client, "How do I return an item?")
        conversation = asked["conversation_id"]
        assert asked["reply"].startswith("Go to Help > Start a return") and asked["reply"].endswith(ASK_ORDER)
        say(client, "NW-10023, jane@example.com", conversation)  # both typed slots from one answer
        assert say(client, "the Ridgeline down jacket", conversation)["reply"].startswith("And why are you returning")
        done = say(client, "too small", conversation, client_message_id="reason-1")
        again = say(client, "too small", conversation, client_message_id="reason-1")
    assert "Your return RT-" in done["reply"] and done["reply"] == again["reply"]
    with sqlite3.connect(actions.orders_db) as db:
        rows = db.execute("SELECT item, reason FROM returns WHERE message_id LIKE ?", (f"{conversation}:%",)).fetchall()
    assert rows == [("the Ridgeline down jacket", "too small")]


def test_two_messages_in_a_row_about_something_else_end_the_form(with_actions: Config, embedder: Embedder) -> None:
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        conversation = say(client, "can you look up my order for me")["conversation_id"]
        first = say(client, "Do you ship to Canada?", conversation)
        second = say(client, "What is your return policy?", conversation)
        later = say(client, "jane@example.com", conversation)  # no form open: not taken as an answer
    assert first["reply"].endswith(ASK_ORDER) and not second["reply"].endswith(ASK_ORDER)
    assert second["answered_by"] == "knowledge" and later["answered_by"] != "action"


def test_a_message_for_the_team_becomes_a_ticket(with_actions: Config, embedder: Embedder,
                                                 actions: ActionServer) -> None:  # fmt: skip
    with LiveServer(with_actions, embedder, environ=ENV) as server, server.client() as client:
        conversation = say(client, "Can I leave a message for your team?")["conversation_id"]
        say(client, "sam@example.com", conversation)
        done = say(client, "Please call me about a bulk order of 12 tents for our scout group.", conversation)
    assert "ticket TK-" in done["reply"] and "sam@example.com" in done["reply"]
    with sqlite3.connect(actions.orders_db) as db:
        (row,) = db.execute("SELECT email, message FROM tickets WHERE conversation = ?", (conversation,)).fetchall()
    assert row == ("sam@example.com", "Please call me about a bulk order of 12 tents for our scout group.")


OLD_ORDER_FORM = """\
- id: old_order_form
  action: action_check_old_order
  validate: validate_old_order_form
  slots:
    - name: order_number
      ask: Which old order?
      type: pattern
      pattern: 'NW-?[0-9]{5,6}'
    - name: email
      ask: Which email?
      type: email
"""
OLD_ORDER_FAQ = """\
- id: old-order
  question: Can you check an order from the old shop?
  answer: I can check orders from our old shop.
  action: action_check_old_order
"""


def test_a_forms_validate_action_written_for_rasa_rejects_an_answer_and_it_is_asked_again(
    write_config: ConfigFactory, knowledge_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    (knowledge_dir / "legacy").mkdir()
    (knowledge_dir / "legacy" / "forms.yml").write_text(OLD_ORDER_FORM)
    (knowledge_dir / "legacy" / "old-orders.yml").write_text(OLD_ORDER_FAQ)
    with ActionServer("tests.rasa_actions", tmp_path / "rasa") as rasa:
        config = load_config(write_config(actions={"url": rasa.url, "start": False}))
        with LiveServer(config, embedder) as server, server.client() as client:
            asked = say(client, "Can you check an order from the old shop?")
            conversation = asked["conversation_id"]
            refused = say(client, "NW-90001, sam@example.com", conversation)
            done = say(client, "NW-10023", conversation)
    assert asked["reply"].endswith("Which old order?")
    assert refused["reply"] == "Orders starting NW-9 are from our old shop, I can't look those up.\n\nWhich old order?"
    assert done["reply"] == "Checked NW-10023 for sam@example.com."  # the email from before was kept


def test_a_slow_or_raising_action_gets_the_clear_message_within_its_limit(
    write_config: ConfigFactory, knowledge_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    (knowledge_dir / "faq" / "slow.yml").write_text(
        "- id: warehouse-check\n  question: Can you check the warehouse stock for me?\n  answer: Let me check.\n"
        "  action: action_slow\n- id: broken-check\n  question: Can you check the broken system?\n"
        "  answer: Let me check that.\n  action: action_raises\n"
    )
    with ActionServer("tests.rasa_actions", tmp_path / "rasa") as rasa:
        config = load_config(write_config(actions={"url": rasa.url, "start": False, "timeout_s": 1}))
        with LiveServer(config, embedder) as server, server.client() as client:
            started = time.monotonic()
            slow = say(client, "Can you check the warehouse stock for me?")
            took = time.monotonic() - started
            broken = say(client, "Can you check the broken system?")
    assert slow["reply"] == broken["reply"] == config.messages.action_failed
    assert slow["quick_replies"] == [config.messages.talk_to_human_button]
    assert took < 1 + 1  # actions.timeout_s + 1 s, answering included


def test_with_nobody_online_the_customer_may_leave_a_message_instead_of_waiting(
    with_actions: Config, embedder: Embedder, actions: ActionServer
) -> None:
    agents = {"SUPPORTBOT_AGENT_TOKENS": "alice:alice-token-0123456789"}  # set up, but nobody at the desk
    with LiveServer(with_actions, embedder, environ=ENV | agents) as server, server.client() as client:
        asked = say(client, "Can I talk to a person please?")
        conversation = asked["conversation_id"]
        assert asked["state"] == "queued" and asked["reply"] == with_actions.messages.handoff_offline
        assert asked["quick_replies"] == [with_actions.messages.leave_message_button]
        leaving = say(client, with_actions.messages.leave_message_button, conversation)
        assert leaving["state"] == "bot" and leaving["reply"] == "Which email address should the team reply to?"
        say(client, "kim@example.com", conversation)
        done = say(client, "My tent pole snapped, please call me back.", conversation)
    assert "ticket TK-" in done["reply"] and done["state"] == "bot"
    with sqlite3.connect(actions.orders_db) as db:
        (row,) = db.execute("SELECT email, message FROM tickets WHERE conversation = ?", (conversation,)).fetchall()
    assert row == ("kim@example.com", "My tent pole snapped, please call me back.")
