"""The knowledge index: Chroma kept in step with the knowledge files, searched by meaning.

Each embedded text is one Chroma record whose id is derived from the item id and the text itself,
so a text that did not change keeps its record and is never embedded again. Records carry the
item's answer and citation, so the index alone can serve answers — including the last good version
of a file that is currently broken.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings

from bot.embedding import Embedder, KnowledgeEmbeddingFunction, Progress
from bot.knowledge.loader import Vetting, vet
from bot.knowledge.model import KnowledgeFile, KnowledgeItem, item_fingerprint

_WRITE_BATCH = 1000


@dataclass(frozen=True)
class Hit:
    """One knowledge item a search found, with the best similarity among its texts."""

    item_id: str
    kind: str  # "faq" | "passage"
    title: str
    body: str
    file: str
    line: int
    score: float  # cosine similarity in [-1, 1]


@dataclass(frozen=True)
class SyncReport:
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    texts_embedded: int = 0
    seconds: float = 0.0
    rejected: tuple[KnowledgeFile, ...] = ()  # files not applied; their last good version stays
    files: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{self.unchanged} unchanged; {self.texts_embedded} texts embedded; "
            f"{self.files} files, {len(self.rejected)} rejected; {self.seconds:.2f}s"
        )


@dataclass
class _Record:
    id: str
    text: str
    metadata: dict[str, str | int]


@dataclass
class _Plan:
    to_embed: list[_Record] = field(default_factory=list)
    to_relabel: list[_Record] = field(default_factory=list)
    to_delete: list[str] = field(default_factory=list)


class KnowledgeIndex:
    def __init__(self, collection: Collection, embedder: Embedder) -> None:
        self._collection = collection
        self._embedder = embedder
        self._sync_lock = threading.Lock()
        self._count = collection.count()
        # What each item shows when found, kept in memory so a search fetches only ids and distances
        # from Chroma (fetching the stored answers with every query costs several times the search).
        self._catalog = _catalog(self._all_metadata())

    @classmethod
    def open(cls, path: Path, collection_name: str, embedder: Embedder) -> KnowledgeIndex:
        """Open (or create) the embedded, persistent index at `path`."""
        path.mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        collection = client.get_or_create_collection(
            collection_name,
            embedding_function=KnowledgeEmbeddingFunction(embedder),  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )
        return cls(collection, embedder)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def __len__(self) -> int:
        return self._count

    def owners(self) -> dict[str, str]:
        """item id -> file that currently serves it."""
        return {meta["item_id"]: meta["file"] for meta in self._all_metadata().values()}

    def sync(self, files: Sequence[KnowledgeFile], progress: Progress | None = None) -> SyncReport:
        """Make the index serve exactly the valid files; rejected files keep their last good records."""
        with self._sync_lock:
            started = time.perf_counter()
            existing = self._all_metadata()
            vetting = vet(files, {m["item_id"]: m["file"] for m in existing.values()})
            plan, added, updated, removed, unchanged = self._plan(vetting, existing)
            embedded_before = self._embedder.texts_embedded
            self._write(plan, progress)
            self._count = self._collection.count()
            self._catalog = _catalog(_after(existing, plan))  # what was written, without reading it back
            return SyncReport(
                added=tuple(sorted(added)),
                updated=tuple(sorted(updated)),
                removed=tuple(sorted(removed)),
                unchanged=unchanged,
                texts_embedded=self._embedder.texts_embedded - embedded_before,
                seconds=time.perf_counter() - started,
                rejected=vetting.rejected,
                files=len(files),
            )

    def search(self, query_vector: np.ndarray, k: int) -> list[Hit]:
        """The `k` best items for a query vector, best first."""
        return self.search_many(query_vector[np.newaxis, :], k)[0]

    def search_many(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """`search` for several query vectors in one Chroma call (much cheaper per query)."""
        if self._count == 0 or k <= 0:
            return [[] for _ in query_vectors]
        # Items have several texts each; ask for enough records to see k distinct items.
        n_results = min(self._count, max(k * 8, 40))
        result = self._collection.query(
            query_embeddings=[v.tolist() for v in query_vectors], n_results=n_results, include=["distances"]
        )
        catalog = self._catalog
        ranked = []
        for record_ids, distances in zip(result["ids"], result["distances"] or [], strict=True):
            best: dict[str, Hit] = {}
            for record_id, distance in zip(record_ids, distances, strict=True):
                item_id = record_id.rpartition("::")[0]
                if item_id in best or item_id not in catalog:
                    continue  # results come nearest first; an item is unknown only mid-sync
                best[item_id] = replace(catalog[item_id], score=1.0 - float(distance))
            ranked.append(sorted(best.values(), key=lambda h: h.score, reverse=True)[:k])
        return ranked

    def items(self) -> dict[str, list[str]]:
        """item id -> its embedded texts (for tools that learn from the knowledge base)."""
        result = self._collection.get(include=["metadatas", "documents"])
        texts: dict[str, list[str]] = {}
        for meta, doc in zip(result["metadatas"] or [], result["documents"] or [], strict=True):
            texts.setdefault(str(meta["item_id"]), []).append(doc or "")
        return texts

    # -- internals -----------------------------------------------------------------------------

    def _all_metadata(self) -> dict[str, dict[str, Any]]:
        result = self._collection.get(include=["metadatas"])
        return {rid: dict(meta or {}) for rid, meta in zip(result["ids"], result["metadatas"] or [], strict=True)}

    def _plan(
        self, vetting: Vetting, existing: dict[str, dict[str, Any]]
    ) -> tuple[_Plan, set[str], set[str], set[str], int]:
        kept_files = {f.path for f in vetting.rejected}
        desired = {r.id: r for r in _records(item for f in vetting.accepted for item in f.items)}
        plan = _Plan()
        for rid, record in desired.items():
            if rid not in existing:
                plan.to_embed.append(record)
            elif existing[rid].get("fingerprint") != record.metadata["fingerprint"]:
                plan.to_relabel.append(record)
        plan.to_delete = [
            rid for rid, meta in existing.items() if rid not in desired and meta.get("file") not in kept_files
        ]

        old_items = {m["item_id"]: m["fingerprint"] for m in existing.values()}
        new_items = {str(r.metadata["item_id"]): r.metadata["fingerprint"] for r in desired.values()}
        kept_items = {m["item_id"] for m in existing.values() if m.get("file") in kept_files}
        added = set(new_items) - set(old_items)
        removed = set(old_items) - set(new_items) - kept_items
        touched = {str(r.metadata["item_id"]) for r in plan.to_embed + plan.to_relabel}
        touched |= {existing[rid]["item_id"] for rid in plan.to_delete}
        updated = (touched & set(new_items)) - added
        unchanged = len(set(new_items) - added - updated)
        return plan, added, updated, removed, unchanged

    def _write(self, plan: _Plan, progress: Progress | None) -> None:
        # Add first, delete last: a search running meanwhile sees the old or the new text, never neither.
        for start in range(0, len(plan.to_embed), _WRITE_BATCH):
            batch = plan.to_embed[start : start + _WRITE_BATCH]
            done = start

            def report(n: int, _total: int, done: int = done) -> None:
                if progress is not None:
                    progress(done + n, len(plan.to_embed))

            vectors = self._embedder.embed([r.text for r in batch], report)
            self._collection.upsert(
                ids=[r.id for r in batch],
                embeddings=vectors,
                documents=[r.text for r in batch],
                metadatas=[r.metadata for r in batch],
            )
        for start in range(0, len(plan.to_relabel), _WRITE_BATCH):
            batch = plan.to_relabel[start : start + _WRITE_BATCH]
            self._collection.update(ids=[r.id for r in batch], metadatas=[r.metadata for r in batch])
        for start in range(0, len(plan.to_delete), _WRITE_BATCH):
            self._collection.delete(ids=plan.to_delete[start : start + _WRITE_BATCH])


def _after(existing: dict[str, dict[str, Any]], plan: _Plan) -> dict[str, dict[str, Any]]:
    """Record id -> metadata once `plan` is written over `existing`."""
    deleted = set(plan.to_delete)
    metadata = {rid: meta for rid, meta in existing.items() if rid not in deleted}
    metadata.update({record.id: dict(record.metadata) for record in plan.to_embed + plan.to_relabel})
    return metadata


def _catalog(metadata: dict[str, dict[str, Any]]) -> dict[str, Hit]:
    return {
        str(meta["item_id"]): Hit(
            item_id=str(meta["item_id"]),
            kind=str(meta["kind"]),
            title=str(meta["title"]),
            body=str(meta["body"]),
            file=str(meta["file"]),
            line=int(str(meta["line"])),
            score=0.0,
        )
        for meta in metadata.values()
    }


def _records(items: Iterable[KnowledgeItem]) -> list[_Record]:
    records = []
    for item in items:
        metadata: dict[str, str | int] = {
            "item_id": item.id,
            "kind": item.kind,
            "title": item.title,
            "body": item.body,
            "file": item.file,
            "line": item.line,
            "fingerprint": item_fingerprint(item),
        }
        for text in item.utterances():
            digest = hashlib.sha256(text.encode()).hexdigest()[:20]
            records.append(_Record(f"{item.id}::{digest}", text, metadata))
    return records
