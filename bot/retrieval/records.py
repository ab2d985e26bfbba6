"""Knowledge items as Chroma records, and what the index derives from its records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.knowledge.model import (
    OUT_OF_SCOPE_KIND,
    FaqEntry,
    KnowledgeItem,
    OutOfScopeGroup,
    Passage,
    item_fingerprint,
    marked_for_a_person,
    normalised,
)
from bot.knowledge.names import NameTable
from bot.retrieval.hit import Hit
from bot.retrieval.ranking.scorer import IndexedText


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, str | int]


@dataclass
class Plan:
    to_embed: list[Record] = field(default_factory=list)
    to_relabel: list[Record] = field(default_factory=list)
    to_delete: list[str] = field(default_factory=list)


def after(existing: dict[str, dict[str, Any]], plan: Plan) -> dict[str, dict[str, Any]]:
    """Record id -> metadata once `plan` is written over `existing`."""
    deleted = set(plan.to_delete)
    metadata = {rid: meta for rid, meta in existing.items() if rid not in deleted}
    metadata.update({record.id: dict(record.metadata) for record in plan.to_embed + plan.to_relabel})
    return metadata


def indexed(metadata: dict[str, Any], text: str, vector: np.ndarray) -> IndexedText:
    asked = bool(metadata.get("questions"))
    return IndexedText(str(metadata["item_id"]), str(metadata["kind"]), text, vector, asked)


def rows(embeddings: Any) -> list[np.ndarray]:
    return [] if embeddings is None else list(embeddings)


def examples(texts: Iterable[IndexedText]) -> dict[str, str]:
    return {normalised(t.text): t.item_id for t in texts if t.kind == OUT_OF_SCOPE_KIND}


def names(metadata: dict[str, dict[str, Any]], texts: Iterable[IndexedText], catalog: dict[str, Hit]) -> NameTable:
    """The out-of-scope groups' names, less those the answerable texts and answers mention."""
    groups: dict[str, tuple[str, int, list[str]]] = {}  # in file order, so a name listed twice keeps its first
    for meta in metadata.values():
        if meta["kind"] == OUT_OF_SCOPE_KIND and meta.get("names"):
            where = (str(meta["file"]), int(str(meta["line"])))
            groups[str(meta["item_id"])] = (*where, json.loads(str(meta["names"])))
    if not groups:
        return NameTable({})
    listed = [(group, names) for group, (*_, names) in sorted(groups.items(), key=lambda g: (g[1][:2], g[0]))]
    known = [t.text for t in texts if t.kind != OUT_OF_SCOPE_KIND]
    known += [hit.body for hit in catalog.values() if hit.kind != OUT_OF_SCOPE_KIND]
    return NameTable.build(listed, known)


def titles(catalog: dict[str, Hit]) -> dict[str, str]:
    owners: dict[str, list[str]] = {}
    for hit in catalog.values():
        if hit.kind != OUT_OF_SCOPE_KIND:
            owners.setdefault(normalised(hit.title), []).append(hit.item_id)
    return {title: ids[0] for title, ids in owners.items() if len(ids) == 1}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def catalog(metadata: dict[str, dict[str, Any]]) -> dict[str, Hit]:
    return {
        str(meta["item_id"]): Hit(
            item_id=str(meta["item_id"]),
            kind=str(meta["kind"]),
            title=str(meta["title"]),
            body=str(meta["body"]),
            file=str(meta["file"]),
            line=int(str(meta["line"])),
            score=0.0,
            handoff=bool(meta.get("handoff")),
            action=str(meta["action"]) if meta.get("action") else None,
        )
        for meta in metadata.values()
    }


def records(items: Iterable[KnowledgeItem]) -> list[Record]:
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
        # Every optional key is always written: Chroma merges a relabelled record's metadata into the old,
        # so names or a mark an operator took away must be overwritten with nothing, not left out.
        names = item.names if isinstance(item, OutOfScopeGroup) else ()
        metadata["names"] = json.dumps(names) if names else ""
        metadata["questions"] = len(item.questions) if isinstance(item, Passage) else 0
        metadata["handoff"] = int(marked_for_a_person(item))
        metadata["action"] = (item.action or "") if isinstance(item, FaqEntry) else ""
        for text in item.utterances():
            records.append(Record(f"{item.id}::{digest(text)}", text, metadata))
    return records
