"""`bot review`: what customers asked and what the bot did, read back from the real conversation store."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from typer.testing import CliRunner

from bot.config import load_config
from bot.evaluation.scoring import load_cases
from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore
from bot.types import Message
from serving.cli import app
from serving.runtime import running_bot
from tests.conftest import ConfigFactory

TWO_WEEKS = 14 * 86400


def chat(config_path: Path, embedder: Embedder, messages: list[tuple[str, float]]) -> None:
    """Each (text, age in seconds) through the real pipeline, into the real store, in one conversation."""

    async def main() -> None:
        async with running_bot(load_config(config_path), embedder) as bot:
            for text, age in messages:
                await bot.pipeline.handle(Message("c-1", "web", "u-1", text, received_at=time.time() - age))

    anyio.run(main)


def test_review_lists_what_the_bot_did_and_drafts_eval_cases(
    write_config: ConfigFactory, embedder: Embedder, tmp_path: Path
) -> None:
    config = write_config()
    chat(
        config,
        embedder,
        [
            ("how can i track my order", 60),
            ("can you check where my zalando order is", 50),  # like an out-of-scope example
            ("how do I get to your office by bike", 40),  # not sure
            ("hi", 30),  # small talk: nothing to label
            ("How can I  track my order", 20),  # the same text again, but for case and spacing: one case
            ("do you ship to norway", TWO_WEEKS),  # older than the default week
        ],
    )
    runner = CliRunner()
    result = runner.invoke(app, ["review", "--config", str(config), "--cases", str(tmp_path / "draft.csv")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    listed = [line for line in lines if line.startswith("20")]
    assert [line.split("  ")[-1].strip() for line in listed] == [  # newest first, spacing tidied
        "How can I track my order",
        "hi",
        "how do I get to your office by bike",
        "can you check where my zalando order is",
        "how can i track my order",
    ]
    assert "declined: out_of_scope (other-companies)" in listed[3] and "declined: not_sure" in listed[2]
    assert "track-order" in listed[4] and "greeting" in listed[1]
    assert lines[len(listed)] == (
        "5 messages, 2 answered from the knowledge base, 1 declined: not_sure, 1 declined: out_of_scope, "
        "1 other (small talk, handoff, invalid, errors) in the last 7 days"
    )
    drafted = [(case.text, case.expected) for case in load_cases(tmp_path / "draft.csv")]
    assert drafted == [
        ("How can I  track my order", "track-order"),
        ("how do I get to your office by bike", "out_of_scope"),
        ("can you check where my zalando order is", "out_of_scope"),
    ]

    declined = runner.invoke(app, ["review", "--config", str(config), "--declined", "--days", "30"])
    assert declined.exit_code == 0, declined.output
    assert "zalando" in declined.output and "office by bike" in declined.output
    assert "track my order" not in declined.output and "norway" not in declined.output
    assert "6 messages" in declined.output and "2 shown" in declined.output


def test_a_message_whose_reply_was_never_stored_is_listed_as_such(write_config: ConfigFactory, tmp_path: Path) -> None:
    config = write_config()

    async def record_only_the_message() -> None:
        store = await ConversationStore.open(load_config(config).store.path)
        await store.record_user_turn(Message("c-2", "web", "u-2", "where is my parcel"))
        await store.close()

    anyio.run(record_only_the_message)
    result = CliRunner().invoke(app, ["review", "--config", str(config), "--cases", str(tmp_path / "draft.csv")])
    assert result.exit_code == 0, result.output
    assert "no reply stored" in result.output and "where is my parcel" in result.output
    assert "1 with no reply stored" in result.output
    assert (tmp_path / "draft.csv").read_text() == "text,expected\n"  # nothing to label yet
