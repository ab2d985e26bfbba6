"""Handoff settings: office hours, the longest wait, and the signed ownership webhook."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, ConfigError, load_config
from bot.conversation.hours import open_at
from bot.retrieval.embedding import Embedder
from tests.conftest import ConfigFactory, LiveServer, free_port
from tests.test_handoff import AGENTS, ALICE, as_agent, say

SECRET = "webhook-secret-for-tests"


def test_office_hours_are_read_in_their_own_time_zone() -> None:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    monday_9_30_berlin = dt.datetime(2026, 12, 7, 8, 30, tzinfo=dt.UTC)  # 09:30 in Berlin (CET, UTC+1)
    assert open_at(monday_9_30_berlin, "Europe/Berlin", weekdays, "09:00", "17:00")
    assert not open_at(monday_9_30_berlin, "America/New_York", weekdays, "09:00", "17:00")  # 03:30 there
    saturday = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
    assert not open_at(saturday, "UTC", weekdays, "00:00", "24:00")
    assert open_at(saturday, "UTC", ["sat"], "00:00", "24:00")


def test_bad_office_hours_are_config_errors_naming_the_key(write_config: ConfigFactory) -> None:
    for hours, why in (({"timezone": "Mars/Olympus"}, "unknown time zone"), ({"start": "9am"}, "time of day"),
                       ({"days": ["monday"]}, "days")):  # fmt: skip
        with pytest.raises(ConfigError) as raised:
            load_config(write_config(handoff={"office_hours": hours}))
        assert "handoff.office_hours" in str(raised.value) and why in str(raised.value)


def test_outside_office_hours_nobody_is_online(write_config: ConfigFactory, embedder: Embedder) -> None:
    # Open one minute a day, at a minute that is not now: closed whenever the test runs.
    now = dt.datetime.now(dt.UTC)
    closed = (now + dt.timedelta(hours=12)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=12, minutes=1)).strftime("%H:%M")
    if end <= closed:  # the minute would wrap past midnight: take the one before it
        closed, end = (now + dt.timedelta(hours=11, minutes=59)).strftime("%H:%M"), closed
    hours = {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": closed, "end": end}
    config = load_config(write_config(handoff={"office_hours": hours}))
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        assert client.get("/api/agent/me", headers=as_agent(ALICE)).json()["agent"] == "alice"  # signed in
        asked = say(client, "Can I talk to a person?")
    assert asked["reply"] == config.messages.handoff_offline and asked["state"] == "queued"


def test_after_the_longest_wait_the_customer_may_go_on_with_the_bot(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    config = load_config(write_config(handoff={"max_wait_s": 0.001, "hold_message_every_s": 0}))
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        conversation = say(client, "Can I talk to a person?")["conversation_id"]
        waiting = say(client, "hello?", conversation)
        assert waiting["reply"] == config.messages.hold_too_long
        assert waiting["quick_replies"] == [config.messages.continue_with_bot_button]
        back = say(client, config.messages.continue_with_bot_button, conversation)
        answered = say(client, "How can I track my order?", conversation)
        detail = client.get(f"/api/agent/conversations/{conversation}", headers=as_agent(ALICE)).json()
    assert back["reply"] == config.messages.back_to_bot and back["state"] == "bot"
    assert answered["answered_by"] == "knowledge"
    assert [(e["kind"], e["actor"], e["trigger"]) for e in detail["events"]] == [
        ("handoff", "customer", "customer_request"), ("release", "customer", "customer_left_queue"),
    ]  # fmt: skip


class Receiver:
    """A loopback helpdesk endpoint that records what it is sent; refuses the first call (a retry follows)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append((dict(self.headers), body))
                self.send_response(503 if len(receiver.calls) == 1 else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The first `count` events accepted (after the refused first call), as sent."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < count + 1:
            assert time.monotonic() < deadline, f"{len(self.calls)} webhook calls"
            time.sleep(0.05)
        for headers, body in self.calls:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Supportbot-Signature"], expected)
        return [json.loads(body) for _, body in self.calls[1 : count + 1]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def test_every_ownership_event_is_posted_signed_and_retried(
    write_config: ConfigFactory, embedder: Embedder, receiver: Receiver
) -> None:
    config = load_config(write_config(handoff={"webhook_url": f"http://127.0.0.1:{receiver.port}/events"}))
    environ = AGENTS | {"SUPPORTBOT_WEBHOOK_SECRET": SECRET}
    with LiveServer(config, embedder, environ=environ) as server, server.client() as client:
        conversation = say(client, "Can I talk to a person?")["conversation_id"]
        events = receiver.accepted(1)  # the first call was refused: this is the retry
        client.post(f"/api/agent/conversations/{conversation}/claim", headers=as_agent(ALICE))
        client.post(f"/api/agent/conversations/{conversation}/release", headers=as_agent(ALICE))
        events = receiver.accepted(3)
    assert receiver.calls[0][1] == receiver.calls[1][1]  # the same event, sent again
    assert [(e["event"], e["conversation_id"]) for e in events] == [
        ("handoff", conversation), ("claim", conversation), ("release", conversation),
    ]  # fmt: skip
    assert events[0]["trigger"] == "customer_request" and events[0]["channel"] == "web"


MARKED_POLICY = """# Disputes

## Chargebacks
<!-- handoff: true -->
If you have opened a chargeback with your bank, our payments team handles the case with you directly.
"""


def test_an_entry_marked_for_a_person_is_answered_then_handed_over(
    knowledge_dir: Path, config: Config, embedder: Embedder
) -> None:
    (knowledge_dir / "policies" / "disputes.md").write_text(MARKED_POLICY)
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        client.get("/api/agent/me", headers=as_agent(ALICE))  # Alice is at her desk
        complaint = say(client, "I want to make a formal complaint")
        assert complaint["citations"][0]["id"] == "make-a-complaint"
        assert complaint["reply"].startswith("I'm sorry we let you down.")  # the entry's own answer
        assert complaint["handoff"] is True and complaint["state"] == "queued" and complaint["quick_replies"] == []
        chargeback = say(client, "I have opened a chargeback with my bank, who handles it?")
        assert chargeback["citations"][0]["id"] == "policies/disputes#chargebacks" and chargeback["state"] == "queued"
        queue = client.get("/api/agent/conversations?state=queued", headers=as_agent(ALICE)).json()
        triggers = {c["id"]: c["trigger"] for c in queue}
        assert triggers[complaint["conversation_id"]] == triggers[chargeback["conversation_id"]] == "marked_entry"
        calm = say(client, "How can I track my order?")  # an unmarked entry: answered, and the bot keeps it
        assert calm["state"] == "bot" and calm["handoff"] is False


def test_with_no_agents_a_marked_entry_is_answered_and_nobody_is_promised(
    live_server: LiveServer, config: Config
) -> None:
    with live_server.client() as client:
        complaint = say(client, "I want to make a formal complaint")
    assert complaint["citations"][0]["id"] == "make-a-complaint" and complaint["state"] == "bot"
    assert complaint["handoff"] is False and complaint["reply"].endswith(config.messages.handoff_unavailable)
