"""What agents do with conversations: claim, release, reply, note, and read one with its summary.

Channel-agnostic: a reply is stored here, and the serving floor hands it to the customer's channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.conversation.ledger import ConversationLedger, Listed
from bot.conversation.state import Event, EventKind, Owner, Ownership, OwnershipConflict, Trigger
from bot.conversation.summary import transcript_summary
from bot.storage.store import Conversation, ConversationStore
from bot.storage.turns import Turn

Notify = Callable[[str, str], None]  # (conversation id, what happened): for the inbox's live view


@dataclass(frozen=True)
class ConversationView:
    conversation: Conversation
    ownership: Ownership
    turns: list[Turn]
    events: list[Event]
    summary: str


class AgentDesk:
    def __init__(self, store: ConversationStore, notify: Notify, history_limit: int = 500) -> None:
        self._store = store
        self._ledger: ConversationLedger = store.ledger
        self._notify = notify
        self._history_limit = history_limit

    async def listing(self, state: Owner) -> list[Listed]:
        return await self._ledger.listing(state)

    async def claim(self, conversation_id: str, agent: str) -> Ownership:
        """Take a queued conversation, or pull one the bot is handling. Claiming one's own is a no-op;
        one another agent owns raises OwnershipConflict (of two agents claiming at once, one wins)."""
        current = await self._ledger.ownership(conversation_id)
        if current.state is Owner.AGENT and current.agent == agent:
            return current
        if current.state is Owner.BOT:
            kind, allowed, trigger = EventKind.PULL, (Owner.BOT,), str(Trigger.AGENT_PULL)
        else:
            kind, allowed, trigger = EventKind.CLAIM, (Owner.QUEUED,), None
        changed = await self._ledger.transition(
            conversation_id, Owner.AGENT, kind, agent, allowed, agent=agent, trigger=trigger
        )
        self._notify(conversation_id, str(kind))
        return changed

    async def release(self, conversation_id: str, agent: str) -> Ownership:
        """Give the conversation back to the bot: one the agent owns, or one still waiting in the queue."""
        current = await self._ledger.ownership(conversation_id)
        if current.state is Owner.BOT:
            raise OwnershipConflict(conversation_id, current, "release it")
        owned_by = agent if current.state is Owner.AGENT else None
        changed = await self._ledger.transition(
            conversation_id, Owner.BOT, EventKind.RELEASE, agent, (current.state,), owned_by=owned_by
        )
        self._notify(conversation_id, str(EventKind.RELEASE))
        return changed

    async def approve(self, conversation_id: str, agent: str, turn_id: int | None = None) -> bool:
        """Approve the conversation (or one reply in it) for the dialogue model's training set; False if it
        was approved already. Raises ApprovalError for a conversation or reply that is not in the store."""
        return await self._store.approvals.approve(conversation_id, turn_id, agent)

    async def reply(self, conversation_id: str, agent: str, text: str) -> Turn:
        """Store a reply from the agent who owns the conversation (the caller sends it to the customer)."""
        current = await self._ledger.ownership(conversation_id)
        if current.state is not Owner.AGENT or current.agent != agent:
            raise OwnershipConflict(conversation_id, current, "reply: claim it first")
        turn = await self._ledger.record_agent_reply(conversation_id, agent, text)
        self._notify(conversation_id, "reply")
        return turn

    async def note(self, conversation_id: str, agent: str, text: str) -> Event:
        """An internal note, never shown to the customer; not on a conversation another agent owns."""
        current = await self._ledger.ownership(conversation_id)
        if current.state is Owner.AGENT and current.agent != agent:
            raise OwnershipConflict(conversation_id, current, "add a note")
        event = await self._ledger.add_note(conversation_id, agent, text)
        self._notify(conversation_id, str(EventKind.NOTE))
        return event

    async def owner(self, conversation_id: str) -> tuple[Conversation, Ownership] | None:
        """The conversation (its channel) and who owns it, without its transcript."""
        conversation = await self._store.conversation(conversation_id)
        if conversation is None:
            return None
        return conversation, await self._ledger.ownership(conversation_id)

    async def view(self, conversation_id: str) -> ConversationView | None:
        conversation = await self._store.conversation(conversation_id)
        if conversation is None:
            return None
        ownership = await self._ledger.ownership(conversation_id)
        turns = await self._store.turns(conversation_id, limit=self._history_limit)
        events = await self._ledger.events(conversation_id)
        summary = conversation.handoff_summary or transcript_summary(turns, ownership)
        return ConversationView(conversation, ownership, turns, events, summary)
