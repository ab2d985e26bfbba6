"""A person takes over: ownership in the engine, the agent API, and replies over the customer's channel.

The real app on a loopback port, the real store, the real embedding model; agents and their tokens from
the environment, as in production.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner
from websockets.sync.client import connect

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from serving.cli import app
from tests.conftest import ConfigFactory, LiveServer

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210ab"
AGENTS = {"SUPPORTBOT_AGENT_TOKENS": f"alice:{ALICE},bob:{BOB}"}


def as_agent(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(config: Config, embedder: Embedder) -> Iterator[LiveServer]:
    with LiveServer(config, embedder, environ=AGENTS) as server:
        yield server


def say(client: httpx.Client, text: str, conversation_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_person_takes_over_the_bot_stays_silent_and_takes_it_back(served: LiveServer, config: Config) -> None:
    with served.client() as client:
        client.get("/api/agent/me", headers=as_agent(ALICE))  # Alice is at her desk
        asked = say(client, "Can I talk to a person please?")
        conversation = asked["conversation_id"]
        assert asked["handoff"] is True and asked["state"] == "queued"
        assert asked["reply"] == config.messages.handoff  # an agent is online: no "nobody is here"

        queue = client.get("/api/agent/conversations?state=queued", headers=as_agent(BOB)).json()
        (entry,) = [c for c in queue if c["id"] == conversation]
        assert entry["channel"] == "web" and entry["trigger"] == "customer_request" and entry["owner"] is None
        assert entry["last_text"] == "Can I talk to a person please?" and entry["waiting_since"] > 0

        waiting = say(client, "Hello? Anyone there?", conversation)
        assert waiting["state"] == "queued" and waiting["turn_id"] is None and waiting["reply"] == ""

        claimed = client.post(f"/api/agent/conversations/{conversation}/claim", headers=as_agent(ALICE))
        assert claimed.status_code == 200 and claimed.json()["state"] == "agent" and claimed.json()["owner"] == "alice"
        sent = client.post(f"/api/agent/conversations/{conversation}/messages", headers=as_agent(ALICE),
                           json={"text": "Hi, Alice here. How can I help?"})  # fmt: skip
        assert sent.status_code == 200 and sent.json()["role"] == "agent"

        for text in ("My parcel never came", "It was order 1234"):  # the bot says nothing to either
            held = say(client, text, conversation)
            assert held["state"] == "agent" and held["reply"] == "" and held["turn_id"] is None

        history = client.get(f"/api/conversations/{conversation}").json()["turns"]
        people = [t for t in history if t["answered_by"] == "human"]
        assert [(t["text"], t["author"]) for t in people] == [("Hi, Alice here. How can I help?", "alice")]
        assert [t["role"] for t in history] == ["user", "bot", "user", "bot", "user", "user"]

        released = client.post(f"/api/agent/conversations/{conversation}/release", headers=as_agent(ALICE))
        assert released.status_code == 200 and released.json()["state"] == "bot"
        answered = say(client, "How can I track my order?", conversation)
        assert answered["state"] == "bot" and answered["answered_by"] == "knowledge" and answered["citations"]

        detail = client.get(f"/api/agent/conversations/{conversation}", headers=as_agent(BOB)).json()
    assert [e["kind"] for e in detail["events"]] == ["handoff", "claim", "release"]
    assert [e["actor"] for e in detail["events"]] == ["customer", "alice", "alice"]
    assert detail["state"] == "bot" and detail["owner"] is None
    assert [t["role"] for t in detail["turns"]][:4] == ["user", "bot", "user", "agent"]
    with sqlite3.connect(config.store.path) as db:  # the two held messages are kept for the person, not unanswered
        kept = db.execute("SELECT text FROM turns WHERE held = 1 AND conversation_id = ? ORDER BY id",
                          (conversation,)).fetchall()  # fmt: skip
    assert kept == [("Hello? Anyone there?",), ("My parcel never came",), ("It was order 1234",)]


def test_every_agent_call_needs_a_valid_token(served: LiveServer) -> None:
    with served.client() as client:
        conversation = say(client, "Talk to a person")["conversation_id"]
        calls = [
            ("GET", "/api/agent/conversations"),
            ("GET", f"/api/agent/conversations/{conversation}"),
            ("POST", f"/api/agent/conversations/{conversation}/claim"),
            ("POST", f"/api/agent/conversations/{conversation}/release"),
            ("POST", f"/api/agent/conversations/{conversation}/messages"),
            ("POST", f"/api/agent/conversations/{conversation}/notes"),
        ]
        basic = {"Authorization": "Basic YWxpY2U6eA=="}
        wrong: list[dict[str, str]] = [{}, as_agent("not-a-real-token-at-all"), {"Authorization": ALICE}, basic]
        for headers in wrong:
            for method, path in calls:
                response = client.request(method, path, headers=headers, json={"text": "hi"})
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
        queue = client.get("/api/agent/conversations", headers=as_agent(ALICE)).json()
    assert [c["id"] for c in queue] == [conversation]  # nothing above changed it


def test_what_another_agent_owns_is_409_and_notes_stay_internal(served: LiveServer) -> None:
    with served.client() as client:
        conversation = say(client, "I want a human agent")["conversation_id"]
        base = f"/api/agent/conversations/{conversation}"
        assert client.post(f"{base}/messages", headers=as_agent(ALICE), json={"text": "hi"}).status_code == 409
        assert client.post(f"{base}/claim", headers=as_agent(ALICE)).status_code == 200
        assert client.post(f"{base}/claim", headers=as_agent(ALICE)).status_code == 200  # her own: no change
        for path, body in (("claim", None), ("release", None), ("messages", {"text": "me too"}),
                           ("notes", {"text": "mine"})):  # fmt: skip
            refused = client.post(f"{base}/{path}", headers=as_agent(BOB), json=body)
            assert refused.status_code == 409, path
            assert refused.json()["owner"] == "alice" and refused.json()["state"] == "agent"
        note = client.post(f"{base}/notes", headers=as_agent(ALICE), json={"text": "VIP customer, refund ok"})
        assert note.status_code == 200 and note.json()["role"] == "note"
        assert client.post(f"{base}/messages", headers=as_agent(ALICE), json={"text": ""}).status_code == 422
        assert client.post("/api/agent/conversations/nope/claim", headers=as_agent(ALICE)).status_code == 404

        detail = client.get(base, headers=as_agent(BOB)).json()
        customer_view = client.get(f"/api/conversations/{conversation}").text
    assert [(t["role"], t["author"]) for t in detail["turns"] if t["role"] == "note"] == [("note", "alice")]
    assert "VIP customer" not in customer_view and "me too" not in customer_view
    assert [e["kind"] for e in detail["events"]] == ["handoff", "claim"]  # the refused calls changed nothing


def test_of_two_agents_claiming_at_once_exactly_one_wins(served: LiveServer) -> None:
    with served.client() as client:
        conversations = [say(client, "Can I speak to someone from support?")["conversation_id"] for _ in range(8)]

    async def race(conversation: str) -> list[int]:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            claims = [client.post(f"/api/agent/conversations/{conversation}/claim", headers=as_agent(token))
                      for token in (ALICE, BOB)]  # fmt: skip
            return sorted(r.status_code for r in await asyncio.gather(*claims))

    async def all_races() -> list[list[int]]:
        return await asyncio.gather(*(race(c) for c in conversations))

    assert asyncio.run(all_races()) == [[200, 409]] * len(conversations)
    with served.client() as client:
        owners = [client.get(f"/api/agent/conversations/{c}", headers=as_agent(ALICE)).json() for c in conversations]
    for detail in owners:
        assert [e["kind"] for e in detail["events"]] == ["handoff", "claim"] and detail["owner"] in ("alice", "bob")


def test_an_agent_pulls_a_live_conversation_from_the_bot(served: LiveServer) -> None:
    with served.client() as client:
        conversation = say(client, "How can I track my order?")["conversation_id"]
        assert client.get("/api/agent/conversations?state=bot", headers=as_agent(BOB)).json()[0]["id"] == conversation
        pulled = client.post(f"/api/agent/conversations/{conversation}/claim", headers=as_agent(BOB)).json()
        assert pulled["state"] == "agent" and pulled["owner"] == "bob" and pulled["trigger"] == "agent_pull"
        assert say(client, "Thanks, and when does it arrive?", conversation)["reply"] == ""


def test_nobody_online_is_said_honestly_and_an_email_address_is_kept(write_config: ConfigFactory,
                                                                     embedder: Embedder) -> None:  # fmt: skip
    config = load_config(write_config(handoff={"hold_message_every_s": 0}))
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        asked = say(client, "Talk to a person")  # the button's label: nobody has signed in
        conversation = asked["conversation_id"]
        assert asked["reply"] == config.messages.handoff_offline and asked["state"] == "queued"
        holding = say(client, "ok, I'll wait", conversation)
        assert holding["reply"] == config.messages.hold_offline and holding["state"] == "queued"
        noted = say(client, "you can write to ana.silva@example.org", conversation)
        assert noted["reply"] == config.messages.email_noted.format(email="ana.silva@example.org")
        detail = client.get(f"/api/agent/conversations/{conversation}", headers=as_agent(ALICE)).json()
        assert client.get("/api/agent/me", headers=as_agent(ALICE)).json()["online"] == ["alice"]
        again = say(client, "still there?", conversation)
    assert detail["slots"] == {"email": "ana.silva@example.org"} and detail["trigger"] == "talk_button"
    assert "ana.silva@example.org" in detail["summary"] and "pressed Talk to a person" in detail["summary"]
    assert again["reply"] == config.messages.hold  # Alice is online now


def test_not_sure_twice_in_a_row_goes_to_a_person(served: LiveServer, config: Config) -> None:
    with served.client() as client:
        first = say(client, "how do I get to your office by bike")
        assert first["state"] == "bot" and first["reply"].startswith(config.messages.not_sure)
        second = say(client, "I need help with a package", first["conversation_id"])
        detail = client.get(f"/api/agent/conversations/{first['conversation_id']}", headers=as_agent(ALICE)).json()
    assert second["handoff"] is True and second["state"] == "queued"
    assert detail["trigger"] == "not_sure" and detail["events"][0]["actor"] == "bot"
    assert "how do I get to your office by bike" in detail["summary"]


def test_ownership_survives_a_restart(config: Config, embedder: Embedder) -> None:
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        conversation = say(client, "Can I talk to a human?")["conversation_id"]
        assert client.post(f"/api/agent/conversations/{conversation}/claim", headers=as_agent(ALICE)).status_code == 200
    with LiveServer(config, embedder, environ=AGENTS) as server, server.client() as client:
        detail = client.get(f"/api/agent/conversations/{conversation}", headers=as_agent(BOB)).json()
        assert detail["state"] == "agent" and detail["owner"] == "alice"
        assert say(client, "are you still there?", conversation)["reply"] == ""
        assert client.post(f"/api/agent/conversations/{conversation}/release", headers=as_agent(BOB)).status_code == 409


def test_an_agents_reply_is_pushed_to_the_open_widget(served: LiveServer) -> None:
    with connect(served.ws_url, open_timeout=30) as ws:
        ready = json.loads(ws.recv(timeout=30))
        conversation = ready["conversation_id"]
        ws.send(json.dumps({"type": "message", "text": "Talk to a person", "client_message_id": "m1"}))
        frames = [json.loads(ws.recv(timeout=30))]
        while frames[-1]["type"] != "reply":
            frames.append(json.loads(ws.recv(timeout=30)))
        assert frames[-1]["handoff"] is True
        with served.client() as client:
            assert client.post(f"/api/agent/conversations/{conversation}/claim",
                               headers=as_agent(BOB)).status_code == 200  # fmt: skip
            ws.send(json.dumps({"type": "message", "text": "hello?", "client_message_id": "m2"}))
            frames = [json.loads(ws.recv(timeout=30))]
            while frames[-1]["type"] != "held":
                frames.append(json.loads(ws.recv(timeout=30)))
            assert frames[-1] == {"type": "held", "client_message_id": "m2", "state": "agent"}
            sent = client.post(f"/api/agent/conversations/{conversation}/messages", headers=as_agent(BOB),
                               json={"text": "Bob here, <b>hi</b>"})  # fmt: skip
        pushed = json.loads(ws.recv(timeout=30))
    assert sent.json()["delivered"] is True
    assert pushed["type"] == "reply" and pushed["answered_by"] == "human" and pushed["author"] == "bob"
    assert pushed["reply"] == "Bob here, <b>hi</b>" and pushed["client_message_id"] is None


def test_with_no_agents_set_up_the_bot_says_so_and_keeps_answering(live_server: LiveServer, config: Config) -> None:
    with live_server.client() as client:  # no SUPPORTBOT_AGENT_TOKENS
        asked = say(client, "Can I talk to a person please?")
        conversation = asked["conversation_id"]
        unsure = [say(client, "how do I get to your office by bike", conversation) for _ in range(3)]
        answered = say(client, "How can I track my order?", conversation)
        refused = client.get("/api/agent/conversations", headers=as_agent(ALICE))
    assert asked["reply"] == config.messages.handoff_unavailable and asked["handoff"] is False
    assert asked["state"] == "bot" and all(u["state"] == "bot" and not u["handoff"] for u in unsure)
    assert answered["answered_by"] == "knowledge" and refused.status_code == 401


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value, read with prometheus_client's own parser of the text format."""
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    return float(value)


