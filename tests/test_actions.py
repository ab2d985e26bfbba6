"""The rasa-sdk webhook contract against real action servers: the demo store's actions, and actions
written for Rasa that use the contract's every part (slots, reset, follow-up, loops, buttons, errors)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.actions.client import ActionClient, ActionError, Failure
from bot.actions.contract import UNCHANGED, Domain, TrackerState
from bot.config import ActionsSettings
from tests.action_server import ActionServer

TOKEN = "action-token-for-tests-0123"
DOMAIN = Domain(slots=("order_number", "email", "order_status", "name"), forms={"order_form": ("order_number",)},
                responses={"utter_anything_else": "Anything else I can help with?"})  # fmt: skip


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActionServer]:
    with ActionServer("actions", tmp_path_factory.mktemp("demo-actions"), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def rasa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActionServer]:
    with ActionServer("tests.rasa_actions", tmp_path_factory.mktemp("rasa-actions")) as server:
        yield server


def client(server: ActionServer, token: str | None = TOKEN, timeout_s: float = 10.0) -> ActionClient:
    settings = ActionsSettings(url=server.url, timeout_s=timeout_s)
    return ActionClient(settings, {settings.token_env: token} if token else {})


def run(server: ActionServer, action: str, slots: dict[str, str], text: str = "hi", **options: object) -> object:
    async def call() -> object:
        actions = client(server, **options)  # type: ignore[arg-type]
        try:
            return await actions.run(action, TrackerState("web:c1", slots, text), DOMAIN)
        finally:
            await actions.aclose()

    return asyncio.run(call())


def test_the_demo_server_lists_its_actions_and_wants_the_shared_secret(demo_server: ActionServer) -> None:
    async def check() -> tuple[str | None, set[str], Failure]:
        with_token, without = client(demo_server), client(demo_server, token=None)
        try:
            health, names = await with_token.health(), await with_token.names()
            with pytest.raises(ActionError) as refused:
                await without.names()
            assert await without.health() is None  # /health stays open for load balancers
            return health, names, refused.value.failure
        finally:
            await with_token.aclose()
            await without.aclose()

    health, names, failure = asyncio.run(check())
    assert health is None and names == {"action_order_status", "action_start_return", "action_leave_message"}
    assert failure is Failure.UNAUTHORIZED


def test_order_status_needs_the_right_email_and_gives_status_carrier_and_tracking(demo_server: ActionServer) -> None:
    found = run(demo_server, "action_order_status", {"order_number": "NW-10023", "email": "jane@example.com"})
    (text,) = found.texts  # type: ignore[attr-defined]
    assert "NW-10023" in text.text and "shipped" in text.text and "https://www.dhl.com/track?id=" in text.text
    assert found.slots == {"order_status": "shipped"}  # type: ignore[attr-defined]
    wrong = run(demo_server, "action_order_status", {"order_number": "NW-10023", "email": "eve@example.com"})
    (refusal,) = wrong.texts  # type: ignore[attr-defined]
    assert "couldn't find" in refusal.text and "shipped" not in refusal.text and "dhl" not in refusal.text.lower()


def test_a_return_and_a_message_for_the_team_are_stored(demo_server: ActionServer) -> None:
    slots = {"order_number": "NW-10023", "email": "jane@example.com", "return_item": "Ridgeline down jacket",
             "return_reason": "too small"}  # fmt: skip
    started = run(demo_server, "action_start_return", slots)
    number = started.slots["return_number"]  # type: ignore[attr-defined]

    async def twice() -> list[object]:
        actions = client(demo_server)
        tracker = TrackerState("web:c2", slots, "too small", message_id="web:c2:7")
        try:
            return [(await actions.run("action_start_return", tracker, DOMAIN)).slots for _ in range(2)]
        finally:
            await actions.aclose()

    first, second = asyncio.run(twice())
    assert first == second  # the same message (message_id) gets the same return, stored once
    ticket = run(demo_server, "action_leave_message", {"email": "jane@example.com", "message_for_team": "call me"})
    with sqlite3.connect(demo_server.orders_db) as db:
        assert db.execute("SELECT order_number, reason FROM returns WHERE number = ?", (number,)).fetchone() == (
            "NW-10023", "too small")  # fmt: skip
        assert db.execute("SELECT email, message, conversation FROM tickets WHERE number = ?",
                          (ticket.slots["ticket_number"],)).fetchone() == ("jane@example.com", "call me", "web:c1")  # type: ignore[attr-defined]  # fmt: skip
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] >= 20


def test_an_action_written_for_rasa_works_unchanged(rasa_server: ActionServer) -> None:
    greeted = run(rasa_server, "action_greet_by_name", {"name": "Jane"}, text="hello", token=None)
    first, second = greeted.texts  # type: ignore[attr-defined]
    assert first.text == "Hello Jane, you said: hello" and [b.title for b in first.buttons] == ["Track an order"]
    assert second.text == "Anything else I can help with?"  # a named response, from the domain
    assert greeted.slots == {"greeted": True} and greeted.followup == "action_listen"  # type: ignore[attr-defined]
    everything = run(rasa_server, "action_everything", {"kept": "no", "name": "Jane"}, token=None)
    assert everything.reset_slots and everything.slots == {"kept": "yes"}  # type: ignore[attr-defined]
    assert everything.active_loop is None and everything.active_loop is not UNCHANGED  # type: ignore[attr-defined]
    assert everything.texts[0].text.startswith("domain slots: 4")  # type: ignore[attr-defined]


def test_unknown_rejected_raising_and_slow_actions_fail_clearly_within_the_limit(rasa_server: ActionServer) -> None:
    for action, failure in (("action_nobody_wrote", Failure.UNKNOWN), ("action_rejects", Failure.REJECTED),
                            ("action_raises", Failure.FAILED)):  # fmt: skip
        with pytest.raises(ActionError) as raised:
            run(rasa_server, action, {}, token=None)
        assert raised.value.failure is failure and raised.value.action == action
    started = time.monotonic()
    with pytest.raises(ActionError) as slow:
        run(rasa_server, "action_slow", {}, token=None, timeout_s=1.0)
    assert slow.value.failure is Failure.TIMEOUT and time.monotonic() - started < 1.0 + 1.0


def test_a_restarted_server_gets_the_domain_again_449(tmp_path: Path) -> None:
    async def twice(server: ActionServer, actions: ActionClient) -> list[str]:
        said = [(await actions.run("action_everything", TrackerState("c", {}, "x"), DOMAIN)).texts[0].text]
        server.stop()
        await asyncio.to_thread(server.start)  # a new process: it knows no domain digest
        said.append((await actions.run("action_everything", TrackerState("c", {}, "x"), DOMAIN)).texts[0].text)
        await actions.aclose()
        return said

    with ActionServer("tests.rasa_actions", tmp_path) as server:
        said = asyncio.run(twice(server, client(server, token=None)))
    assert said == ["domain slots: 4; loop: {}", "domain slots: 4; loop: {}"]


def test_a_server_that_is_down_is_unreachable_at_once(tmp_path: Path) -> None:
    server = ActionServer("actions", tmp_path)  # never started: nothing listens on its port
    with pytest.raises(ActionError) as raised:
        run(server, "action_order_status", {})
    assert raised.value.failure is Failure.UNREACHABLE
