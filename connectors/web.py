"""The HTTP chat API: JSON in, Message to the engine, Reply back as JSON."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from bot.pipeline import Pipeline
from bot.types import Message, Reply

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
CHANNEL = "web"


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Omit to start a new conversation; the server issues ids, so they cannot be guessed.
    conversation_id: Annotated[str | None, Field(pattern=CONVERSATION_ID_PATTERN)] = None
    text: Annotated[str, Field(strict=True)]


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


def _response(conversation_id: str, reply: Reply) -> ChatResponse:
    return ChatResponse(
        conversation_id=conversation_id,
        reply=reply.text,
        citations=[
            CitationOut(id=c.id, kind=c.kind, title=c.title, source=c.source, line=c.line) for c in reply.citations
        ],
        confidence=reply.confidence,
        answered_by=str(reply.answered_by),
        handoff=reply.handoff,
        quick_replies=list(reply.quick_replies),
    )


def chat_router(pipeline: Callable[[], Pipeline]) -> APIRouter:
    router = APIRouter()

    @router.post("/api/chat", response_model=ChatResponse)
    async def chat(request: ChatRequest) -> ChatResponse:
        engine = pipeline()
        conversation_id = request.conversation_id
        if conversation_id is None:
            conversation_id = secrets.token_urlsafe(18)
        elif await engine.store.conversation(conversation_id) is None:
            raise HTTPException(status_code=404, detail="unknown conversation_id; omit it to start a new conversation")
        message = Message(conversation_id=conversation_id, channel=CHANNEL, user_id=conversation_id, text=request.text)
        return _response(conversation_id, await engine.handle(message))

    return router
