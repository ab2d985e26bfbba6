"""Every message is stored before its channel is acknowledged, and answered exactly once, across `kill -9`.

Telegram never sends again an update it has seen acknowledged (a webhook's 200, or in polling mode an
offset past it), so the message must be in the store by then. While the server is down the loopback
Bot API refuses every sendMessage (Telegram unreachable), so nothing can be delivered before the kill;
after the restart each stored message must be answered once, and no more.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bot.config import Config, load_config
from tests.botprocess import BotProcess, wait_until
from tests.conftest import ConfigFactory, free_port
from tests.telegram_api import FakeBotApi
from tests.telegram_fixtures import SECRET, env

CUSTOMERS = 30


def telegram_config(write_config: ConfigFactory, api: FakeBotApi, port: int, **telegram: Any) -> Path:
    settings = {"enabled": True, "base_url": api.base_url, "poll_timeout": 1.0, **telegram}
    return write_config(server={"port": port}, channels={"telegram": settings})


def stored_user_turns(config: Config) -> list[str]:
    with sqlite3.connect(config.store.path) as db:
        return [row[0] for row in db.execute("SELECT conversation_id FROM turns WHERE role = 'user' ORDER BY id")]


def all_delivered(config: Config, count: int) -> bool:
    """The store's own account: `count` replies, each confirmed sent (so nothing is left to send)."""
    with sqlite3.connect(config.store.path) as db:
        rows = db.execute("SELECT delivered_at FROM turns WHERE role = 'bot'").fetchall()
    return len(rows) == count and all(delivered is not None for (delivered,) in rows)


def questions(api: FakeBotApi) -> list[dict[str, Any]]:
    """One question from each of CUSTOMERS private chats."""
    return [api.user_message("How can I track my order?", chat_id=1000 + n, user_id=1000 + n) for n in range(CUSTOMERS)]


def assert_answered_once_after_a_restart(
    api: FakeBotApi, config_path: Path, port: int, tmp_path: Path, config: Config
) -> None:
    api.sends_down = False
    with BotProcess(config_path, port, tmp_path / "second.log", env(api)):
        wait_until(lambda: all_delivered(config, CUSTOMERS), f"{CUSTOMERS} replies confirmed sent", 120)
        per_chat = Counter(call.params["chat_id"] for call in api.delivered())
    assert per_chat == {str(1000 + n): 1 for n in range(CUSTOMERS)}
    assert all("tracking link" in call.params["text"] for call in api.delivered())


def crash_and_restart(
    write_config: ConfigFactory, tmp_path: Path, crash: Callable[[FakeBotApi, BotProcess], None], **telegram: Any
) -> None:
    """A first run that `crash` feeds and kills while Telegram is unreachable; then a restart, and its checks."""
    port = free_port()
    with FakeBotApi() as api:
        api.sends_down = True
        config_path = telegram_config(write_config, api, port, **telegram)
        config = load_config(config_path)
        first = BotProcess(config_path, port, tmp_path / "first.log", env(api)).start()
        try:
            crash(api, first)
        finally:
            first.__exit__()
        assert sorted(stored_user_turns(config)) == sorted(f"telegram:{1000 + n}" for n in range(CUSTOMERS))
        assert api.delivered() == []  # Telegram was unreachable: nothing went out before the kill
        assert_answered_once_after_a_restart(api, config_path, port, tmp_path, config)


def test_webhook_updates_are_stored_before_the_200_and_answered_once_after_kill_9(
    write_config: ConfigFactory, tmp_path: Path
) -> None:
    def crash(api: FakeBotApi, first: BotProcess) -> None:
        def post(update: dict[str, Any]) -> int:
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            return httpx.post(f"{first.url}/telegram/webhook", json=update, headers=headers, timeout=60).status_code

        updates = [{"update_id": 9000 + n, "message": m} for n, m in enumerate(questions(api))]
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(post, updates))
        first.kill()  # as soon as every update has its 200
        assert statuses == [200] * CUSTOMERS

    crash_and_restart(write_config, tmp_path, crash, mode="webhook", webhook_url="https://bot.example/telegram/webhook")


def test_polling_updates_are_stored_before_their_offset_is_confirmed_and_answered_once_after_kill_9(
    write_config: ConfigFactory, tmp_path: Path
) -> None:
    def crash(api: FakeBotApi, first: BotProcess) -> None:
        last = max(api.push_update({"message": m})["update_id"] for m in questions(api))
        wait_until(lambda: api.confirmed_below > last, "getUpdates to confirm every update", 60)
        first.kill()  # as soon as Telegram would forget them

    crash_and_restart(write_config, tmp_path, crash)
