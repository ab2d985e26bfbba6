"""The store's contract, run on both implementations (SQLite and a real PostgreSQL 15 on loopback): turns,
delivery claims, what a restart still owes, ownership and its events, slots and forms, approvals, stats."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest

from bot.conversation.state import EventKind, Owner, OwnershipConflict
from bot.storage.approvals import ApprovalError
from bot.storage.sql import StoreError
from bot.types import AnsweredBy, Citation, Message, MessageKind, Reply
from tests.conftest import StoreLocation

_CITED = Reply(
    text="Returns are free within 30 days [1].",
    answered_by=AnsweredBy.KNOWLEDGE,
    confidence=0.87,
    citations=(Citation("returns", "faq", "How do I return an item?", "faq.yml", 12),),
    quick_replies=("Refund times", "Talk to a person"),
    source_id="returns",
    reason="answer",
)


def test_turns_round_trip_with_every_field(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            message = Message("web:1", "web", "u1", "how do I return?", {"page": "/shop"}, 1000.25, "m-1",
                              MessageKind.TEXT)  # fmt: skip
            asked = await store.record_user_turn(message)
            answered = await store.record_bot_turn("web:1", _CITED, {"total_ms": 12.3456}, reply_to=asked)
            user, bot = await store.turns("web:1")
            assert (user.id, user.role, user.text, user.created_at, user.metadata, user.client_message_id) == (
                asked, "user", "how do I return?", 1000.25, {"page": "/shop"}, "m-1")  # fmt: skip
            assert bot.id == answered and bot.reply_to == asked and bot.as_reply() == _CITED
            assert bot.timings == {"total_ms": 12.346} and bot.delivered_at is None
            assert await store.turn("web:1", answered) == bot
            assert await store.turn("web:2", answered) is None  # another conversation's turn
            assert await store.turn("web:1", 2**64) is None
            assert await store.reply_to(asked) == bot
            assert await store.user_turn_by_client_id("web:1", "m-1") == user
            conversation = await store.conversation("web:1")
            assert conversation is not None and (conversation.channel, conversation.user_id) == ("web", "u1")
            assert not conversation.handoff and await store.conversation("web:9") is None
            ((exchange_user, exchange_bot),) = await store.exchanges(0, 10)
            assert (exchange_user.id, exchange_bot and exchange_bot.id) == (asked, answered)
        finally:
            await store.close()

    anyio.run(scenario)


def test_turns_page_by_limit_and_after(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            ids = [await store.record_user_turn(Message("c", "web", "u", f"message {n}")) for n in range(5)]
            assert [t.id for t in await store.turns("c", limit=2)] == ids[3:]
            assert [t.id for t in await store.turns("c", after=ids[1])] == ids[2:]
            assert [t.id for t in await store.turns("c", limit=1, after=ids[0])] == ids[4:]
        finally:
            await store.close()

    anyio.run(scenario)


@pytest.mark.parametrize("text", ["\udfff lone surrogate", "nul \x00 byte", "emoji 🙂 and ümlauts"])
def test_any_text_can_be_stored(store_location: StoreLocation, text: str) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            await store.record_user_turn(Message("c", "web", text, text))
            await store.record_bot_turn("c", Reply(text=text, answered_by=AnsweredBy.FALLBACK), {})
            turns = await store.turns("c")
            assert [len(turn.text) for turn in turns] == [len(text), len(text)]
        finally:
            await store.close()

    anyio.run(scenario)


def test_a_client_message_id_is_stored_once_even_when_sent_twice_at_once(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            message = Message("tg:1", "telegram", "1", "hello", client_message_id="update-7")
            first, second = await asyncio.gather(store.record_user_turn(message), store.record_user_turn(message))
            assert first == second
            assert [t.id for t in await store.turns("tg:1")] == [first]
            other = await store.record_user_turn(Message("tg:2", "telegram", "2", "hi", client_message_id="update-7"))
            assert other != first  # the id is the sender's: unique within one conversation only
        finally:
            await store.close()

    anyio.run(scenario)


def test_a_tapped_suggestion_is_read_back_from_its_reply_in_its_conversation_only(
    store_location: StoreLocation,
) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            asked = await store.record_user_turn(Message("telegram:1", "telegram", "1", "returns?"))
            turn = await store.record_bot_turn("telegram:1", _CITED, {}, asked)
            await store.record_user_turn(Message("telegram:2", "telegram", "2", "hello"))
            assert await store.suggestion(turn, 1, "telegram:1") == "Talk to a person"
            assert await store.suggestion(turn, 2, "telegram:1") is None  # no such button
            assert await store.suggestion(turn, 0, "telegram:2") is None  # another conversation's reply
            assert await store.suggestion(asked, 0, "telegram:1") is None  # a customer's message offers nothing
            assert await store.suggestion(2**63, 0, "telegram:1") is None  # past the integers stored: no error
        finally:
            await store.close()

    anyio.run(scenario)


def test_each_reply_is_claimed_for_sending_once_and_a_restart_knows_what_it_owes(
    store_location: StoreLocation,
) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        try:
            answered = await store.record_user_turn(Message("tg:1", "telegram", "1", "answered", received_at=10.0))
            unanswered = await store.record_user_turn(Message("tg:2", "telegram", "2", "lost", received_at=11.0))
            held = await store.record_user_turn(Message("tg:3", "telegram", "3", "for a person", received_at=12.0))
            await store.record_user_turn(Message("web:1", "web", "4", "elsewhere", received_at=13.0))
            await store.ledger.mark_held(held)
            reply = await store.record_bot_turn("tg:1", _CITED, {}, answered)
            assert await store.ledger.held(held) and not await store.ledger.held(answered)

            owed = await store.pending("telegram", 0, undelivered_too=True)
            assert [turn_id for turn_id, _ in owed] == [answered, unanswered]
            assert owed[1][1] == Message("tg:2", "telegram", "2", "lost", {}, 11.0, None, MessageKind.TEXT)
            assert [turn_id for turn_id, _ in await store.pending("telegram", 0, undelivered_too=False)] == [unanswered]
            assert await store.pending("telegram", 11.5, undelivered_too=False) == []

            assert await store.claim_delivery(reply, "process-a")
            assert not await store.claim_delivery(reply, "process-a")  # this sender has it
            assert await store.claim_delivery(reply, "process-b")  # a sender that died: taken over
            await store.release_delivery(reply)
            assert await store.claim_delivery(reply, "process-b")
            await store.mark_delivered(reply)
            assert not await store.claim_delivery(reply, "process-c")  # sent: nobody sends it again
            assert [turn_id for turn_id, _ in await store.pending("telegram", 0, undelivered_too=True)] == [unanswered]
        finally:
            await store.close()

    anyio.run(scenario)


def test_ownership_moves_only_from_the_states_allowed_and_records_each_event(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        ledger = store.ledger
        try:
            await store.record_user_turn(Message("c", "web", "u", "a person please"))
            assert (await ledger.ownership("c")).state is Owner.BOT
            queued = await ledger.transition("c", Owner.QUEUED, EventKind.HANDOFF, "bot", (Owner.BOT,),
                                             trigger="customer_request")  # fmt: skip
            assert (queued.state, queued.trigger) == (Owner.QUEUED, "customer_request")
            conversation = await store.conversation("c")
            assert conversation is not None and conversation.handoff
            with pytest.raises(OwnershipConflict, match="owned by the queued"):
                await ledger.transition("c", Owner.QUEUED, EventKind.HANDOFF, "bot", (Owner.BOT,))
            claims = [
                ledger.transition("c", Owner.AGENT, EventKind.CLAIM, agent, (Owner.QUEUED,), agent=agent)
                for agent in ("alice", "bob")
            ]
            outcomes = await asyncio.gather(*claims, return_exceptions=True)
            winners = [o for o in outcomes if not isinstance(o, BaseException)]
            assert len(winners) == 1 and winners[0].state is Owner.AGENT  # two claims at once: exactly one wins
            owner = winners[0].agent
            other = "bob" if owner == "alice" else "alice"
            with pytest.raises(OwnershipConflict, match=f"agent {owner}"):
                await ledger.transition("c", Owner.BOT, EventKind.RELEASE, other, (Owner.AGENT,), owned_by=other)
            released = await ledger.transition("c", Owner.BOT, EventKind.RELEASE, owner or "", (Owner.AGENT,),
                                               owned_by=owner)  # fmt: skip
            assert (released.state, released.agent, released.trigger) == (Owner.BOT, None, "customer_request")
            events = await ledger.events("c")
            assert [(e.kind, e.actor) for e in events] == [
                (EventKind.HANDOFF, "bot"), (EventKind.CLAIM, owner), (EventKind.RELEASE, owner)
            ]  # fmt: skip
            with pytest.raises(LookupError):
                await ledger.ownership("nobody")
        finally:
            await store.close()

    anyio.run(scenario)


def test_slots_forms_notes_and_agents_replies(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        ledger = store.ledger
        try:
            await store.record_user_turn(Message("c", "web", "u", "where is order 123?", received_at=5.0))
            await ledger.set_slot("c", "email", "ann@example.com", "customer")
            form = await ledger.update_form("c", "order_status", {"order_id": "123", "count": 2}, False, "bot", "asked")
            assert (form.active_form, form.slots) == ("order_status", {"email": "ann@example.com", "order_id": "123",
                                                                        "count": 2})  # fmt: skip
            form = await ledger.update_form("c", None, {"order_id": None}, False, "bot", "done")
            assert (form.active_form, form.slots) == (None, {"email": "ann@example.com", "count": 2})
            form = await ledger.update_form("c", "returns", {"reason": "too small"}, True, "bot", "started")
            assert form.slots == {"reason": "too small"}
            note = await ledger.add_note("c", "alice", "VIP customer")
            assert (note.kind, note.actor, note.text) == (EventKind.NOTE, "alice", "VIP customer")
            assert [e.kind for e in await ledger.events("c")] == [
                EventKind.CONTACT, EventKind.FORM, EventKind.FORM, EventKind.FORM, EventKind.NOTE
            ]  # fmt: skip
            reply = await ledger.record_agent_reply("c", "alice", "It ships tomorrow.")
            assert (reply.answered_by, reply.author, reply.text) == ("human", "alice", "It ships tomorrow.")
            assert [t.id for t in await ledger.undelivered_from_people("web", 0)] == [reply.id]
            await store.mark_delivered(reply.id)
            assert await ledger.undelivered_from_people("web", 0) == []
            last = await ledger.last_user_turn("c")
            assert last is not None and last.text == "where is order 123?"
            with pytest.raises(LookupError):
                await ledger.add_note("nobody", "alice", "lost")
        finally:
            await store.close()

    anyio.run(scenario)


def test_the_inbox_lists_the_longest_waiting_first_with_the_last_message(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        ledger = store.ledger
        try:
            for name in ("first", "second", "third"):
                await store.record_user_turn(Message(name, "web", "u", f"{name} asks"))
                await store.record_user_turn(Message(name, "web", "u", f"{name} asks again"))
            for name in ("second", "first"):
                await ledger.transition(name, Owner.QUEUED, EventKind.HANDOFF, "bot", (Owner.BOT,), trigger="not_sure")
            listed = await ledger.listing(Owner.QUEUED)
            assert [(c.id, c.last_text, c.trigger) for c in listed] == [
                ("second", "second asks again", "not_sure"), ("first", "first asks again", "not_sure")
            ]  # fmt: skip
            assert (await ledger.count(Owner.QUEUED), await ledger.count(Owner.BOT)) == (2, 1)
        finally:
            await store.close()

    anyio.run(scenario)


def test_approvals_are_recorded_once_and_only_for_what_exists(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        approvals = store.approvals
        try:
            asked = await store.record_user_turn(Message("c", "web", "u", "returns?"))
            reply = await store.record_bot_turn("c", _CITED, {}, asked)
            await store.record_user_turn(Message("d", "web", "u", "hi"))
            assert await approvals.approve("c", reply, "alice")
            assert not await approvals.approve("c", reply, "bob")  # twice: nothing changes
            assert await approvals.approved_turns("c") == {reply}
            assert await approvals.approve("d", None, "alice")
            assert await approvals.approved_turns("d") is None  # the whole conversation
            assert [(a.conversation_id, a.turn_id, a.approved_by) for a in await approvals.all()] == [
                ("c", reply, "alice"), ("d", None, "alice")
            ]  # fmt: skip
            with pytest.raises(ApprovalError, match="no conversation 'x'"):
                await approvals.approve("x", None, "alice")
            with pytest.raises(ApprovalError, match=f"no reply with turn id {asked}"):
                await approvals.approve("c", asked, "alice")  # the customer's message is not a reply
            with pytest.raises(ApprovalError, match="no reply with turn id"):
                await approvals.approve("c", 2**64, "alice")
        finally:
            await store.close()

    anyio.run(scenario)


def test_stats_count_replies_handoffs_containment_and_waits(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        ledger = store.ledger
        try:
            for name, channel in (("a", "web"), ("b", "telegram"), ("c", "web")):
                asked = await store.record_user_turn(Message(name, channel, "u", "hello"))
                await store.record_bot_turn(name, _CITED, {}, asked)
            await ledger.transition("b", Owner.QUEUED, EventKind.HANDOFF, "bot", (Owner.BOT,), trigger="not_sure")
            await ledger.transition("b", Owner.AGENT, EventKind.CLAIM, "alice", (Owner.QUEUED,), agent="alice")
            await ledger.record_agent_reply("b", "alice", "Hi, Alice here.")
            stats = await store.stats.snapshot()
            assert stats.replies == {("web", "knowledge"): 2, ("telegram", "knowledge"): 1, ("telegram", "human"): 1}
            assert stats.handoffs == {"not_sure": 1}
            assert (stats.conversations, stats.contained, stats.containment) == (3, 2, 2 / 3)
            assert stats.owners == {"bot": 2, "queued": 0, "agent": 1}
            assert len(stats.claim_waits) == 1 and stats.claim_waits[0] >= 0
            assert len(stats.first_reply_waits) == 1 and stats.first_reply_waits[0] >= stats.claim_waits[0]
            assert (await store.stats.snapshot(since=4e9)).conversations == 0
        finally:
            await store.close()

    anyio.run(scenario)


def test_reopening_keeps_everything_and_applies_each_migration_once(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        await store.record_user_turn(Message("c", "web", "u", "kept"))
        await store.close()
        for _ in range(2):
            store = await store_location.open()
            assert [t.text for t in await store.turns("c")] == ["kept"]
            migrations = await store._db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            assert migrations == [{"version": 1, "name": "schema"}]
            await store.close()

    anyio.run(scenario)


def test_a_store_written_by_a_newer_version_is_refused_and_left_as_it_was(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        store = await store_location.open()
        await store._db.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
            (99, "from_the_future", "0" * 64, 1.0),
        )
        await store.close()
        with pytest.raises(StoreError, match="has migration 0099_from_the_future, which this version does not know"):
            await store_location.open()

    anyio.run(scenario)


def test_processes_opening_one_store_at_once_migrate_it_once(store_location: StoreLocation) -> None:
    async def scenario() -> None:
        stores = await asyncio.gather(*(store_location.open() for _ in range(8)))
        try:
            rows = await stores[0]._db.fetch("SELECT version FROM schema_migrations")
            assert rows == [{"version": 1}]
            await stores[1].record_user_turn(Message("c", "web", "u", json.dumps({"seen": "by all"})))
            for store in stores:
                assert [t.text for t in await store.turns("c")] == ['{"seen": "by all"}']
        finally:
            for store in stores:
                await store.close()

    anyio.run(scenario)
