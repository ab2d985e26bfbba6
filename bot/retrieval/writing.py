"""Writing a sync to Chroma: what to embed, relabel and delete, and what the sync changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from bot.knowledge.loader import Vetting
from bot.knowledge.model import KnowledgeFile
from bot.retrieval import records
from bot.retrieval.embedding import Embedder, Progress
from bot.retrieval.ranking.calibration import Calibration
from bot.retrieval.records import Plan

_WRITE_BATCH = 1000


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
    calibration: Calibration | None = None  # None: being recalibrated in the background

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{self.unchanged} unchanged; {self.texts_embedded} texts embedded; "
            f"{self.files} files, {len(self.rejected)} rejected; {self.seconds:.2f}s"
        )


@dataclass(frozen=True)
class Changes:
    """What a plan does to the items: ids added, updated, removed, and how many stay as they were."""

    added: set[str]
    updated: set[str]
    removed: set[str]
    unchanged: int


def plan_sync(vetting: Vetting, existing: dict[str, dict[str, Any]]) -> tuple[Plan, Changes]:
    """The records to write so the index serves the accepted files (rejected files keep theirs)."""
    kept_files = {f.path for f in vetting.rejected}
    desired = {r.id: r for r in records.records(item for f in vetting.accepted for item in f.items)}
    plan = Plan()
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
    return plan, Changes(added, updated, removed, len(set(new_items) - added - updated))


def write_plan(
    collection: Collection, embedder: Embedder, plan: Plan, progress: Progress | None
) -> dict[str, np.ndarray]:
    """Apply the plan; returns the vectors of the texts it embedded, by record id."""
    # Add first, delete last: a search running meanwhile sees the old or the new text, never neither.
    embedded: dict[str, np.ndarray] = {}
    for start in range(0, len(plan.to_embed), _WRITE_BATCH):
        batch = plan.to_embed[start : start + _WRITE_BATCH]
        done = start

        def report(n: int, _total: int, done: int = done) -> None:
            if progress is not None:
                progress(done + n, len(plan.to_embed))

        vectors = embedder.embed([r.text for r in batch], report)
        embedded.update(zip((r.id for r in batch), vectors, strict=True))
        collection.upsert(
            ids=[r.id for r in batch],
            embeddings=vectors,
            documents=[r.text for r in batch],
            metadatas=[r.metadata for r in batch],
        )
    for start in range(0, len(plan.to_relabel), _WRITE_BATCH):
        batch = plan.to_relabel[start : start + _WRITE_BATCH]
        collection.update(ids=[r.id for r in batch], metadatas=[r.metadata for r in batch])
    for start in range(0, len(plan.to_delete), _WRITE_BATCH):
        collection.delete(ids=plan.to_delete[start : start + _WRITE_BATCH])
    return embedded
