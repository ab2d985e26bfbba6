"""The knowledge index: Chroma kept in step with the knowledge files, searched by meaning.

Each embedded text is one Chroma record whose id is derived from the item id and the text itself,
so a text that did not change keeps its record and is never embedded again. Records carry the
item's answer and citation, so the index alone can serve answers — including the last good version
of a file that is currently broken.

Chroma finds the texts nearest to a message; the items they belong to, plus the items whose words,
overall topic or classifier match best, are then scored exactly in memory (`bot.retrieval.ranking`), with weights
and an answer threshold calibrated from the knowledge base itself each time it changes. The classifier,
trained on the texts at each change, is stored beside Chroma so a restart does not train it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings

from bot.knowledge.loader import Vetting, vet
from bot.knowledge.model import (
    OUT_OF_SCOPE_KIND,
    FaqEntry,
    KnowledgeFile,
    KnowledgeItem,
    OutOfScopeGroup,
    Passage,
    answer_as_passage,
    item_fingerprint,
    marked_for_a_person,
    normalised,
)
from bot.knowledge.names import NameMatch, NameTable
from bot.retrieval.embedding import Embedder, KnowledgeEmbeddingFunction, Progress
from bot.retrieval.ranking import calibration
from bot.retrieval.ranking.calibration import Calibration, calibrate
from bot.retrieval.ranking.classifier import ItemClassifier
from bot.retrieval.ranking.overlaps import OverlapReport, find_overlaps
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer

log = logging.getLogger(__name__)

_WRITE_BATCH = 1000
# FAQ answers are embedded for calibration this many at a time, so a superseded calibration stops between.
_ANSWER_BATCH = 64
_CALIBRATION_KEY = "calibration_key"
_CALIBRATION = "calibration"
_ENCODER = "encoder"  # the Embedder.identity the vectors came from


@dataclass(frozen=True)
class Hit:
    """One knowledge item a search found, with the best similarity among its texts."""

    item_id: str
    kind: str  # "faq" | "passage" | "out_of_scope"
    title: str
    body: str
    file: str
    line: int
    score: float  # cosine similarity in [-1, 1]
    handoff: bool = False  # the item is marked for a person: its answer hands the conversation over
    action: str | None = None  # the business action an FAQ entry runs


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
class _Ranking:
    """What a search needs, replaced as a whole after each sync so a search never sees half of one."""

    catalog: dict[str, Hit]  # what each item shows when found
    scorer: ItemScorer
    calibration: Calibration
    examples: dict[str, str]  # out-of-scope example (normalised) -> its group
    titles: dict[str, str]  # answerable item's title (normalised) -> the item, for titles only one item has
    names: NameTable  # companies and products out-of-scope groups list, that the knowledge never mentions


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
    def __init__(self, collection: Collection, embedder: Embedder, classifier_path: Path | None = None) -> None:
        """`classifier_path`: where the trained classifier is kept between runs (retrained at start when None)."""
        self._collection = collection
        self._embedder = embedder
        self._classifier_path = classifier_path
        self._sync_lock = threading.Lock()
        self._calibration_lock = threading.Lock()  # one calibration at a time
        # Guards replacing `_ranking` together with `_generation` (bumped by each sync), so a background
        # calibration finishing for older content never lands on newer content.
        self._swap_lock = threading.Lock()
        self._generation = 0
        self._closing = threading.Event()
        self._background: list[threading.Thread] = []  # calibrations started by live edits
        stored = collection.get(include=["metadatas", "documents", "embeddings"])
        self._metadata: dict[str, dict[str, Any]] = {
            rid: dict(meta or {}) for rid, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True)
        }
        self._texts = {
            rid: _indexed(self._metadata[rid], doc or "", np.asarray(vector, dtype=np.float32))
            for rid, doc, vector in zip(
                stored["ids"], stored["documents"] or [], _rows(stored.get("embeddings")), strict=True
            )
        }
        self._answer_vectors: dict[str, np.ndarray] = {}  # FAQ answer sentences, by text digest
        key = self._calibration_key()
        catalog = _catalog(self._metadata)
        self._ranking = _Ranking(
            catalog,
            self._scorer(key),
            self._cached_calibration(key) or calibration.DEFAULT,
            _examples(self._texts.values()),
            _titles(catalog),
            _names(self._metadata, self._texts.values(), catalog),
        )

    @classmethod
    def open(cls, path: Path, collection_name: str, embedder: Embedder) -> KnowledgeIndex:
        """Open (or create) the embedded, persistent index at `path`."""
        path.mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        function = KnowledgeEmbeddingFunction(embedder)

        def collection() -> Collection:
            return client.get_or_create_collection(
                collection_name,
                embedding_function=function,  # type: ignore[arg-type]
                configuration={"hnsw": {"space": "cosine"}},
            )

        opened = collection()
        encoder = embedder.identity
        built_with = (opened.metadata or {}).get(_ENCODER)
        if built_with != encoder:
            if opened.count():
                # Vectors from another model or runtime do not compare with this one's: start again.
                log.warning(
                    "the index at %s was built with encoder %s, not %s: embedding the knowledge again",
                    path,
                    built_with or "(unrecorded)",
                    encoder,
                )
                client.delete_collection(collection_name)
                opened = collection()
            opened.modify(metadata={_ENCODER: encoder})
        return cls(opened, embedder, path / f"{collection_name}.classifier.npz")

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def calibration(self) -> Calibration:
        """The weights and answer threshold in use."""
        return self._ranking.calibration

    @property
    def calibrating(self) -> bool:
        """Whether a background calibration (after a live edit) is still working out the threshold."""
        return any(thread.is_alive() for thread in self._background)

    def __len__(self) -> int:
        return len(self._metadata)

    def owners(self) -> dict[str, str]:
        """item id -> file that currently serves it."""
        return {meta["item_id"]: meta["file"] for meta in self._metadata.values()}

    def sync(
        self, files: Sequence[KnowledgeFile], progress: Progress | None = None, calibrate_in_background: bool = False
    ) -> SyncReport:
        """Make the index serve exactly the valid files; rejected files keep their last good records.

        New content is searchable when this returns. Recalibrating takes longer on a large knowledge
        base; `calibrate_in_background` (live edits) keeps the previous calibration until it is done.
        """
        with self._sync_lock:
            started = time.perf_counter()
            existing = self._metadata
            vetting = vet(files, {m["item_id"]: m["file"] for m in existing.values()})
            plan, added, updated, removed, unchanged = self._plan(vetting, existing)
            embedded_before = self._embedder.texts_embedded
            vectors = self._write(plan, progress)
            texts_embedded = self._embedder.texts_embedded - embedded_before
            self._metadata = _after(existing, plan)  # what was written, without reading it back
            for rid in plan.to_delete:
                self._texts.pop(rid, None)
            for record in plan.to_relabel:
                self._texts[record.id] = _indexed(record.metadata, record.text, self._texts[record.id].vector)
            for record in plan.to_embed:
                self._texts[record.id] = _indexed(record.metadata, record.text, vectors[record.id])
            key = self._calibration_key()
            cached = self._cached_calibration(key)
            # Nothing written (a restart on unchanged files): the texts are those the scorer was built from.
            unchanged_texts = not (plan.to_embed or plan.to_relabel or plan.to_delete)
            scorer = self._ranking.scorer if unchanged_texts else self._scorer(key)
            with self._swap_lock:
                self._generation += 1
                catalog = _catalog(self._metadata)
                self._ranking = _Ranking(
                    catalog,
                    scorer,
                    cached or self._ranking.calibration,
                    _examples(self._texts.values()),
                    _titles(catalog),
                    _names(self._metadata, self._texts.values(), catalog),
                )
            if cached is None:
                job = (key, self._generation, self._calibration_texts(), self._ranking.catalog)
                if calibrate_in_background:
                    # Not a daemon: the interpreter would stop it mid-computation at exit (and abort in torch).
                    thread = threading.Thread(target=self._recalibrate, args=job, name="calibration")
                    self._background = [t for t in self._background if t.is_alive()] + [thread]
                    thread.start()
                else:
                    self._recalibrate(*job)
            return SyncReport(
                added=tuple(sorted(added)),
                updated=tuple(sorted(updated)),
                removed=tuple(sorted(removed)),
                unchanged=unchanged,
                texts_embedded=texts_embedded,
                seconds=time.perf_counter() - started,
                rejected=vetting.rejected,
                files=len(files),
                calibration=self._ranking.calibration if not calibrate_in_background or cached else None,
            )

    def close(self) -> None:
        """Stop a calibration still running in the background (at its next step) and wait for it."""
        self._closing.set()
        for thread in self._background:
            thread.join()

    def search(self, query_vector: np.ndarray, query_text: str, k: int) -> list[Hit]:
        """The `k` best items for a message (its vector and its text), best first."""
        return self.search_many(query_vector[np.newaxis, :], [query_text], k)[0]

    def search_many(self, query_vectors: np.ndarray, query_texts: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for several messages with one Chroma call (much cheaper per message)."""
        ranking = self._ranking
        if k <= 0 or not ranking.catalog:
            return [[] for _ in query_vectors]
        # Items have several texts each; ask for enough texts to see 2k distinct items.
        n_results = min(len(self), max(k * 8, 40))
        result = self._collection.query(
            query_embeddings=[v.tolist() for v in query_vectors], n_results=n_results, include=[]
        )
        weights = ranking.calibration.weights
        ranked = []
        for vector, text, record_ids in zip(query_vectors, query_texts, result["ids"], strict=True):
            nearest = list(dict.fromkeys(rid.rpartition("::")[0] for rid in record_ids))[: 2 * k]
            scored = ranking.scorer.score_candidates(vector, text, nearest, weights, extra=k)
            ranked.append([replace(ranking.catalog[i], score=score) for i, score in scored[:k]])
        return ranked

    def out_of_scope_example(self, text: str) -> Hit | None:
        """The out-of-scope group that lists `text` itself as an example (case and spacing aside), if any."""
        ranking = self._ranking
        group = ranking.examples.get(normalised(text))
        return None if group is None else replace(ranking.catalog[group], score=1.0)

    def out_of_scope_name(self, text: str) -> tuple[Hit, NameMatch] | None:
        """The out-of-scope group listing a name that `text` mentions (and the knowledge never does), if any."""
        ranking = self._ranking
        match = ranking.names.find(text)
        return None if match is None else (replace(ranking.catalog[match.group], score=1.0), match)

    @property
    def names(self) -> NameTable:
        """The out-of-scope names in use, and those ignored because the knowledge mentions them."""
        return self._ranking.names

    def item_titled(self, text: str) -> Hit | None:
        """The answerable item whose title is `text` (case and spacing aside), if exactly one has it.

        Suggestions are shown as item titles; a customer who taps one sends its title and means that item.
        """
        ranking = self._ranking
        item_id = ranking.titles.get(normalised(text))
        return None if item_id is None else ranking.catalog[item_id]

    def answerable(self) -> dict[str, Hit]:
        """The items a message can be answered with (out-of-scope groups left out), as a search shows them."""
        return {item_id: hit for item_id, hit in self._ranking.catalog.items() if hit.kind != OUT_OF_SCOPE_KIND}

    def answerable_ids(self) -> set[str]:
        return set(self.answerable())

    def items(self) -> dict[str, list[str]]:
        """item id -> its embedded texts (for tools that learn from the knowledge base)."""
        texts: dict[str, list[str]] = {}
        for text in self._texts.values():
            texts.setdefault(text.item_id, []).append(text.text)
        return texts

    def overlaps(self, threshold: float) -> tuple[OverlapReport, dict[str, Hit]]:
        """Which phrasings another item would answer under the weights in use, and the items they name."""
        ranking = self._ranking
        return find_overlaps(self._calibration_texts(), ranking.calibration.weights, threshold), ranking.catalog

    # -- calibration ---------------------------------------------------------------------------

    def _calibration_key(self) -> str:
        """Changes when anything calibration reads changes: the texts, the FAQ answers, the procedure."""
        digest = hashlib.sha256(f"v{calibration.VERSION}|{self._embedder.identity}".encode())
        for rid in sorted(self._metadata):
            digest.update(rid.encode())
        for meta in sorted(self._metadata.values(), key=lambda m: str(m["item_id"])):
            if meta["kind"] == "faq":
                digest.update(hashlib.sha256(str(meta["body"]).encode()).digest())
        return digest.hexdigest()

    def _calibration_texts(self) -> list[IndexedText]:
        """Every text in a fixed order, so calibrating the same knowledge always gives the same result.

        Per item, its lead text comes first (an FAQ's question, a passage's whole section: calibration
        never hides it), then the others alphabetically.
        """
        catalog = self._ranking.catalog

        def order(text: IndexedText) -> tuple[str, bool, str]:
            title = catalog[text.item_id].title if text.item_id in catalog else ""
            lead = text.text == title or text.text.startswith(title + "\n")
            return (text.item_id, not lead, text.text)

        return sorted(self._texts.values(), key=order)

    def _scorer(self, key: str) -> ItemScorer:
        """A scorer for the current texts, with the classifier stored for them (`key`) or a newly trained one."""
        path = self._classifier_path
        stored = ItemClassifier.load(path, key) if path is not None else None
        scorer = ItemScorer(list(self._texts.values()), classifier=stored)
        if path is not None and scorer.classifier is not stored:
            scorer.classifier.save(path, key)
        return scorer

    def _cached_calibration(self, key: str) -> Calibration | None:
        stored = self._collection.metadata or {}
        if stored.get(_CALIBRATION_KEY) != key:
            return None
        try:
            return Calibration.from_dict(json.loads(str(stored[_CALIBRATION])))
        except (KeyError, TypeError, ValueError):
            return None

    def _recalibrate(self, key: str, generation: int, texts: list[IndexedText], catalog: dict[str, Hit]) -> None:
        with self._calibration_lock:
            if generation != self._generation or self._closing.is_set():
                return  # a newer sync has started its own, or the service is stopping
            log.info("calibrating answer selection (%d texts)", len(texts))
            started = time.perf_counter()

            def cancelled() -> bool:  # newer knowledge makes this calibration pointless; so does stopping
                return self._closing.is_set() or generation != self._generation

            try:
                result = calibrate(texts, lambda: self._answer_texts(catalog, cancelled), cancelled=cancelled)
            except calibration.Cancelled:
                if self._closing.is_set():
                    log.info("calibration stopped: shutting down (the next start calibrates again)")
                else:
                    log.info(
                        "calibration stopped: superseded by a newer sync after %.1fs", time.perf_counter() - started
                    )
                return
            with self._swap_lock:
                if generation != self._generation:
                    return
                self._ranking = replace(self._ranking, calibration=result)
            log.info("answer selection calibrated: %s", result.summary())
            metadata = {k: v for k, v in (self._collection.metadata or {}).items() if k not in ("hnsw:space",)}
            metadata |= {_CALIBRATION_KEY: key, _CALIBRATION: json.dumps(result.to_dict())}
            self._collection.modify(metadata=metadata)

    def _answer_texts(
        self, catalog: dict[str, Hit], cancelled: Callable[[], bool] = lambda: False
    ) -> list[IndexedText]:
        """FAQ answers split as passages are: how the knowledge base words its answers rather than its questions.

        Embedded in batches; raises calibration.Cancelled between them once `cancelled()` says so (what was
        embedded is kept for the next calibration).
        """
        pending: list[tuple[str, str, str]] = []  # (item id, text, digest)
        for hit in catalog.values():
            if hit.kind == "faq":
                as_passage = answer_as_passage(hit.item_id, hit.title, hit.body, hit.file, hit.line)
                pending.extend((hit.item_id, text, _digest(text)) for text in as_passage.utterances())
        # By length, so each batch pads to texts of about its own length.
        missing = sorted(
            {text for _, text, digest in pending if digest not in self._answer_vectors}, key=lambda t: (len(t), t)
        )
        for start in range(0, len(missing), _ANSWER_BATCH):
            if cancelled():
                raise calibration.Cancelled
            batch = missing[start : start + _ANSWER_BATCH]
            for text, vector in zip(batch, self._embedder.embed(batch), strict=True):
                self._answer_vectors[_digest(text)] = vector
        wanted = {digest for _, _, digest in pending}
        self._answer_vectors = {d: v for d, v in self._answer_vectors.items() if d in wanted}
        return [IndexedText(item_id, "passage", text, self._answer_vectors[d]) for item_id, text, d in pending]

    # -- internals -----------------------------------------------------------------------------

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

    def _write(self, plan: _Plan, progress: Progress | None) -> dict[str, np.ndarray]:
        """Apply the plan; returns the vectors of the texts it embedded, by record id."""
        # Add first, delete last: a search running meanwhile sees the old or the new text, never neither.
        embedded: dict[str, np.ndarray] = {}
        for start in range(0, len(plan.to_embed), _WRITE_BATCH):
            batch = plan.to_embed[start : start + _WRITE_BATCH]
            done = start

            def report(n: int, _total: int, done: int = done) -> None:
                if progress is not None:
                    progress(done + n, len(plan.to_embed))

            vectors = self._embedder.embed([r.text for r in batch], report)
            embedded.update(zip((r.id for r in batch), vectors, strict=True))
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
        return embedded


