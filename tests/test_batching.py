"""Concurrent query embeddings share encoder calls and each caller still gets its own vector."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pytest

from bot.retrieval.batching import QueryBatcher
from bot.retrieval.embedding import Embedder

T = TypeVar("T")

QUERIES = [
    "where is my parcel",
    "can I pay with PayPal",
    "how do I return shoes",
    "my discount code does not work",
    "do you ship to Norway",
    "I want to delete my account",
    "the zipper broke after a week",
    "can I change my delivery address",
]


def wait_until_queued(batcher: QueryBatcher[T], count: int) -> None:
    """Until `count` callers wait in the batcher's queue (30 s at most)."""
    deadline = time.monotonic() + 30
    while batcher.pending < count:
        assert time.monotonic() < deadline, f"only {batcher.pending} of {count} callers queued"
        time.sleep(0.01)


def test_concurrent_queries_get_their_own_vectors_from_shared_batches(embedder: Embedder) -> None:
    expected = {q: embedder.embed([q])[0] for q in QUERIES}
    first_batch: list[int] = []

    def embed_many(texts: Sequence[str]) -> list[np.ndarray]:
        if not first_batch:
            # The first encode is held until every other caller has queued behind it, so they arrive
            # together however the threads are scheduled.
            first_batch.append(len(texts))
            wait_until_queued(batcher, len(QUERIES) - len(texts))
        return list(embedder.embed(texts))

    batcher: QueryBatcher[np.ndarray] = QueryBatcher(embed_many)
    results: dict[str, np.ndarray] = {}

    def ask(text: str) -> None:
        results[text] = batcher.run(text)

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUERIES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert set(results) == set(QUERIES)
    for text, vector in results.items():
        assert np.allclose(vector, expected[text], atol=1e-4), text
    assert batcher.batches == 2  # the first caller's encode, then everyone who queued meanwhile


def test_callers_arriving_during_an_encode_go_together_in_the_next_batch() -> None:
    first_call_started = threading.Event()
    release_first_call = threading.Event()
    calls: list[list[str]] = []

    def encode_many(texts: Sequence[str]) -> list[float]:
        calls.append(list(texts))
        if len(calls) == 1:
            first_call_started.set()
            release_first_call.wait(30)
        return [float(len(t)) for t in texts]

    batcher = QueryBatcher(encode_many)
    results: dict[str, float] = {}

    def ask(text: str) -> None:
        results[text] = batcher.run(text)

    first = threading.Thread(target=ask, args=("a",))
    first.start()
    assert first_call_started.wait(30)
    others = [threading.Thread(target=ask, args=("b" * n,)) for n in range(2, 7)]
    for thread in others:
        thread.start()
    wait_until_queued(batcher, 5)  # all five behind the running encode
    release_first_call.set()
    for thread in [first, *others]:
        thread.join(30)

    assert calls[0] == ["a"]
    assert sorted(calls[1], key=len) == ["b" * n for n in range(2, 7)]
    assert len(calls) == 2
    assert results == {"a": 1.0, **{"b" * n: float(n) for n in range(2, 7)}}


def test_an_encoder_failure_reaches_every_waiting_caller_and_the_batcher_recovers() -> None:
    failing = threading.Event()
    failing.set()

    def encode_many(texts: Sequence[str]) -> list[float]:
        if failing.is_set():
            raise RuntimeError("model crashed")
        return [1.0 for _ in texts]

    batcher = QueryBatcher(encode_many)
    with pytest.raises(RuntimeError, match="model crashed"):
        batcher.run("hello")
    failing.clear()
    assert batcher.run("hello") == 1.0


def test_with_two_workers_a_message_does_not_wait_for_the_batch_being_encoded() -> None:
    first_call_started = threading.Event()
    release_first_call = threading.Event()
    calls: list[list[str]] = []

    def encode_many(texts: Sequence[str]) -> list[float]:
        calls.append(list(texts))
        if texts == ["slow"]:
            first_call_started.set()
            release_first_call.wait(30)
        return [float(len(t)) for t in texts]

    batcher = QueryBatcher(encode_many, workers=2)
    results: dict[str, float] = {}

    def ask(text: str) -> None:
        results[text] = batcher.run(text)

    slow = threading.Thread(target=ask, args=("slow",))
    slow.start()
    assert first_call_started.wait(30)
    assert batcher.run("quick") == 5.0  # answered on the second worker while the first batch is held
    release_first_call.set()
    slow.join(30)
    assert results == {"slow": 4.0}
    assert calls == [["slow"], ["quick"]]