def test_metrics_count_replies_handoffs_containment_the_queue_and_the_waits(served: LiveServer) -> None:
    with served.client() as client:
        contained = say(client, "How can I track my order?")  # the bot alone
        say(client, "Do you ship to Norway?", contained["conversation_id"])
        waiting = say(client, "Can I talk to a person?")["conversation_id"]  # stays in the queue
        helped = say(client, "I want a human agent")["conversation_id"]
        client.post(f"/api/agent/conversations/{helped}/claim", headers=as_agent(ALICE))
        client.post(f"/api/agent/conversations/{helped}/messages", headers=as_agent(ALICE), json={"text": "Hi!"})
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "supportbot_replies_total", channel="web", answered_by="knowledge") == 2
    assert metric(text, "supportbot_replies_total", channel="web", answered_by="human") == 1
    assert metric(text, "supportbot_handoffs_total", trigger="customer_request") == 2
    assert metric(text, "supportbot_conversations_total") == 3
    assert metric(text, "supportbot_conversations_contained_total") == 1
    assert metric(text, "supportbot_containment_ratio") == pytest.approx(1 / 3)
    assert metric(text, "supportbot_conversations_by_owner", state="queued") == 1 and waiting
    assert metric(text, "supportbot_conversations_by_owner", state="agent") == 1
    assert metric(text, "supportbot_time_to_claim_seconds_count") == 1
    assert metric(text, "supportbot_time_to_first_agent_reply_seconds_count") == 1
    assert metric(text, "supportbot_time_to_claim_seconds_bucket", le="+Inf") == 1
    # this process's latency histogram: every reply the bot wrote (not the person's)
    assert metric(text, "supportbot_reply_latency_seconds_count", answered_by="knowledge", channel="web") == 2


