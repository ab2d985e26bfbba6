"""The fine-tuning set: built in the live prompts over live retrieval, split by item, personal data redacted."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.config import Config, load_config
from bot.knowledge.loader import read_knowledge_dir, vet
from bot.knowledge.model import FaqEntry, KnowledgeItem
from bot.llm.grounding import answer_messages
from bot.llm.prompts import PromptLibrary
from bot.retrieval.embedding import Embedder
from bot.storage.store import ConversationStore
from bot.types import AnsweredBy, Citation, Message, Reply
from serving.cli import app
from serving.runtime import Engine, build_engine
from serving.training.dataset import build_dataset
from serving.training.redaction import Redactor
from tests.conftest import ConfigFactory


@pytest.fixture
def engine(config: Config, embedder: Embedder) -> Engine:
    built = build_engine(config, embedder)
    built.sync.run()
    return built


def items_of(config: Config) -> list[KnowledgeItem]:
    return [item for file in vet(read_knowledge_dir(config.knowledge.path)).accepted for item in file.items]


def test_examples_are_the_live_prompts_over_live_retrieval_with_the_entry_cited(config: Config, engine: Engine) -> None:
    items = items_of(config)
    dataset = build_dataset(config, engine.policy, items, share=0.2, seed=0)
    prompts = PromptLibrary(config.prompts.path)
    entries = {item.id: item for item in items if isinstance(item, FaqEntry)}
    faq = [e for e in dataset.train + dataset.held_out if e.source == "faq"]
    assert faq
    for example in faq[:40]:
        system, user, reply = example.messages
        assert [system["role"], user["role"], reply["role"]] == ["system", "user", "assistant"]
        entry = entries[example.item]
        question = user["content"].split("<customer_message>\n", 1)[1].split("\n</customer_message>", 1)[0]
        assert question in entry.utterances()
        # Exactly what the model responder sends for that message with that context: the same builder.
        context = user["content"].split("<context>\n", 1)[1].split("\n</context>", 1)[0]
        assert context.startswith(f"[1] {entry.question} (source: {entry.file})\n")
        live = answer_messages(prompts, config.bot_name, question, [], [])
        assert system["content"] == live[0].content
        assert reply["content"].endswith(" [1]") and reply["content"].startswith(entry.answer.split(".")[0])
    action_entries = {item.id for item in items if isinstance(item, FaqEntry) and item.action}
    assert action_entries and not action_entries & {e.item for e in faq}  # those run a form, not the model
    sources = {e.source for e in dataset.train + dataset.held_out}
    assert {"faq", "passage", "decline", "clarify", "handoff"} <= sources
    declines = [e for e in dataset.train if e.source == "decline"]
    assert all(e.messages[-1]["content"] == config.messages.not_sure for e in declines)


def test_the_split_is_by_item_and_the_same_for_a_seed(config: Config, engine: Engine) -> None:
    items = items_of(config)
    first = build_dataset(config, engine.policy, items, share=0.25, seed=3)
    again = build_dataset(config, engine.policy, items, share=0.25, seed=3)
    other = build_dataset(config, engine.policy, items, share=0.25, seed=4)
    sides: dict[str, set[str]] = defaultdict(set)
    for side, examples in (("train", first.train), ("held_out", first.held_out)):
        for example in examples:
            sides[example.item].add(side)
    assert all(len(where) == 1 for where in sides.values())  # an item is never on both sides
    assert [e.to_json() for e in again.held_out] == [e.to_json() for e in first.held_out]
    assert {e.item for e in other.held_out} != {e.item for e in first.held_out}
    assert first.manifest["held_out_items"] == sorted({e.item for e in first.held_out})


def test_bot_model_dataset_writes_jsonl_and_a_manifest(tmp_path: Path, write_config: ConfigFactory) -> None:
    config_path = write_config()
    out = tmp_path / "dataset"
    result = CliRunner().invoke(app, ["model", "dataset", "--config", str(config_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "training and" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    lines = {name: (out / f"{name}.jsonl").read_text().splitlines() for name in ("train", "held_out")}
    assert manifest["train"] == len(lines["train"]) > manifest["held_out"] == len(lines["held_out"]) > 0
    knowledge = load_config(config_path).knowledge.path
    assert len(manifest["knowledge_sha256"]) == 64 and knowledge.is_dir()
    assert all(json.loads(line)["messages"][-1]["role"] == "assistant" for line in lines["train"])


def test_personal_data_is_replaced_and_counted() -> None:
    redactor = Redactor(order_patterns=("NW-?[0-9]{5,6}",))
    said = redactor.redact(
        "Hi, my name is Jane Doe. Order nw-10023, mail jane.doe@example.com or call +44 20 7946 0958; "
        "card 4111 1111 1111 1111 (not 1234 5678 9012 3456). The parcel went to Elm Street 12.",
        known_values=["Elm Street 12"],
    )
    assert said == (
        "Hi, my name is [name]. Order [order number], mail [email] or call [phone]; "
        "card [card number] (not 1234 5678 9012 3456). The parcel went to [redacted]."
    )
    assert dict(redactor.counts) == {"name": 1, "order": 1, "email": 1, "phone": 1, "card": 1, "value": 1}
    assert redactor.redact("i'm looking for boots, I am Not sure") == "i'm looking for boots, I am Not sure"


async def seed_conversations(path: Path) -> tuple[str, str, int]:
    """Two conversations: 'approved-1' (a customer with personal data, a bot answer, an agent's reply) and
    'unapproved-1'. Returns their ids and the bot answer's turn id."""
    store = await ConversationStore.open(path)
    try:
        first = Message(
            "approved-1", "web", "u1", "Hi, my name is Jane Doe. Where is order NW-10023? jane.doe@example.com"
        )
        asked = await store.record_user_turn(first)
        answer = Reply(
            "You can follow your parcel with the tracking link in your shipping email.",
            AnsweredBy.KNOWLEDGE,
            citations=(Citation("track-order", "faq", "How can I track my order?", "faq/orders.yml", 112),),
        )
        bot_turn = await store.record_bot_turn("approved-1", answer, {}, reply_to=asked)
        await store.record_user_turn(
            Message("approved-1", "web", "u1", "it says delivered but nothing came, call me on +1 415 555 2671")
        )
        await store.ledger.record_agent_reply(
            "approved-1",
            "alice",
            "Sorry Jane Doe! I have opened a claim for NW-10023 with the carrier and will email jane.doe@example.com.",
        )
        await store.record_user_turn(Message("unapproved-1", "web", "u2", "my secret question about SECRET-WORD"))
        return "approved-1", "unapproved-1", bot_turn
    finally:
        await store.close()


def test_only_approved_replies_become_examples_and_personal_data_is_gone(
    tmp_path: Path, write_config: ConfigFactory
) -> None:
    config_path = write_config()
    store_path = load_config(config_path).store.path
    approved, unapproved, bot_turn = asyncio.run(seed_conversations(store_path))
    runner = CliRunner()

    result = runner.invoke(app, ["review", "--config", str(config_path), "--approve", approved, "--by", "sam"])
    assert result.exit_code == 0 and f"approved {approved} (every reply)" in result.output, result.output
    again = runner.invoke(app, ["review", "--config", str(config_path), "--approve", f"{approved}:{bot_turn}"])
    assert again.exit_code == 0 and "approved" in again.output
    missing = runner.invoke(app, ["review", "--config", str(config_path), "--approve", "nobody-here"])
    assert missing.exit_code == 1 and "no conversation 'nobody-here'" in missing.output

    out = tmp_path / "dataset"
    built = runner.invoke(
        app, ["model", "dataset", "--config", str(config_path), "--out", str(out), "--held-out", "0.3"]
    )
    assert built.exit_code == 0, built.output
    rows = [
        json.loads(line) for name in ("train", "held_out") for line in (out / f"{name}.jsonl").read_text().splitlines()
    ]
    mine = [row for row in rows if row["item"] == f"conversation:{approved}"]
    assert sorted(row["source"] for row in mine) == ["agent", "conversation"]
    assert not [row for row in rows if row["item"] == f"conversation:{unapproved}"]
    everything = (out / "train.jsonl").read_text() + (out / "held_out.jsonl").read_text()
    for secret in ("Jane", "NW-10023", "jane.doe@example.com", "555 2671", "SECRET-WORD"):
        assert secret not in everything, secret
    agent = next(row for row in mine if row["source"] == "agent")
    assert agent["messages"][-1]["content"].startswith("Sorry [name]! I have opened a claim for [order number]")
    assert "[email]" in agent["messages"][-1]["content"]
    # The agent answered a message after the bot's answer: that answer is its history, as live.
    assert any(m["role"] == "assistant" and "tracking link" in m["content"] for m in agent["messages"][1:-1])
    redacted = json.loads((out / "manifest.json").read_text())["redacted"]
    assert redacted["email"] >= 2 and redacted["order"] >= 1 and redacted["phone"] == 1 and redacted["name"] >= 1
    assert "redacted:" in built.output


def test_rarer_sources_are_repeated_up_to_their_share_and_common_ones_left_alone() -> None:
    from serving.training.dataset import Example, balanced

    def rows(source: str, n: int) -> list[Example]:
        return [Example(f"{source}-{i}", source, ({"role": "assistant", "content": str(i)},)) for i in range(n)]

    examples = rows("faq", 80) + rows("decline", 4) + rows("clarify", 16)
    out = balanced(examples, 0.1)
    counts = {source: sum(e.source == source for e in out) for source in ("faq", "decline", "clarify")}
    assert counts == {"faq": 80, "decline": 10, "clarify": 16}
    assert out[: len(examples)] == examples  # the originals first, in order; then the repeats
    assert [e.item for e in out[len(examples) :]] == ["decline-0", "decline-1", "decline-2", "decline-3",
                                                      "decline-0", "decline-1"]  # fmt: skip
    assert balanced(examples, 0.0) == examples