def _after(existing: dict[str, dict[str, Any]], plan: _Plan) -> dict[str, dict[str, Any]]:
    """Record id -> metadata once `plan` is written over `existing`."""
    deleted = set(plan.to_delete)
    metadata = {rid: meta for rid, meta in existing.items() if rid not in deleted}
    metadata.update({record.id: dict(record.metadata) for record in plan.to_embed + plan.to_relabel})
    return metadata


def _indexed(metadata: dict[str, Any], text: str, vector: np.ndarray) -> IndexedText:
    asked = bool(metadata.get("questions"))
    return IndexedText(str(metadata["item_id"]), str(metadata["kind"]), text, vector, asked)


def _rows(embeddings: Any) -> list[np.ndarray]:
    return [] if embeddings is None else list(embeddings)


def _examples(texts: Iterable[IndexedText]) -> dict[str, str]:
    return {normalised(t.text): t.item_id for t in texts if t.kind == OUT_OF_SCOPE_KIND}


def _names(metadata: dict[str, dict[str, Any]], texts: Iterable[IndexedText], catalog: dict[str, Hit]) -> NameTable:
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


def _titles(catalog: dict[str, Hit]) -> dict[str, str]:
    owners: dict[str, list[str]] = {}
    for hit in catalog.values():
        if hit.kind != OUT_OF_SCOPE_KIND:
            owners.setdefault(normalised(hit.title), []).append(hit.item_id)
    return {title: ids[0] for title, ids in owners.items() if len(ids) == 1}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


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
            handoff=bool(meta.get("handoff")),
            action=str(meta["action"]) if meta.get("action") else None,
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
        # Every optional key is always written: Chroma merges a relabelled record's metadata into the old,
        # so names or a mark an operator took away must be overwritten with nothing, not left out.
        names = item.names if isinstance(item, OutOfScopeGroup) else ()
        metadata["names"] = json.dumps(names) if names else ""
        metadata["questions"] = len(item.questions) if isinstance(item, Passage) else 0
        metadata["handoff"] = int(marked_for_a_person(item))
        metadata["action"] = (item.action or "") if isinstance(item, FaqEntry) else ""
        for text in item.utterances():
            records.append(_Record(f"{item.id}::{_digest(text)}", text, metadata))
    return records
