"""The web channel: the JSON chat API, conversation history, and the widget's live WebSocket.

Conversation ids are issued by the server and are long random strings: holding one is what entitles a
browser to a conversation's history, so they are never derived from anything guessable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.config import Config
from bot.pipeline import RESUME_WINDOW_S, ClientIdConflict, Exchange, Pipeline
from bot.storage.coordination import CoordinationUnavailable, RateCheck
from bot.storage.store import MAX_TURN_ID
from bot.storage.turns import Turn
from bot.storage.unavailable import Unavailable
from bot.types import Message, Reply

log = logging.getLogger(__name__)

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)
CLIENT_MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
CHANNEL = "web"
WINDOW_SECONDS = 60.0
PUSH_TOPIC = "web-push"  # a reply for the widgets open on a conversation, wherever they are connected


def new_conversation_id() -> str:
    return secrets.token_urlsafe(18)  # 144 random bits


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Omit to start a new conversation; the server issues ids, so they cannot be guessed.
    conversation_id: Annotated[str | None, Field(pattern=CONVERSATION_ID_PATTERN)] = None
    text: Annotated[str, Field(strict=True)]
    # Optional sender-side id: a request retried with the same id is answered once.
    client_message_id: Annotated[str | None, Field(pattern=CLIENT_MESSAGE_ID_PATTERN)] = None


class SocketMessage(BaseModel):
    """What the widget sends over the WebSocket."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    text: Annotated[str, Field(strict=True)]
    client_message_id: Annotated[str, Field(pattern=CLIENT_MESSAGE_ID_PATTERN)]


class CitationOut(BaseModel):
    id: str
    kind: str
    title: str
    source: str
    line: int


class ChatResponse(BaseModel):
    conversation_id: str
    reply: str
    citations: list[CitationOut]
    confidence: float
    answered_by: str  # knowledge | llm | fallback | human
    handoff: bool
    quick_replies: list[str]
    turn_id: int | None  # None: a person owns the conversation and the bot stays silent (reply is "")
    state: str  # who owns the conversation now: bot | queued | agent


class TurnOut(BaseModel):
    id: int
    role: str
    text: str
    created_at: float
    client_message_id: str | None
    citations: list[CitationOut]
    quick_replies: list[str]
    answered_by: str | None
    handoff: bool
    author: str | None  # for a reply written by a person (answered_by "human"): the agent's name


class HistoryResponse(BaseModel):
    conversation_id: str
    turns: list[TurnOut]


def _reply_fields(reply: Reply) -> dict[str, Any]:
    return {
        "reply": reply.text,
        "citations": [asdict(c) for c in reply.citations],
        "confidence": reply.confidence,
        "answered_by": str(reply.answered_by),
        "handoff": reply.handoff,
        "quick_replies": list(reply.quick_replies),
    }


def _turn_out(turn: Turn) -> TurnOut:
    return TurnOut(
        id=turn.id,
        role=turn.role,
        text=turn.text,
        created_at=turn.created_at,
        client_message_id=turn.client_message_id,
        citations=[CitationOut(**c) for c in turn.citations],
        quick_replies=turn.quick_replies,
        answered_by=turn.answered_by,
        handoff=turn.handoff,
        author=turn.author,
    )


def origin_allowed(origin: str | None, own_origin: str, allowed: list[str]) -> bool:
    """Browsers always send Origin on WebSocket handshakes; other clients (no Origin) are not browsers."""
    if origin is None or "*" in allowed:
        return True
    return origin == own_origin or origin in allowed