def test_metrics_can_require_a_token(config: Config, embedder: Embedder) -> None:
    environ = AGENTS | {"SUPPORTBOT_METRICS_TOKEN": "metrics-token-0123456789"}
    with LiveServer(config, embedder, environ=environ) as server, server.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=as_agent(ALICE)).status_code == 401
        assert client.get("/metrics", headers=as_agent("metrics-token-0123456789")).status_code == 200


def test_bot_review_prints_the_same_numbers(write_config: ConfigFactory, embedder: Embedder) -> None:
    path = write_config()
    with LiveServer(load_config(path), embedder, environ=AGENTS) as server, server.client() as client:
        say(client, "How can I track my order?")
        helped = say(client, "Can I talk to a person?")["conversation_id"]
        client.post(f"/api/agent/conversations/{helped}/claim", headers=as_agent(BOB))
        client.post(f"/api/agent/conversations/{helped}/messages", headers=as_agent(BOB), json={"text": "Hi!"})
        say(client, "thanks, it's order 4711", helped)
    result = CliRunner().invoke(app, ["review", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("2 conversations, 1 without a person (containment 50%)")
    assert "1 kept for a person" in lines[start - 1]  # the message Bob answered: no "no reply stored"
    assert lines[start + 1 : start + 4] == [
        "handoffs by trigger: customer_request 1",
        "now: 0 waiting for a person, 1 with an agent",
        "replies by channel/answered_by: web/fallback 1, web/human 1, web/knowledge 1",
    ]
    assert lines[start + 4].startswith("time to claim: median ") and lines[start + 4].endswith("(1)")
    assert lines[start + 5].startswith("time to first agent reply: median ")


def test_a_frustrated_customer_gets_the_answer_and_a_person(served: LiveServer, config: Config) -> None:
    with served.client() as client:
        client.get("/api/agent/me", headers=as_agent(ALICE))
        calm = say(client, "How can I track my order?")
        angry_text = "This is ridiculous, I hate waiting and your tracking is terrible! How can I track my order?"
        angry = say(client, angry_text, calm["conversation_id"])
        detail = client.get(f"/api/agent/conversations/{calm['conversation_id']}", headers=as_agent(ALICE)).json()
    assert calm["state"] == "bot" and not calm["handoff"]
    assert angry["state"] == "queued" and angry["handoff"] is True and angry["citations"]  # the answer stays
    assert angry["reply"].endswith(config.messages.handoff_frustrated)
    assert detail["trigger"] == "frustration" and "sounded frustrated" in detail["summary"]


def test_an_agent_approves_a_conversation_or_one_reply_for_training(served: LiveServer, config: Config) -> None:
    with served.client() as client:
        conversation = say(client, "Do you ship to Norway?")["conversation_id"]
        base = f"/api/agent/conversations/{conversation}"
        turns = client.get(base, headers=as_agent(ALICE)).json()["turns"]
        reply = next(t["id"] for t in turns if t["role"] == "bot")
        customer = next(t["id"] for t in turns if t["role"] not in ("bot", "agent"))
        one = client.post(f"{base}/approve", headers=as_agent(ALICE), json={"turn": reply})
        assert one.status_code == 200 and one.json() == {"conversation": conversation, "turn": reply,
                                                         "approved_by": "alice", "new": True}  # fmt: skip
        again = client.post(f"{base}/approve", headers=as_agent(BOB), json={"turn": reply})
        assert again.status_code == 200 and again.json()["new"] is False
        assert client.post(f"{base}/approve", headers=as_agent(BOB), json={}).json()["new"] is True  # all of it
        not_a_reply = client.post(f"{base}/approve", headers=as_agent(ALICE), json={"turn": customer})
        assert not_a_reply.status_code == 404 and "no reply with turn id" in not_a_reply.text
        assert client.post("/api/agent/conversations/nope/approve", headers=as_agent(ALICE), json={}).status_code == 404
        assert client.post(f"{base}/approve", json={}).status_code == 401
    with sqlite3.connect(config.store.path) as db:
        rows = db.execute("SELECT turn_id, approved_by FROM approvals WHERE conversation_id = ? ORDER BY turn_id",
                          (conversation,)).fetchall()  # fmt: skip
    assert sorted(rows, key=str) == sorted([(reply, "alice"), (None, "bob")], key=str)
