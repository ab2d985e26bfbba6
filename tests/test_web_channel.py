"""The widget's live channel and history over a real socket: acks, typing, replies, resends, limits, origins."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import anyio
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bot.answering.policy import Decision
from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore
from bot.types import AnsweredBy, Message, Reply
from tests.conftest import ConfigFactory, LiveServer
from tests.polling import wait_for_count


def frames_until_reply(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=30))
        frames.append(frame)
        if frame["type"] in ("reply", "error"):
            return frames


def open_socket(server: LiveServer, conversation_id: str | None = None, origin: str | None = None) -> ClientConnection:
    url = server.ws_url + (f"?conversation_id={conversation_id}" if conversation_id else "")
    return connect(url, origin=origin, open_timeout=10)  # type: ignore[arg-type]


def test_message_over_the_socket_is_acked_answered_and_in_history(live_server: LiveServer) -> None:
    with open_socket(live_server) as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready" and len(ready["conversation_id"]) >= 16
        ws.send(json.dumps({"type": "message", "text": "how do I reset my password", "client_message_id": "m1"}))
        frames = frames_until_reply(ws)
    kinds = [f["type"] for f in frames]
    assert kinds == ["ack", "typing", "typing", "reply"]
    assert frames[1]["state"] is True and frames[2]["state"] is False
    reply = frames[-1]
    assert reply["client_message_id"] == "m1" and reply["answered_by"] == "knowledge"
    assert reply["citations"][0]["source"] == "faq/account.yml"

    with live_server.client() as client:
        history = client.get(f"/api/conversations/{ready['conversation_id']}").json()
        later = client.get(f"/api/conversations/{ready['conversation_id']}", params={"after": frames[0]["turn_id"]})
    turns = history["turns"]
    assert [(t["id"], t["role"]) for t in turns] == [(frames[0]["turn_id"], "user"), (reply["turn_id"], "bot")]
    assert turns[0]["client_message_id"] == "m1" and turns[1]["citations"] == reply["citations"]
    assert [t["id"] for t in later.json()["turns"]] == [reply["turn_id"]]


def test_a_resent_message_after_reconnecting_is_answered_once(live_server: LiveServer, config: Config) -> None:
    with open_socket(live_server) as ws:
        conversation_id = json.loads(ws.recv(timeout=10))["conversation_id"]
        ws.send(json.dumps({"type": "message", "text": "do you ship to canada?", "client_message_id": "abc-1"}))
        first = frames_until_reply(ws)[-1]
    # The connection drops; the widget reconnects to the same conversation and resends what it had pending.
    with open_socket(live_server, conversation_id) as ws:
        assert json.loads(ws.recv(timeout=10))["conversation_id"] == conversation_id
        ws.send(json.dumps({"type": "message", "text": "do you ship to canada?", "client_message_id": "abc-1"}))
        frames = frames_until_reply(ws)
    again = frames[-1]
    assert again["turn_id"] == first["turn_id"] and again["reply"] == first["reply"]
    assert [f["type"] for f in frames if f["type"] == "ack"] == ["ack"]
    with sqlite3.connect(config.store.path) as db:
        roles = [r[0] for r in db.execute("SELECT role FROM turns WHERE conversation_id = ?", (conversation_id,))]
    assert roles == ["user", "bot"]


def test_unknown_or_malformed_conversation_ids_get_a_fresh_conversation(live_server: LiveServer) -> None:
    for bad in ("A" * 24, "x"):
        with open_socket(live_server, bad) as ws:
            ready = json.loads(ws.recv(timeout=10))
        assert ready["conversation_id"] != bad
    with live_server.client() as client:
        assert client.get("/api/conversations/" + "A" * 24).status_code == 404
        assert client.get("/api/conversations/" + "A" * 24, params={"after": 2**64}).status_code == 422


def test_invalid_and_oversized_frames_get_errors_and_the_socket_stays_usable(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    config = load_config(write_config(server={"max_body_bytes": 2048}))
    with LiveServer(config, embedder) as server, open_socket(server) as ws:
        ws.recv(timeout=10)
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid"
        ws.send(json.dumps({"type": "message", "text": "x" * 5000, "client_message_id": "big"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "too_large"
        ws.send(b"\x00\xffbinary")  # a binary frame
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid"
        ws.send("[" * 1000 + "]" * 1000)  # nested deeper than the JSON parser recurses
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid"
        ws.send(json.dumps({"type": "message", "text": "hello", "client_message_id": "ok"}))
        assert frames_until_reply(ws)[-1]["type"] == "reply"


def test_rate_limits_per_conversation(write_config: ConfigFactory, embedder: Embedder) -> None:
    config = load_config(write_config(web={"messages_per_minute_per_conversation": 3}))
    with LiveServer(config, embedder) as server:
        with open_socket(server) as ws:
            ws.recv(timeout=10)
            outcomes = []
            for n in range(4):
                ws.send(json.dumps({"type": "message", "text": f"hi {n}", "client_message_id": f"m{n}"}))
                outcomes.append(frames_until_reply(ws)[-1])
        assert [o["type"] for o in outcomes] == ["reply", "reply", "reply", "error"]
        assert outcomes[-1]["code"] == "rate_limited" and outcomes[-1]["client_message_id"] == "m3"

        with server.client() as client:
            first = client.post("/api/chat", json={"text": "hello"}).json()
            codes = [
                client.post("/api/chat", json={"conversation_id": first["conversation_id"], "text": "hi"}).status_code
                for _ in range(3)
            ]
        assert codes == [200, 200, 429]


def test_rate_limits_per_ip(write_config: ConfigFactory, embedder: Embedder) -> None:
    config = load_config(write_config(web={"messages_per_minute_per_ip": 2}))
    with LiveServer(config, embedder) as server, server.client() as client:
        codes = [client.post("/api/chat", json={"text": "hello"}).status_code for _ in range(3)]
        response = client.post("/api/chat", json={"text": "hello"})
    assert codes == [200, 200, 429]
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1


def test_a_conversation_refused_for_sending_too_fast_does_not_use_up_its_address_allowance(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    limits = {"messages_per_minute_per_conversation": 2, "messages_per_minute_per_ip": 5}
    config = load_config(write_config(web=limits))
    with LiveServer(config, embedder) as server, server.client() as client:
        chatty = client.post("/api/chat", json={"text": "hello"}).json()["conversation_id"]
        retries = [
            client.post("/api/chat", json={"conversation_id": chatty, "text": "hello?"}).status_code for _ in range(10)
        ]
        # Another customer behind the same address (a shop's or an office's NAT) still gets through.
        others = [client.post("/api/chat", json={"text": "where is my order"}).status_code for _ in range(4)]
    assert retries == [200] + [429] * 9
    assert others == [200, 200, 200, 429]  # 5 per minute from the address: the chatty pair and these three


def test_only_allowed_origins_may_open_the_socket_or_read_via_cors(
    write_config: ConfigFactory, embedder: Embedder
) -> None:
    config = load_config(write_config(web={"allowed_origins": ["https://shop.example"]}))
    with LiveServer(config, embedder) as server:
        with open_socket(server, origin="https://shop.example") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        with open_socket(server, origin=server.url) as ws:  # the bot's own demo page
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        with pytest.raises(InvalidStatus):
            open_socket(server, origin="https://evil.example")

        with server.client() as client:
            preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
            allowed = client.options("/api/chat", headers={"origin": "https://shop.example", **preflight})
            denied = client.options("/api/chat", headers={"origin": "https://evil.example", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
    assert "access-control-allow-origin" not in denied.headers


class StreamingResponder:
    """A test double for a generating model: streams a fixed reply in three pieces."""

    history_turns = 0
    reads_follow_ups = False

    async def respond(self, message: Message, decision: Decision, history: Any, on_delta: Any) -> Reply:
        pieces = ["Streaming ", "works ", "end to end."]
        for piece in pieces:
            if on_delta is not None:
                await on_delta(piece)
        return Reply(text="".join(pieces), answered_by=AnsweredBy.LLM, reason="llm")


def test_streamed_pieces_reach_the_socket_before_the_final_reply(config: Config, embedder: Embedder) -> None:
    with LiveServer(config, embedder, responder=StreamingResponder()) as server, open_socket(server) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "message", "text": "tell me", "client_message_id": "s1"}))
        frames = frames_until_reply(ws)
    deltas = [f["text"] for f in frames if f["type"] == "delta"]
    assert deltas == ["Streaming ", "works ", "end to end."]
    assert frames[-1]["reply"] == "Streaming works end to end." and frames[-1]["answered_by"] == "llm"


def test_a_client_message_id_reused_for_another_text_is_refused_on_http_and_the_socket(
    live_server: LiveServer, config: Config
) -> None:
    # The contract: one client_message_id names one message. A resend with the same text gets the stored
    # reply; the same id with another text is a 409 (HTTP) or a "conflict" error frame, and nothing is stored.
    with live_server.client() as client:
        first = client.post("/api/chat", json={"text": "do you ship to canada?", "client_message_id": "q-1"}).json()
        conversation_id = first["conversation_id"]
        body = {"conversation_id": conversation_id, "client_message_id": "q-1"}
        resent = client.post("/api/chat", json={**body, "text": "do you ship to canada?"})
        assert resent.status_code == 200 and resent.json()["turn_id"] == first["turn_id"]
        other = client.post("/api/chat", json={**body, "text": "can I pay with paypal?"})
        assert other.status_code == 409
        assert other.json() == {
            "error": "conflict",
            "detail": "client_message_id 'q-1' was already used for a different message",
        }
    with open_socket(live_server, conversation_id) as ws:
        json.loads(ws.recv(timeout=30))  # ready
        ws.send(json.dumps({"type": "message", "text": "can I pay with paypal?", "client_message_id": "q-1"}))
        (error,) = frames_until_reply(ws)
    assert error["type"] == "error" and error["code"] == "conflict" and error["client_message_id"] == "q-1"
    with sqlite3.connect(config.store.path) as db:
        texts = [r[0] for r in db.execute("SELECT text FROM turns WHERE conversation_id = ?", (conversation_id,))]
    assert texts[0] == "do you ship to canada?" and len(texts) == 2  # one question, one answer


def test_a_message_stored_but_not_answered_before_a_crash_is_answered_at_the_next_start(
    config: Config, embedder: Embedder
) -> None:
    # What a run that died between storing a message and answering it leaves behind.
    async def left_behind() -> int:
        store = await ConversationStore.open(config.store.path)
        try:
            return await store.record_user_turn(Message("c" * 24, "web", "c" * 24, "How can I track my order?",
                                                        client_message_id="w-1"))  # fmt: skip
        finally:
            await store.close()

    asked = anyio.run(left_behind)
    with LiveServer(config, embedder) as server, server.client() as client:

        def answered() -> list[dict[str, Any]]:
            turns = client.get(f"/api/conversations/{'c' * 24}").json()["turns"]
            return [t for t in turns if t["role"] == "bot"]

        (reply,) = wait_for_count(answered, 1, 60, "the stored message answered")
        again = {"conversation_id": "c" * 24, "text": "How can I track my order?", "client_message_id": "w-1"}
        resent = client.post("/api/chat", json=again).json()
    assert "tracking link" in reply["text"] and reply["answered_by"] == "knowledge"
    assert resent["turn_id"] == reply["id"]  # the widget's resend gets that answer, not a second one
    with sqlite3.connect(config.store.path) as db:
        assert db.execute("SELECT reply_to FROM turns WHERE role = 'bot'").fetchall() == [(asked,)]