class WebChannel:
    """Holds the web channel's state (open widgets) for one app; builds its routes."""

    def __init__(self, pipeline: Callable[[], Pipeline], config: Config) -> None:
        self._pipeline = pipeline
        self._settings = config.web
        self._messages = config.messages
        self._max_frame_bytes = config.server.max_body_bytes
        self._sockets: dict[str, set[WebSocket]] = {}  # conversation id -> its open widgets
        self._instance = secrets.token_hex(8)  # names this process's pushes, which it has made already

    async def deliver(self, turn: Turn) -> bool:
        """Push a person's reply to every widget open on its conversation, in this process and (through the
        coordination's pub/sub) in the others; the history has it either way (a widget that opens later
        shows it). True when at least one widget got it."""
        pushed = await self._push_here(turn)
        coordination = self._pipeline().coordination
        note = {"conversation_id": turn.conversation_id, "turn_id": turn.id, "origin": self._instance}
        try:
            await coordination.publish(PUSH_TOPIC, json.dumps(note))
        except CoordinationUnavailable as err:
            log.warning("web: reply %s not offered to other processes: %s", turn.id, err)
            return pushed
        if pushed or coordination.kind == "in-process":
            return pushed
        return await self._delivered_elsewhere(turn)

    async def _push_here(self, turn: Turn) -> bool:
        frame = {
            "type": "reply", "client_message_id": None, "turn_id": turn.id, "author": turn.author,
            "state": "agent", **_reply_fields(turn.as_reply()),
        }  # fmt: skip
        pushed = False
        for websocket in list(self._sockets.get(turn.conversation_id, ())):
            with contextlib.suppress(Exception):  # a widget that went away: it catches up from the history
                await websocket.send_json(frame)
                pushed = True
        if pushed:
            await self._pipeline().turn_sent(turn.id, True)
        return pushed

    async def _delivered_elsewhere(self, turn: Turn, wait_s: float = 2.0) -> bool:
        """Whether another process pushed it (it marks the turn delivered) within `wait_s`."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            stored = await self._pipeline().store.turn(turn.conversation_id, turn.id)
            if stored is not None and stored.delivered_at is not None:
                return True
            await asyncio.sleep(0.05)
        return False

    async def follow_pushes(self) -> None:
        """Push to the widgets open here what other processes published for them; until cancelled."""
        while True:
            try:
                async for raw in self._pipeline().coordination.follow(PUSH_TOPIC):
                    note = json.loads(raw)
                    if note.get("origin") == self._instance or note.get("conversation_id") not in self._sockets:
                        continue
                    turn = await self._pipeline().store.turn(str(note["conversation_id"]), int(note["turn_id"]))
                    if turn is not None:
                        await self._push_here(turn)
            except Unavailable as err:
                log.warning("web: following other processes' pushes: %s; again in 1 s", err)
                await asyncio.sleep(1.0)

    async def _rate_limited(self, conversation_id: str, client_ip: str) -> float:
        """Seconds to wait, or 0 when this message may go through (counted in every process's limits).

        Only messages that go through count against the limits: a conversation that keeps sending while
        refused must not use up the allowance of everyone else behind the same address.
        """
        return await self._pipeline().coordination.rate([
            RateCheck(f"ip:{client_ip}", self._settings.messages_per_minute_per_ip, WINDOW_SECONDS),
            RateCheck(f"conversation:{conversation_id}", self._settings.messages_per_minute_per_conversation,
                      WINDOW_SECONDS),
        ])  # fmt: skip

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/api/chat", response_model=ChatResponse)
        async def chat(body: ChatRequest, request: Request) -> Any:
            pipeline = self._pipeline()
            conversation_id = body.conversation_id
            if conversation_id is None:
                conversation_id = new_conversation_id()
            elif await pipeline.store.conversation(conversation_id) is None:
                raise HTTPException(404, "unknown conversation_id; omit it to start a new conversation")
            wait = await self._rate_limited(conversation_id, request.client.host if request.client else "unknown")
            if wait:
                return JSONResponse(
                    status_code=429,
                    content={"error": "rate_limited", "detail": self._messages.rate_limited},
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
            message = Message(
                conversation_id, CHANNEL, conversation_id, body.text, client_message_id=body.client_message_id
            )
            try:
                exchange = await pipeline.exchange(message)
            except ClientIdConflict as err:
                return JSONResponse(status_code=409, content={"error": "conflict", "detail": str(err)})
            return {
                "conversation_id": conversation_id,
                "turn_id": None if exchange.silent else exchange.bot_turn_id,
                "state": str(exchange.state),
                **_reply_fields(exchange.reply),
            }

        @router.get("/api/conversations/{conversation_id}", response_model=HistoryResponse)
        async def history(
            conversation_id: Annotated[str, Field(pattern=CONVERSATION_ID_PATTERN)],
            after: Annotated[int, Query(ge=0, le=MAX_TURN_ID)] = 0,
        ) -> HistoryResponse:
            store = self._pipeline().store
            if await store.conversation(conversation_id) is None:
                raise HTTPException(404, "unknown conversation")
            turns = await store.turns(conversation_id, limit=self._settings.max_history_turns, after=after)
            return HistoryResponse(conversation_id=conversation_id, turns=[_turn_out(t) for t in turns])

        @router.websocket("/api/ws")
        async def live(websocket: WebSocket, conversation_id: str | None = None) -> None:
            own_origin = f"{'https' if websocket.url.scheme == 'wss' else 'http'}://{websocket.headers.get('host', '')}"
            if not origin_allowed(websocket.headers.get("origin"), own_origin, self._settings.allowed_origins):
                await websocket.close(code=1008, reason="origin not allowed")
                return
            await websocket.accept()
            with contextlib.suppress(WebSocketDisconnect):
                await self._serve_socket(websocket, conversation_id)

        return router

    async def _serve_socket(self, websocket: WebSocket, requested_id: str | None) -> None:
        pipeline = self._pipeline()
        conversation_id = requested_id
        if (
            conversation_id is None
            or not _valid_id(conversation_id)
            or (await pipeline.store.conversation(conversation_id) is None)
        ):
            conversation_id = new_conversation_id()
        await websocket.send_json({"type": "ready", "conversation_id": conversation_id})
        sockets = self._sockets.setdefault(conversation_id, set())
        sockets.add(websocket)
        try:
            await self._receive_frames(websocket, pipeline, conversation_id)
        finally:
            sockets.discard(websocket)
            if not sockets:
                self._sockets.pop(conversation_id, None)

    async def _receive_frames(self, websocket: WebSocket, pipeline: Pipeline, conversation_id: str) -> None:
        client_ip = websocket.client.host if websocket.client else "unknown"
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
            raw = received.get("text")
            if raw is None:
                await _send_error(websocket, "invalid", "Invalid frame: send JSON as a text frame, not binary data")
                continue
            if len(raw.encode("utf-8", "surrogatepass")) > self._max_frame_bytes:
                await _send_error(websocket, "too_large", f"Messages are limited to {self._max_frame_bytes} bytes.")
                continue
            try:
                frame = SocketMessage.model_validate(json.loads(raw))
            except (ValueError, ValidationError, RecursionError) as err:
                detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else "not valid JSON"
                await _send_error(websocket, "invalid", f"Invalid frame: {detail}")
                continue
            try:
                if await self._rate_limited(conversation_id, client_ip):
                    await _send_error(websocket, "rate_limited", self._messages.rate_limited, frame.client_message_id)
                    continue
                await self._answer_frame(websocket, pipeline, conversation_id, frame)
            except Unavailable as err:  # nothing half-done: the widget sends it again
                log.error("web: %s", err)
                await _send_error(websocket, "unavailable", "Please try again in a moment.", frame.client_message_id)

    async def _answer_frame(
        self, websocket: WebSocket, pipeline: Pipeline, conversation_id: str, frame: SocketMessage
    ) -> None:
        cmid = frame.client_message_id

        async def stored(user_turn_id: int) -> None:
            await websocket.send_json({"type": "ack", "client_message_id": cmid, "turn_id": user_turn_id})
            await websocket.send_json({"type": "typing", "state": True})

        async def delta(text: str) -> None:
            await websocket.send_json({"type": "delta", "client_message_id": cmid, "text": text})

        message = Message(conversation_id, CHANNEL, conversation_id, frame.text, client_message_id=cmid)
        try:
            exchange: Exchange = await pipeline.exchange(message, on_delta=delta, on_stored=stored)
        except ClientIdConflict as err:
            await _send_error(websocket, "conflict", str(err), cmid)
            return
        if exchange.repeated:
            await websocket.send_json({"type": "ack", "client_message_id": cmid, "turn_id": exchange.user_turn_id})
        await websocket.send_json({"type": "typing", "state": False})
        if exchange.silent:  # kept for a person: their reply comes as its own frame when they write
            await websocket.send_json({"type": "held", "client_message_id": cmid, "state": str(exchange.state)})
            return
        await websocket.send_json(
            {
                "type": "reply",
                "client_message_id": cmid,
                "turn_id": exchange.bot_turn_id,
                **_reply_fields(exchange.reply),
            }
        )


async def resume_web(pipeline: Pipeline) -> None:
    """Answer what an earlier run stored but did not answer (it stopped first): the widget shows the reply
    in the conversation's history, and a client retrying with its client_message_id gets it."""
    pending = await pipeline.pending(CHANNEL, time.time() - RESUME_WINDOW_S, undelivered_too=False)
    for turn_id, message in pending:
        await pipeline.exchange(message, stored_turn_id=turn_id)
    if pending:
        log.info("web: answered %d messages stored before the restart", len(pending))


def _valid_id(conversation_id: str) -> bool:
    return _CONVERSATION_ID.fullmatch(conversation_id) is not None


async def _send_error(websocket: WebSocket, code: str, message: str, client_message_id: str | None = None) -> None:
    await websocket.send_json(
        {"type": "error", "code": code, "message": message, "client_message_id": client_message_id}
    )
