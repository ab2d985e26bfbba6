"""Embedding the same records again with another encoder, into a collection of their own.

Vectors from two encoders do not compare, so switching encoders (to one tuned on the knowledge base:
`bot.retrieval.autotune`) cannot rewrite the serving collection in place: a search meanwhile would compare
a message embedded one way with texts embedded the other. The records are written again into a second
collection while the first one serves, and the index then switches encoder, collection and everything
derived from the vectors at once (`KnowledgeIndex.adopt`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from bot.retrieval import records, snapshot
from bot.retrieval.answers import AnswerVectors
from bot.retrieval.chroma import ChromaHome
from bot.retrieval.embedding import Embedder, Progress
from bot.retrieval.ranking.calibration import Calibration, Cancelled, calibrate
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer
from bot.retrieval.records import Plan, Record
from bot.retrieval.writing import write_plan


@dataclass(frozen=True)
class Held:
    """What a collection holds: each record's metadata and its text with its vector."""

    metadata: dict[str, dict[str, Any]]
    texts: dict[str, IndexedText]


def read(collection: Collection) -> Held:
    stored = collection.get(include=["metadatas", "documents", "embeddings"])
    metadata = {rid: dict(meta or {}) for rid, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True)}
    texts = {
        rid: records.indexed(metadata[rid], doc or "", np.asarray(vector, dtype=np.float32))
        for rid, doc, vector in zip(
            stored["ids"], stored["documents"] or [], records.rows(stored.get("embeddings")), strict=True
        )
    }
    return Held(metadata, texts)


def mirror(
    collection: Collection, embedder: Embedder, wanted: dict[str, Record], held: Held, progress: Progress | None = None
) -> Held:
    """Make `collection` (filled by `embedder`, holding `held`) hold exactly the records `wanted`, embedding
    only the texts it lacks. Returns what it holds then."""
    plan = Plan(to_delete=[rid for rid in held.metadata if rid not in wanted])
    for rid, record in wanted.items():
        if rid not in held.metadata:
            plan.to_embed.append(record)
        elif held.metadata[rid].get("fingerprint") != record.metadata["fingerprint"]:
            plan.to_relabel.append(record)
    vectors = write_plan(collection, embedder, plan, progress)
    texts = {
        rid: records.indexed(record.metadata, record.text, vectors[rid] if rid in vectors else held.texts[rid].vector)
        for rid, record in wanted.items()
    }
    return Held({rid: dict(record.metadata) for rid, record in wanted.items()}, texts)


@dataclass(frozen=True)
class Encoding:
    """The records as embedded by another encoder, in the family's collection for it, with their classifier
    (`key`: what calibration is worked out for)."""

    home: ChromaHome
    collection: Collection
    embedder: Embedder
    held: Held
    key: str
    scorer: ItemScorer


def encode(
    home: ChromaHome, embedder: Embedder, wanted: dict[str, Record], clarify: bool, stop: Callable[[], bool]
) -> Encoding:
    """`wanted` embedded by `embedder` into the family's collection for it (`home` is the one serving now),
    resuming what an earlier attempt wrote there; raises Cancelled between batches once `stop()`."""

    def step(_done: int, _total: int) -> None:
        if stop():
            raise Cancelled

    home = home.sibling(embedder)
    collection = home.open(embedder.identity)  # guarded there
    held = mirror(collection, embedder, wanted, read(collection), step)
    return _ranked(home, collection, embedder, held, clarify)


def catch_up(encoding: Encoding, wanted: dict[str, Record], clarify: bool) -> Encoding:
    """`encoding` brought to `wanted` (edits synced since it was encoded): a few texts, a new classifier."""
    held = mirror(encoding.collection, encoding.embedder, wanted, encoding.held)
    return _ranked(encoding.home, encoding.collection, encoding.embedder, held, clarify)


def _ranked(home: ChromaHome, collection: Collection, embedder: Embedder, held: Held, clarify: bool) -> Encoding:
    key = snapshot.calibration_key(embedder.identity, held.metadata, clarify)
    return Encoding(home, collection, embedder, held, key, snapshot.scorer_for(home, key, held.texts, keep=True))


def calibrated(encoding: Encoding, answers: AnswerVectors, clarify: bool, stop: Callable[[], bool]) -> Calibration:
    """The calibration for the records as `encoding` holds them (raises Cancelled once `stop()`)."""
    catalog = records.catalog(encoding.held.metadata)
    return calibrate(
        snapshot.calibration_order(encoding.held.texts, catalog),
        lambda: answers.texts(catalog, stop),
        cancelled=stop,
        embed=encoding.embedder.embed if clarify else None,
    )
