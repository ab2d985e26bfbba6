"""The agent inbox's JSON API, for the /agent page and for other helpdesks.

Every call needs `Authorization: Bearer <token>` (agents and tokens from SUPPORTBOT_AGENT_TOKENS): none or
a wrong one is 401. Changing a conversation another agent owns is 409, with who owns it.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name this
# module's closures (the agent dependency), at definition time.
import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.conversation.desk import AgentDesk, ConversationView
from bot.conversation.ledger import Listed, UnknownConversation
from bot.conversation.state import Event, EventKind, Owner, Ownership, OwnershipConflict
from bot.storage.approvals import ApprovalError
from bot.storage.turns import Turn
from bot.types import AnsweredBy
from serving.agents import FEED_CLOSED, AgentDirectory, AgentPresence, InboxFeed

log = logging.getLogger(__name__)

MAX_AGENT_TEXT = 10_000
FEED_PING_S = 15.0
Deliver = Callable[[str, Turn], Awaitable[bool]]  # (channel, the agent's reply turn) -> sent or pushed


class AgentText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_AGENT_TEXT)]


class ApprovalTarget(BaseModel):
    """Approve the whole conversation for training, or one reply in it (`turn`: its id)."""

    model_config = ConfigDict(extra="forbid")

    turn: Annotated[int | None, Field(strict=True, ge=1)] = None


def listed_out(item: Listed) -> dict[str, Any]:
    return {
        "id": item.id, "channel": item.channel, "state": str(item.state), "owner": item.owner,
        "trigger": item.trigger, "waiting_since": item.waiting_since, "last_text": item.last_text,
    }  # fmt: skip


def ownership_out(conversation_id: str, ownership: Ownership) -> dict[str, Any]:
    return {
        "id": conversation_id, "state": str(ownership.state), "owner": ownership.agent,
        "trigger": ownership.trigger, "since": ownership.since,
    }  # fmt: skip


def turn_out(turn: Turn) -> dict[str, Any]:
    person = turn.answered_by == str(AnsweredBy.HUMAN)
    return {
        "id": turn.id, "role": "agent" if person else turn.role, "text": turn.text, "created_at": turn.created_at,
        "author": turn.author, "answered_by": turn.answered_by, "reason": turn.reason, "citations": turn.citations,
        "delivered": turn.delivered_at is not None if turn.role == "bot" else None,
    }  # fmt: skip


def note_out(event: Event) -> dict[str, Any]:
    return {"id": event.id, "role": "note", "text": event.text, "created_at": event.created_at, "author": event.actor}


def view_out(view: ConversationView) -> dict[str, Any]:
    entries = [turn_out(t) for t in view.turns] + [note_out(e) for e in view.events if e.kind is EventKind.NOTE]
    entries.sort(key=lambda entry: (entry["created_at"], entry["role"] == "note"))
    ownership = view.ownership
    return {
        "id": view.conversation.id, "channel": view.conversation.channel, "state": str(ownership.state),
        "owner": ownership.agent, "trigger": ownership.trigger, "waiting_since": ownership.since,
        "summary": view.summary, "slots": ownership.slots, "turns": entries,
        "events": [asdict(e) | {"kind": str(e.kind)} for e in view.events if e.kind is not EventKind.NOTE],
    }  # fmt: skip


def conflict(err: OwnershipConflict) -> JSONResponse:
    current = err.current
    return JSONResponse(
        status_code=409,
        content={"error": "conflict", "detail": str(err), "state": str(current.state), "owner": current.agent},
    )


class AgentApi:
    def __init__(
        self,
        desk: Callable[[], AgentDesk],
        directory: AgentDirectory,
        presence: AgentPresence,
        feed: InboxFeed,
        deliver: Deliver,
    ) -> None:
        self._desk = desk
        self._directory = directory
        self._presence = presence
        self._feed = feed
        self._deliver = deliver

    def agent(self, request: Request) -> str:
        """The calling agent (a FastAPI dependency); 401 without a valid bearer token."""
        name = self._directory.agent_for(request.headers.get("authorization"))
        if name is None:
            raise HTTPException(
                401, "send Authorization: Bearer <token> with an agent's token", headers={"WWW-Authenticate": "Bearer"}
            )
        self._presence.seen(name)
        return name

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/agent")
        Agent = Annotated[str, Depends(self.agent)]

        @router.get("/me")
        async def me(agent: Agent) -> dict[str, Any]:
            return {"agent": agent, "online": self._presence.online()}

        @router.get("/conversations")
        async def listing(agent: Agent, state: Annotated[Owner, Query()] = Owner.QUEUED) -> list[dict[str, Any]]:
            return [listed_out(item) for item in await self._desk().listing(state)]

        @router.get("/conversations/{conversation_id}")
        async def detail(conversation_id: str, agent: Agent) -> dict[str, Any]:
            view = await self._desk().view(conversation_id)
            if view is None:
                raise HTTPException(404, "unknown conversation")
            return view_out(view)

        @router.post("/conversations/{conversation_id}/claim")
        async def claim(conversation_id: str, agent: Agent) -> Any:
            return await self._change(conversation_id, lambda: self._desk().claim(conversation_id, agent))

        @router.post("/conversations/{conversation_id}/release")
        async def release(conversation_id: str, agent: Agent) -> Any:
            return await self._change(conversation_id, lambda: self._desk().release(conversation_id, agent))

        @router.post("/conversations/{conversation_id}/messages")
        async def message(conversation_id: str, body: AgentText, agent: Agent) -> Any:
            try:
                turn = await self._desk().reply(conversation_id, agent, body.text)
            except OwnershipConflict as err:
                return conflict(err)
            except UnknownConversation:
                raise HTTPException(404, "unknown conversation") from None
            found = await self._desk().owner(conversation_id)
            delivered = await self._deliver(found[0].channel, turn) if found is not None else False
            return turn_out(turn) | {"delivered": delivered}

        @router.post("/conversations/{conversation_id}/notes")
        async def note(conversation_id: str, body: AgentText, agent: Agent) -> Any:
            try:
                return note_out(await self._desk().note(conversation_id, agent, body.text))
            except OwnershipConflict as err:
                return conflict(err)
            except UnknownConversation:
                raise HTTPException(404, "unknown conversation") from None

        @router.post("/conversations/{conversation_id}/approve")
        async def approve(conversation_id: str, body: ApprovalTarget, agent: Agent) -> dict[str, Any]:
            try:
                new = await self._desk().approve(conversation_id, agent, body.turn)
            except ApprovalError as err:
                raise HTTPException(404, str(err)) from None
            return {"conversation": conversation_id, "turn": body.turn, "approved_by": agent, "new": new}

        @router.get("/events")
        async def events(agent: Agent) -> StreamingResponse:
            return StreamingResponse(self._stream(agent), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})  # fmt: skip

        return router

    async def _change(self, conversation_id: str, change: Callable[[], Awaitable[Ownership]]) -> Any:
        try:
            return ownership_out(conversation_id, await change())
        except OwnershipConflict as err:
            return conflict(err)
        except UnknownConversation:
            raise HTTPException(404, "unknown conversation") from None

    async def _stream(self, agent: str) -> AsyncIterator[str]:
        """Server-sent events: one `data:` line per change; a comment line every FEED_PING_S keeps proxies
        from closing it. While it is open the agent counts as online. It ends when the process stops."""
        queue = self._feed.subscribe()
        self._presence.open_feeds[agent] = self._presence.open_feeds.get(agent, 0) + 1
        try:
            yield ": connected\n\n"
            while not self._feed.closed:
                try:
                    event = await asyncio.wait_for(queue.get(), FEED_PING_S)
                except TimeoutError:
                    self._presence.seen(agent)
                    yield ": ping\n\n"
                    continue
                if event["kind"] == FEED_CLOSED:
                    break
                yield f"data: {json.dumps(event)}\n\n"
        finally:
            self._feed.unsubscribe(queue)
            self._presence.open_feeds[agent] -= 1
