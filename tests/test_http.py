"""The HTTP API over a real socket: answers, bad input, and nothing the customer said is lost."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bot.config import Config
from bot.retrieval.embedding import Embedder
from connectors.telegram import TelegramConnector, telegram_webhook_router
from serving.app import _install_error_handlers
from tests.conftest import LiveServer

JSON = {"content-type": "application/json"}


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
    assert body["encoder"].startswith("all-MiniLM-L6-v2/onnx-int8/")  # the fast path is the default


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
    pytest.param(random.Random(300).randbytes(300).decode("latin-1"), id="binary-garbage-seed-300"),
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


UNDECODABLE_BODIES = [
    pytest.param(
        b'{"text": "caf\xe9 au lait"}', JSON, "request body is not valid UTF-8 (byte 0xe9 at offset 13", id="latin-1"
    ),
    pytest.param(b'{"text": "\x80"}', JSON, "request body is not valid UTF-8 (byte 0x80 at offset 10", id="stray-byte"),
    pytest.param(
        b'\xef\xbb\xbf{"text": "\xff"}',
        JSON,
        "request body is not valid UTF-8 (byte 0xff at offset 13",
        id="bom-then-bad",
    ),
    pytest.param(b"[" * 100_000, JSON, "request body is nested too deeply", id="100k-deep-array"),
    pytest.param(b'{"text": ' + b'{"a": ' * 100_000, JSON, "request body is nested too deeply", id="100k-deep-object"),
    pytest.param(
        '{"text": "hi"}'.encode("utf-16-le") + b"x",
        JSON,
        "request body is not valid UTF-16-LE (byte 0x78 at offset 28",
        id="utf-16-odd-length",
    ),
    pytest.param(
        b'{"text": "hi", "n": ' + b"1" * 5000 + b"}", JSON, "a number longer than 4300 digits", id="huge-number"
    ),
    pytest.param(b'["where is my order?"]', JSON, "request body must be a JSON object, not an array", id="array"),
    pytest.param(b'"where is my order?"', JSON, "request body must be a JSON object, not a string", id="string"),
    pytest.param(b"42", JSON, "request body must be a JSON object, not a number", id="number"),
    pytest.param(b"true", JSON, "request body must be a JSON object, not a boolean", id="boolean"),
    pytest.param(b"null", JSON, "request body must be a JSON object, not null", id="null"),
    pytest.param(b"", JSON, "request body is empty", id="empty"),
    pytest.param(
        b'{"text": "hi"}',
        {"content-type": "text/plain"},
        "request body must be sent with Content-Type: application/json (got 'text/plain')",
        id="text-plain",
    ),
    pytest.param(
        b'{"text": "hi"}',
        {},
        "request body must be sent with Content-Type: application/json (no Content-Type header was sent)",
        id="no-content-type",
    ),
]


@pytest.mark.parametrize(("payload", "headers", "expected"), UNDECODABLE_BODIES)
def test_undecodable_bodies_get_422_naming_the_problem_and_one_log_line(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture, payload: bytes, headers: dict[str, str], expected: str
) -> None:
    caplog.set_level(logging.INFO, logger="serving.app")
    with live_server.client() as client:
        response = client.post("/api/chat", content=payload, headers=headers)
        assert client.get("/health").status_code == 200  # the server is still fine
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert expected in body["detail"] and body["problems"] == [body["detail"]]
    logged = [r for r in caplog.records if r.name == "serving.app"]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].levelno == logging.INFO and logged[0].exc_info is None
    assert expected in logged[0].getMessage() and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'\xef\xbb\xbf{"text": "Wo ist meine Bestellung?"}', id="utf-8-bom"),
        pytest.param('{"text": "Wo ist meine Bestellung?"}'.encode("utf-16"), id="utf-16-bom"),
        pytest.param('{"text": "Wo ist meine Bestellung?"}'.encode("utf-16-le"), id="utf-16-le"),
        pytest.param(b'{"text": "Wo ist meine Bestellung?"}', id="json-charset-ignored"),
    ],
)
def test_json_in_any_encoding_the_json_rfc_names_is_answered(
    live_server: LiveServer, config: Config, payload: bytes
) -> None:
    headers = {"content-type": "application/json; charset=iso-8859-1"}
    with live_server.client() as client:
        response = client.post("/api/chat", content=payload, headers=headers)
    assert response.status_code == 200, response.text
    turns = stored_turns(config, response.json()["conversation_id"])
    assert turns[0][:2] == ("user", "Wo ist meine Bestellung?")


def test_routes_that_read_their_own_body_keep_their_own_errors() -> None:
    """The Telegram webhook answers an undecodable body with its own 400, not the chat API's 422."""

    class Connector:
        def verify_secret(self, header: str | None) -> bool:
            return True

        async def feed_webhook(self, payload: object) -> None:
            raise AssertionError("an undecodable update must not be fed")

    app = FastAPI()
    app.include_router(telegram_webhook_router(lambda: cast(TelegramConnector, Connector())))
    _install_error_handlers(app)
    with TestClient(app) as client:
        for payload in (b'{"update_id": "caf\xe9"}', b"not json"):
            response = client.post("/telegram/webhook", content=payload, headers=JSON)
            assert response.status_code == 400
            assert response.json() == {"error": "http_error", "detail": "body is not JSON"}


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
