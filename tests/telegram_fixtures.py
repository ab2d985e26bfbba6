"""Fixtures and helpers for the Telegram tests: the loopback Bot API and a bot serving it (a pytest plugin)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from tests.conftest import ConfigFactory, LiveServer
from tests.telegram_api import FakeBotApi

SECRET = "s3cret-webhook-token"


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as server:
        yield server


def telegram_config(write_config: ConfigFactory, api: FakeBotApi, **telegram: Any) -> Config:
    settings = {"enabled": True, "base_url": api.base_url, "poll_timeout": 1.0, **telegram}
    return load_config(write_config(channels={"telegram": settings}))


def env(api: FakeBotApi) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": api.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}


@pytest.fixture
def polling_bot(
    write_config: ConfigFactory, api: FakeBotApi, embedder: Embedder
) -> Iterator[tuple[FakeBotApi, Config]]:
    config = telegram_config(write_config, api)
    with LiveServer(config, embedder, environ=env(api)):
        yield api, config


def user_turns(config: Config) -> list[tuple[str, str]]:
    with sqlite3.connect(config.store.path) as db:
        return db.execute("SELECT conversation_id, text FROM turns WHERE role = 'user' ORDER BY id").fetchall()
