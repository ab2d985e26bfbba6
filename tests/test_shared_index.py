"""The index on a Chroma server that several bot processes share: one process syncs the knowledge folder,
the others load what it wrote (records, classifier, calibration) when the knowledge generation changes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest

from bot.config import load_config
from bot.knowledge.loader import read_knowledge_dir
from bot.retrieval.chroma import CollectionShelf
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from tests.chroma_server import NEEDS_CHROMA, ChromaServer
from tests.conftest import ConfigFactory, LiveServer
from tests.redis_server import NEEDS_REDIS, RedisServer
from tests.test_live_reload import NEW_FAQ, ask, polled, wait_for

pytestmark = NEEDS_CHROMA
QUESTION = "are dogs allowed in the shop?"


def collection_name() -> str:
    return f"kb-{secrets.token_hex(4)}"


def test_a_second_process_serves_what_the_first_synced_with_its_classifier(
    chroma_server: ChromaServer, embedder: Embedder, knowledge_dir: Path
) -> None:
    name = collection_name()
    first = KnowledgeIndex.connect(chroma_server.url, name, embedder)
    assert first.shared and first.generation is None
    report = first.sync(read_knowledge_dir(knowledge_dir))
    assert report.added and not report.rejected
    assert first.generation is not None

    embedded_before = embedder.texts_embedded
    second = KnowledgeIndex.connect(chroma_server.url, name, embedder)
    assert embedder.texts_embedded == embedded_before  # vectors come from the server, not embedded again
    assert second.generation == first.generation and len(second) == len(first)
    assert second.calibration == first.calibration  # kept in the collection's metadata
    # The classifier the first trained is on the server, under the key of these texts, and the second uses it.
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    stored = CollectionShelf(client.get_collection(f"{name}.artefacts")).load(second._calibration_key())
    assert stored is not None
    key = second._calibration_key()
    assert second._ranking.scorer.classifier.to_bytes(key) == stored.to_bytes(key)

    vector = embedder.embed([QUESTION])[0]
    assert [h.item_id for h in second.search(vector, QUESTION, 3)] == [
        h.item_id for h in first.search(vector, QUESTION, 3)
    ]

    # An edit synced by the first: the second sees a new generation and serves the new content.
    (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
    assert first.sync(read_knowledge_dir(knowledge_dir)).added == ("dog-friendly-stores",)
    assert second.generation != first.generation
    assert second.refresh()
    assert second.generation == first.generation
    assert second.search(vector, QUESTION, 1)[0].item_id == "dog-friendly-stores"
    assert not second.refresh()  # nothing new since


@pytest.fixture
def shared_config(write_config: ConfigFactory, chroma_server: ChromaServer, redis_server: RedisServer) -> Path:
    return write_config(
        index={"server_url": chroma_server.url, "collection": collection_name()},
        coordination={"redis_url": redis_server.url, "role_lease_s": 2.0},
    )


def health(server: LiveServer) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.url}/health", timeout=30)
    return response.status_code, response.json()


@pytest.fixture
def two_processes(shared_config: Path, embedder: Embedder) -> Iterator[tuple[LiveServer, LiveServer]]:
    config = polled(load_config(shared_config))
    with LiveServer(config, embedder, watch=True) as first, LiveServer(config, embedder, watch=True) as second:
        yield first, second


def synced(servers: tuple[LiveServer, ...]) -> bool:
    """Every process serves the same, non-empty generation of the shared index."""
    generations = {health(server)[1]["knowledge"]["generation"] for server in servers}
    return len(generations) == 1 and None not in generations


@NEEDS_REDIS
def test_one_process_syncs_and_an_edit_is_served_by_both(
    two_processes: tuple[LiveServer, LiveServer], knowledge_dir: Path
) -> None:
    wait_for(lambda: synced(two_processes), "both processes on one generation of the shared index")
    holders = [server for server in two_processes if "knowledge-sync" in health(server)[1]["roles"]]
    assert len(holders) == 1, [health(server)[1]["roles"] for server in two_processes]
    for server in two_processes:
        status, body = health(server)
        assert status == 200 and body["index"]["kind"] == "chroma-server" and body["index"]["ok"], body

    (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
    for server in two_processes:

        def served(server: LiveServer = server) -> bool:
            return ask(server, QUESTION)["reply"] == "Well-behaved dogs on a lead are welcome in all our stores."

        wait_for(served, "the edit served by each process")
    assert synced(two_processes)


@NEEDS_REDIS
def test_without_the_chroma_server_a_process_says_so_and_serves_again_when_it_is_back(
    two_processes: tuple[LiveServer, LiveServer], chroma_server: ChromaServer
) -> None:
    first, _ = two_processes
    wait_for(lambda: synced(two_processes), "both processes on one generation of the shared index")
    wait_for(lambda: ask(first, "How much does shipping cost?")["answered_by"] == "knowledge", "an answer")
    started = ask(first, "hello")
    message = {"conversation_id": started["conversation_id"], "text": "How much does shipping cost?",
               "client_message_id": "m-while-away"}  # fmt: skip
    chroma_server.stop()
    try:
        status, body = health(first)
        assert status == 503 and body["status"] == "unavailable"
        assert body["index"]["ok"] is False and chroma_server.url in body["index"]["problem"], body
        response = httpx.post(f"{first.url}/api/chat", json=message, timeout=60)
        assert response.status_code == 503, response.text  # stored, not answered: the client sends it again
    finally:
        chroma_server.start()
    wait_for(lambda: health(first)[0] == 200, "healthy again with the server back")
    again = httpx.post(f"{first.url}/api/chat", json=message, timeout=60)
    assert again.status_code == 200 and again.json()["answered_by"] == "knowledge", again.text
    twice = httpx.post(f"{first.url}/api/chat", json=message, timeout=60).json()
    assert twice["turn_id"] == again.json()["turn_id"]  # answered once


def test_an_embedded_index_opened_after_a_server_one_stays_in_its_own_folder(
    chroma_server: ChromaServer, embedder: Embedder, knowledge_dir: Path, tmp_path: Path
) -> None:
    # chromadb's client constructors write the server's address (or the folder) into the settings they are
    # given: with one settings object for every client, this embedded index opened the server's collection.
    name = collection_name()
    served = KnowledgeIndex.connect(chroma_server.url, name, embedder)
    served.sync(read_knowledge_dir(knowledge_dir))
    assert len(served) > 0

    embedded = KnowledgeIndex.open(tmp_path / "chroma", name, embedder)
    assert not embedded.shared and len(embedded) == 0 and embedded.generation is None
    embedded.sync(read_knowledge_dir(knowledge_dir))
    assert (tmp_path / "chroma" / "chroma.sqlite3").exists()
    assert KnowledgeIndex.connect(chroma_server.url, name, embedder).generation == served.generation
