"""The conversation layer in the store: ownership and its events, slots, notes, and the replies people write.

Shares the store's database (bot.storage.store.ConversationStore.ledger). Every change of owner is one
conditional UPDATE: of two agents claiming at once exactly one matches, in one process or several.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.answering.guard import storable
from bot.conversation.state import Event, EventKind, Owner, Ownership, OwnershipConflict
from bot.storage.sql import Database, Row, Sql
from bot.storage.turns import Turn, select_turns
from bot.types import AnsweredBy


@dataclass(frozen=True)
class Listed:
    """One conversation in an inbox listing."""

    id: str
    channel: str
    state: Owner
    owner: str | None
    trigger: str | None
    waiting_since: float | None  # when it entered its state (queued: since when it waits)
    last_text: str | None  # the customer's last message


class UnknownConversation(LookupError):
    pass


class ConversationLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ownership(self, conversation_id: str) -> Ownership:
        return await _ownership_in(self._db, conversation_id)

    async def transition(
        self,
        conversation_id: str,
        to: Owner,
        kind: EventKind,
        actor: str,
        allowed_from: tuple[Owner, ...],
        agent: str | None = None,
        trigger: str | None = None,
        owned_by: str | None = None,
    ) -> Ownership:
        """Move to `to` if the conversation is in one of `allowed_from` (and, with `owned_by`, that agent
        owns it); record the event. Raises OwnershipConflict otherwise, UnknownConversation for no such id."""
        now = time.time()
        states = ",".join("?" * len(allowed_from))
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE conversations SET owner_state = ?, owner_agent = ?, owner_since = ?, last_hold_at = NULL, "
                f"owner_trigger = COALESCE(?, owner_trigger), handoff = CASE WHEN ? = 1 THEN 1 ELSE handoff END "
                f"WHERE id = ? AND owner_state IN ({states}) AND (CAST(? AS TEXT) IS NULL OR owner_agent = ?)",
                (str(to), agent, now, trigger, int(to is not Owner.BOT), conversation_id,
                 *(str(s) for s in allowed_from), owned_by, owned_by),
            )  # fmt: skip
            if changed == 1:
                await _insert_event(tx, conversation_id, kind, actor, now, trigger=trigger)
                return await _ownership_in(tx, conversation_id)
        current = await self.ownership(conversation_id)
        raise OwnershipConflict(conversation_id, current, f"{kind} it")

    async def mark_held(self, user_turn_id: int) -> None:
        """A customer message kept for a person: a restart must not have the bot answer it."""
        await self._db.execute("UPDATE turns SET held = 1 WHERE id = ?", (user_turn_id,))

    async def held(self, user_turn_id: int) -> bool:
        row = await self._db.fetchone("SELECT held FROM turns WHERE id = ?", (user_turn_id,))
        return row is not None and bool(row["held"])

    async def hold_sent(self, conversation_id: str, at: float) -> None:
        await self._db.execute("UPDATE conversations SET last_hold_at = ? WHERE id = ?", (at, conversation_id))

    async def set_slot(self, conversation_id: str, name: str, value: str, actor: str) -> None:
        async with self._db.transaction() as tx:
            slots = (await _ownership_in(tx, conversation_id)).slots | {name: storable(value)}
            await tx.execute("UPDATE conversations SET slots = ? WHERE id = ?", (json.dumps(slots), conversation_id))
            await _insert_event(tx, conversation_id, EventKind.CONTACT, actor, time.time(), text=f"{name}: {value}")

    async def update_form(
        self, conversation_id: str, form: str | None, slots: Mapping[str, Any], reset: bool, actor: str, why: str
    ) -> Ownership:
        """Set the form being filled (None: none) and merge `slots` (a None value empties one; `reset`
        empties the others first), with one event saying why."""
        async with self._db.transaction() as tx:
            current = await _ownership_in(tx, conversation_id)
            merged = {} if reset else dict(current.slots)
            for name, value in slots.items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value if isinstance(value, bool | int | float) else storable(str(value))
            await tx.execute(
                "UPDATE conversations SET slots = ?, active_form = ? WHERE id = ?",
                (json.dumps(merged), form, conversation_id),
            )
            await _insert_event(tx, conversation_id, EventKind.FORM, actor, time.time(), trigger=form, text=why)
            return await _ownership_in(tx, conversation_id)

    async def add_note(self, conversation_id: str, agent: str, text: str) -> Event:
        async with self._db.transaction() as tx:
            await _ownership_in(tx, conversation_id)  # raises for an unknown conversation
            event_id = await _insert_event(tx, conversation_id, EventKind.NOTE, agent, time.time(), text=storable(text))
        return next(e for e in await self.events(conversation_id) if e.id == event_id)

    async def events(self, conversation_id: str) -> list[Event]:
        rows = await self._db.fetch("SELECT * FROM events WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [
            Event(row["id"], row["conversation_id"], EventKind(row["kind"]), row["actor"], row["created_at"],
                  row["trigger"], row["text"])
            for row in rows
        ]  # fmt: skip

    async def record_agent_reply(self, conversation_id: str, agent: str, text: str) -> Turn:
        """A reply written by a person, as a bot-side turn answered by 'human' with the agent as author."""
        now = time.time()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO turns (conversation_id, role, text, created_at, answered_by, citations, quick_replies, "
                "timings, author) VALUES (?, 'bot', ?, ?, ?, '[]', '[]', '{}', ?) RETURNING id",
                (conversation_id, storable(text), now, str(AnsweredBy.HUMAN), agent),
            )
            await tx.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            turn_id = row["id"] if row is not None else 0
            (turn,) = await select_turns(tx, "SELECT * FROM turns WHERE id = ?", (turn_id,))
        return turn

    async def undelivered_from_people(self, channel: str, since: float) -> list[Turn]:
        """Agents' replies on `channel` since `since` whose send was never confirmed, oldest first."""
        return await select_turns(
            self._db,
            "SELECT t.* FROM turns t JOIN conversations c ON c.id = t.conversation_id WHERE t.role = 'bot' "
            "AND t.answered_by = ? AND t.delivered_at IS NULL AND c.channel = ? AND t.created_at >= ? ORDER BY t.id",
            (str(AnsweredBy.HUMAN), channel, float(since)),
        )

    async def last_user_turn(self, conversation_id: str) -> Turn | None:
        turns = await select_turns(
            self._db,
            "SELECT * FROM turns WHERE conversation_id = ? AND role = 'user' ORDER BY id DESC LIMIT 1",
            (conversation_id,),
        )
        return turns[0] if turns else None

    async def listing(self, state: Owner, limit: int = 200) -> list[Listed]:
        """Conversations in `state`, longest waiting first, each with the customer's last message."""
        rows = await self._db.fetch(
            "SELECT c.id, c.channel, c.owner_state, c.owner_agent, c.owner_trigger, c.owner_since, "
            "(SELECT text FROM turns t WHERE t.conversation_id = c.id AND t.role = 'user' ORDER BY t.id DESC "
            "LIMIT 1) AS last_text FROM conversations c WHERE c.owner_state = ? "
            "ORDER BY COALESCE(c.owner_since, c.created_at), c.id LIMIT ?",
            (str(state), limit),
        )
        return [
            Listed(row["id"], row["channel"], Owner(row["owner_state"]), row["owner_agent"], row["owner_trigger"],
                   row["owner_since"], row["last_text"])
            for row in rows
        ]  # fmt: skip

    async def count(self, state: Owner) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) AS n FROM conversations WHERE owner_state = ?", (str(state),))
        return int(row["n"]) if row is not None else 0


async def _ownership_in(db: Sql, conversation_id: str) -> Ownership:
    row = await db.fetchone(
        "SELECT owner_state, owner_agent, owner_trigger, owner_since, last_hold_at, slots, active_form "
        "FROM conversations WHERE id = ?",
        (conversation_id,),
    )
    if row is None:
        raise UnknownConversation(conversation_id)
    return _ownership(row)


async def _insert_event(
    db: Sql, conversation_id: str, kind: EventKind, actor: str, at: float, trigger: str | None = None,
    text: str | None = None,
) -> int:  # fmt: skip
    row = await db.fetchone(
        "INSERT INTO events (conversation_id, kind, actor, trigger, text, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        (conversation_id, str(kind), actor, trigger, text, at),
    )
    return int(row["id"]) if row is not None else 0


def _ownership(row: Row) -> Ownership:
    return Ownership(
        state=Owner(row["owner_state"] or Owner.BOT),
        agent=row["owner_agent"],
        trigger=row["owner_trigger"],
        since=row["owner_since"],
        last_hold_at=row["last_hold_at"],
        slots=json.loads(row["slots"] or "{}"),
        active_form=row["active_form"],
    )
