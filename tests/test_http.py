"""The HTTP API over a real socket: answers, bad input, and nothing the customer said is lost."""

from __future__ import annotations

import json
import os
import sqlite3

import httpx
import pytest

from bot.config import Config
from bot.embedding import Embedder
from tests.conftest import LiveServer


def stored_turns(config: Config, conversation_id: str) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(config.store.path) as db:
        return db.execute(
            "SELECT role, text, answered_by FROM turns WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()


def test_health(live_server: LiveServer) -> None:
    with live_server.client() as client:
        body = client.get("/health").json()
    assert body["status"] == "ok" and body["knowledge_records"] > 100


def test_chat_answers_with_citations_and_continues_the_conversation(live_server: LiveServer, config: Config) -> None:
    with live_server.client() as client:
        first = client.post("/api/chat", json={"text": "How can I track my order?"})
        assert first.status_code == 200
        body = first.json()
        assert set(body) >= {"conversation_id", "reply", "citations", "confidence", "answered_by", "handoff"}
        assert body["answered_by"] == "knowledge" and body["handoff"] is False
        assert body["citations"][0]["id"] == "track-order"
        assert body["citations"][0]["source"] == "faq/orders.yml"
        conversation = body["conversation_id"]

        second = client.post("/api/chat", json={"conversation_id": conversation, "text": "thanks!"}).json()
        assert second["conversation_id"] == conversation and second["answered_by"] == "fallback"

    turns = stored_turns(config, conversation)
    assert [(role, text) for role, text, _ in turns] == [
        ("user", "How can I track my order?"),
        ("bot", body["reply"]),
        ("user", "thanks!"),
        ("bot", second["reply"]),
    ]
    assert turns[1][2] == "knowledge"


def test_unknown_conversation_ids_are_refused(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post("/api/chat", json={"conversation_id": "A" * 24, "text": "hi"})
    assert response.status_code == 404
    assert "unknown conversation_id" in response.json()["detail"]


BAD_INPUTS = [
    pytest.param("", id="empty"),
    pytest.param("   \n\t  ", id="whitespace"),
    pytest.param("x" * 100_000, id="100KB"),
    pytest.param(os.urandom(300).decode("latin-1"), id="binary-garbage"),
    pytest.param("\udfff\ud800 garbled \x00", id="lone-surrogates"),
    pytest.param("Где мой заказ? where is my order? 注文はどこですか", id="mixed-script"),
]


@pytest.mark.parametrize("text", BAD_INPUTS)
def test_bad_input_gets_a_polite_reply_and_is_stored(live_server: LiveServer, config: Config, text: str) -> None:
    with live_server.client() as client:
        # json.dumps escapes lone surrogates as \\udXXX, as a browser's JSON.stringify does.
        payload = json.dumps({"text": text})
        response = client.post("/api/chat", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] and "Traceback" not in body["reply"]
    turns = stored_turns(config, body["conversation_id"])
    assert [role for role, _, _ in turns] == ["user", "bot"]
    assert len(turns[0][1]) == len(text)  # what the customer sent is kept whole


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"text": ', "request body is not valid JSON"),
        (b"not json at all", "request body is not valid JSON"),
        (b'{"txt": "hello"}', "text: Field required"),
        (b'{"text": 42}', "text: Input should be a valid string"),
        (b'{"text": "hi", "conversation_id": "short"}', "conversation_id: String should match pattern"),
    ],
)
def test_malformed_requests_get_422_with_a_clear_message(
    live_server: LiveServer, payload: bytes, expected: str
) -> None:
    with live_server.client() as client:
        response = client.post("/api/chat", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert expected in response.json()["detail"]


def test_oversized_body_is_refused_before_reading(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post("/api/chat", json={"text": "x" * 2_000_000})
    assert response.status_code == 413


def test_conversation_survives_a_server_restart(config: Config, embedder: Embedder) -> None:
    with LiveServer(config, embedder) as server, server.client() as client:
        conversation = client.post("/api/chat", json={"text": "do you ship to canada"}).json()["conversation_id"]
    with LiveServer(config, embedder) as server, server.client() as client:
        response = client.post("/api/chat", json={"conversation_id": conversation, "text": "and to norway?"})
    assert response.status_code == 200
    assert [role for role, _, _ in stored_turns(config, conversation)] == ["user", "bot", "user", "bot"]


def test_server_is_plain_http_on_loopback(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/health", timeout=10).status_code == 200
