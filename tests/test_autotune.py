"""`index.tune: auto`: the bot tunes its encoder on the knowledge base in the background, re-embeds the
knowledge with it and switches over while the encoder in use keeps answering; a restart serves the tuned
encoder at once; edits synced during the switch are not lost; stopping leaves the last good encoder.

Every wait is for a positive signal (/health's tuning status, an answer), with generous limits: how long
tuning takes is measured in docs/BENCHMARKS.md, not here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bot.config import Config, load_config
from bot.knowledge.loader import read_knowledge_dir
from bot.retrieval.autotune import EncoderTuner
from bot.retrieval.embedding import Embedder, bundled_model_path
from bot.retrieval.index import KnowledgeIndex
from bot.retrieval.ranking.calibration import Cancelled
from bot.retrieval.tuning import tune
from serving.cli import app
from serving.runtime import build_engine
from tests.chroma_server import NEEDS_CHROMA, ChromaServer
from tests.conftest import LiveServer

TUNING_S = 300.0  # tuning and switching a tiny knowledge base, on a busy two-core machine

ITEMS = {
    "refund": ["I want my money back", "how do I get a refund", "refund please", "can you return my money"],
    "track-order": ["where is my order", "track my package", "has my parcel shipped yet", "order status"],
    "reset-password": ["forgot my password", "reset my password", "I can't log in", "my password does not work"],
    "gift-cards": ["do you sell gift cards", "gift card balance", "can I pay with a voucher", "buy a gift card"],
}


def write_faq(knowledge: Path, items: dict[str, list[str]], answers: dict[str, str] | None = None) -> None:
    entries = [
        {"id": item, "question": texts[0], "alternates": texts[1:],
         "answer": (answers or {}).get(item, f"The answer about {item}.")}
        for item, texts in items.items()
    ]  # fmt: skip
    (knowledge / "faq").mkdir(parents=True, exist_ok=True)
    partial = knowledge / "faq" / "tiny.yml.partial"
    partial.write_text(yaml.safe_dump(entries), encoding="utf-8")
    partial.replace(knowledge / "faq" / "tiny.yml")  # the watcher never reads half a file


def tuned_config(tmp_path: Path, tune: str = "auto") -> Config:
    knowledge = tmp_path / "knowledge"
    if not knowledge.exists():
        write_faq(knowledge, ITEMS)
    data = {
        "knowledge": {"path": str(knowledge), "watch_debounce_ms": 50},
        "index": {"path": str(tmp_path / "chroma"), "encoder_cache": str(tmp_path / "cache"), "tune": tune},
        "store": {"path": str(tmp_path / "conversations.sqlite3")},
        "web": {"messages_per_minute_per_ip": 1_000_000},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def health(server: LiveServer) -> dict[str, Any]:
    with server.client() as client:
        body: dict[str, Any] = client.get("/health").json()
    return body


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TUNING_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def answered_with(server: LiveServer, text: str) -> tuple[str | None, str]:
    with server.client() as client:
        reply = client.post("/api/chat", json={"text": text}).json()
    citations = reply["citations"]
    return (citations[0]["id"] if citations else None), str(reply["reply"])


def test_the_bot_tunes_in_the_background_switches_over_and_a_restart_serves_the_tuned_encoder(
    tmp_path: Path, embedder: Embedder
) -> None:
    config = tuned_config(tmp_path)
    with LiveServer(config, embedder, watch=True) as server:
        assert answered_with(server, "I forgot my password")[0] == "reset-password"  # whichever encoder serves
        wait_for(lambda: health(server)["knowledge"]["tuning"]["switches"] == 1, "a switch to a tuned encoder")
        status = health(server)
        assert status["encoder"].startswith("all-MiniLM-L6-v2-tuned-"), status["encoder"]
        assert status["knowledge"]["tuning"]["state"] == "idle"
        assert status["knowledge"]["tuning"]["batches_done"] == status["knowledge"]["tuning"]["batches"] > 0
        assert status["knowledge"]["tuning"]["last"].startswith("serving all-MiniLM-L6-v2-tuned-")
        assert status["knowledge_records"] == sum(len(texts) for texts in ITEMS.values())
        first = status["encoder"]
        assert answered_with(server, "I forgot my password")[0] == "reset-password"
        assert answered_with(server, "where is my parcel")[0] == "track-order"

        # An answer's text changes, not its phrasings: served at once, and the same tuned encoder stays.
        before = health(server)["knowledge"]["tuning"]["last_at"]
        write_faq(tmp_path / "knowledge", ITEMS, {"refund": "Refunds take five days."})
        wait_for(lambda: answered_with(server, "how do I get a refund")[1] == "Refunds take five days.", "the edit")
        wait_for(lambda: health(server)["knowledge"]["tuning"]["last_at"] != before, "the tuner's look at it")
        assert health(server)["knowledge"]["tuning"]["last"].startswith("already serving")
        assert health(server)["encoder"] == first

        # New phrasings: answered at once by the encoder in use, then tuned for and switched to.
        more = {**ITEMS, "gift-cards": [*ITEMS["gift-cards"], "is there a voucher for birthdays"]}
        write_faq(tmp_path / "knowledge", more, {"refund": "Refunds take five days."})
        wait_for(lambda: answered_with(server, "is there a voucher for birthdays")[0] == "gift-cards", "the edit")
        wait_for(lambda: health(server)["knowledge"]["tuning"]["switches"] == 2, "a second switch")
        second = health(server)["encoder"]
        assert second != first and second.startswith("all-MiniLM-L6-v2-tuned-")
        assert answered_with(server, "is there a voucher for birthdays")[0] == "gift-cards"
        assert answered_with(server, "how do I get a refund")[1] == "Refunds take five days."

    # A restart serves the tuned encoder from the start: nothing embedded again, nothing tuned again.
    with LiveServer(config, embedder, watch=True) as server:
        status = health(server)
        assert status["encoder"] == second
        assert server.app.state.bot.startup_sync.texts_embedded == 0
        wait_for(lambda: health(server)["knowledge"]["tuning"]["last"] != "", "the tuner's first look")
        assert health(server)["knowledge"]["tuning"]["last"].startswith("already serving")
        assert answered_with(server, "is there a voucher for birthdays")[0] == "gift-cards"

    # Turned off: the configured encoder again, its own collection brought up to date.
    with LiveServer(tuned_config(tmp_path, tune="off"), embedder) as server:
        status = health(server)
        assert status["encoder"].startswith("all-MiniLM-L6-v2/") and status["knowledge"]["tuning"] is None
        assert answered_with(server, "is there a voucher for birthdays")[0] == "gift-cards"


@pytest.fixture(scope="module")
def tuned_encoder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache = tmp_path_factory.mktemp("tuned-cache")
    model = tune(bundled_model_path(), "all-MiniLM-L6-v2", ITEMS, cache).model
    tuned = Embedder(model, cache_dir=cache)
    tuned.load()
    return tuned


def synced_index(tmp_path: Path, embedder: Embedder) -> KnowledgeIndex:
    write_faq(tmp_path / "knowledge", ITEMS)
    index = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)
    index.sync(read_knowledge_dir(tmp_path / "knowledge"))
    return index


def test_an_edit_synced_while_the_index_switches_encoders_is_served_after_the_switch(
    tmp_path: Path, embedder: Embedder, tuned_encoder: Embedder
) -> None:
    index = synced_index(tmp_path, embedder)
    embedding, edited = threading.Event(), threading.Event()

    def hold_until_edited() -> bool:  # asked between the switch's batches: the edit lands in between
        embedding.set()
        assert edited.wait(120)
        return False

    switch = threading.Thread(target=index.adopt, args=(tuned_encoder, hold_until_edited))
    switch.start()
    assert embedding.wait(120)
    more = {**ITEMS, "opening-hours": ["when are you open", "what are your opening hours"]}
    write_faq(tmp_path / "knowledge", more)
    report = index.sync(read_knowledge_dir(tmp_path / "knowledge"))  # served by the encoder in use meanwhile
    assert report.added == ("opening-hours",) and index.embedder is embedder
    assert index.find(["what are your opening hours"], 1)[0][0].item_id == "opening-hours"
    edited.set()
    switch.join(120)
    assert not switch.is_alive() and index.embedder is tuned_encoder
    assert len(index) == sum(len(texts) for texts in more.values())
    assert index.find(["when are you open"], 1)[0][0].item_id == "opening-hours"
    assert index.find(["I want my money back"], 1)[0][0].item_id == "refund"
    reopened = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", tuned_encoder, tuned=True)
    assert len(reopened) == len(index)  # the new collection holds the edit too
    index.close()


def test_a_switch_stopped_midway_changes_nothing_and_a_later_one_resumes(
    tmp_path: Path, embedder: Embedder, tuned_encoder: Embedder
) -> None:
    index = synced_index(tmp_path, embedder)
    with pytest.raises(Cancelled):
        index.adopt(tuned_encoder, lambda: True)
    assert index.embedder is embedder
    assert index.find(["I want my money back"], 1)[0][0].item_id == "refund"
    index.adopt(tuned_encoder)
    assert index.embedder is tuned_encoder
    assert index.find(["I want my money back"], 1)[0][0].item_id == "refund"
    index.close()


def test_kb_index_tunes_first_with_tune_auto_so_eval_measures_what_the_bot_serves(tmp_path: Path) -> None:
    tuned_config(tmp_path)
    config = str(tmp_path / "config.yml")
    result = CliRunner().invoke(app, ["kb", "index", "--config", config])
    assert result.exit_code == 0, result.output
    assert "encoder: serving all-MiniLM-L6-v2-tuned-" in result.output
    again = CliRunner().invoke(app, ["kb", "index", "--config", config])
    assert again.exit_code == 0 and "encoder: already serving" in again.output, again.output


def test_training_runs_below_the_threads_that_answer_and_the_switch_is_recorded(
    tmp_path: Path, embedder: Embedder
) -> None:
    index = synced_index(tmp_path, embedder)
    recorded: list[Path] = []
    tuner = EncoderTuner(index, bundled_model_path(), "all-MiniLM-L6-v2", tmp_path / "cache",
                         index.embedder.with_model, recorded.append)  # fmt: skip
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []
    assert tuner.run_once(lambda done, total: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    assert seen and set(seen) == {min(19, own + 10)}  # every batch trained at the lower priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the caller's is untouched
    assert recorded == [index.embedder.model_path] and tuner.status.switches == 1
    assert tuner.status.batches[0] == tuner.status.batches[1] == len(seen)
    assert not tuner.run_once() and tuner.status.last.startswith("already serving")
    index.close()


@NEEDS_CHROMA
def test_the_shared_index_keeps_its_encoder_and_the_log_says_so(
    tmp_path: Path, embedder: Embedder, chroma_server: ChromaServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = tuned_config(tmp_path)
    index = config.index.model_copy(update={"server_url": chroma_server.url, "collection": "autotune-shared"})
    with caplog.at_level(logging.WARNING, logger="serving.runtime"):
        engine = build_engine(config.model_copy(update={"index": index}), embedder)
    assert engine.tuner is None and engine.index.shared
    assert any("tunes the embedded index only" in record.getMessage() for record in caplog.records)
    engine.index.close()
