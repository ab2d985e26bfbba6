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

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from bot.knowledge.loader import vet
from bot.knowledge.model import KnowledgeFile
from bot.knowledge.names import NameTable
from bot.retrieval import records, reencoding, snapshot
from bot.retrieval.answers import AnswerVectors
from bot.retrieval.chroma import ChromaHome, metadata_of, variant
from bot.retrieval.embedding import Embedder, Progress
from bot.retrieval.hit import Hit
from bot.retrieval.ranking import calibration
from bot.retrieval.ranking.calibration import Calibration, calibrate
from bot.retrieval.ranking.overlaps import OverlapReport, find_overlaps
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer
from bot.retrieval.records import Record
from bot.retrieval.snapshot import Ranking
from bot.retrieval.writing import SyncReport, plan_sync, write_plan

__all__ = ["Hit", "KnowledgeIndex", "SyncReport"]

log = logging.getLogger(__name__)

# Changed by the process that syncs each time it writes: the others reload when they see it change.
_GENERATION = "generation"


class KnowledgeIndex:
    def __init__(self, home: ChromaHome, collection: Collection, embedder: Embedder, clarify: bool = False) -> None:
        self._home = home
        self._clarify = clarify  # calibrate the margins for asking back (answering.clarify: auto)
        self._collection = collection
        self._embedder = embedder
        self._sync_lock = threading.Lock()
        self._calibration_lock = threading.Lock()  # one calibration at a time
        self._marking = threading.Lock()  # read-modify-write of the collection's metadata
        # Guards replacing `_ranking` together with `_generation` (bumped by each sync), so a background
        # calibration finishing for older content never lands on newer content.
        self._swap_lock = threading.Lock()
        self._generation = 0
        self._closing = threading.Event()
        self._background: list[threading.Thread] = []  # calibrations started by live edits
        self._answers = AnswerVectors(embedder)
        self._metadata: dict[str, dict[str, Any]] = {}
        self._texts: dict[str, IndexedText] = {}
        self._seen: object = None  # the shared generation this process last loaded
        self._load(collection, keep_classifier=True)

    def _load(self, collection: Collection, keep_classifier: bool) -> None:
        """Read every record and build the ranking from them (at start, and when another process synced)."""
        self._seen = (collection.metadata or {}).get(_GENERATION)
        held = self._home.guard(lambda: reencoding.read(collection))
        self._metadata, self._texts = held.metadata, held.texts
        key = self._calibration_key()
        scorer = self._scorer(key, keep_classifier)
        cached = self._cached_calibration(key, collection)
        with self._swap_lock:
            previous = getattr(self, "_ranking", None)
            fallback = previous.calibration if previous is not None else calibration.DEFAULT
            self._generation += 1
            self._ranking = Ranking.of(self._metadata, self._texts, scorer, cached or fallback)

    @classmethod
    def open(
        cls, path: Path, collection_name: str, embedder: Embedder, clarify: bool = False, tuned: bool = False
    ) -> KnowledgeIndex:
        """Open (or create) the embedded, persistent index at `path`. `clarify`: also calibrate when to ask
        back. `tuned`: `embedder` is one that `adopt` switched to, whose records have a collection of their own."""
        home = ChromaHome.embedded(path, collection_name, embedder)
        if tuned:
            home = home.sibling(embedder)
        return cls(home, home.open(embedder.identity), embedder, clarify)

    @classmethod
    def connect(cls, url: str, collection_name: str, embedder: Embedder, clarify: bool = False) -> KnowledgeIndex:
        """The index on a Chroma server several processes share (IndexUnavailable when it cannot be reached)."""
        home = ChromaHome.server(url, collection_name, embedder)
        return cls(home, home.open(embedder.identity), embedder, clarify)

    @property
    def shared(self) -> bool:
        """On a server other processes use too: one of them syncs, the others `refresh`."""
        return self._home.shared

    @property
    def where(self) -> str:
        return self._home.where

    def ping(self) -> float:
        return self._home.ping()

    @property
    def generation(self) -> str | None:
        """The shared index's content this process serves (changed by each sync that wrote); None embedded."""
        return None if self._seen is None or not self.shared else str(self._seen)

    def refresh(self) -> bool:
        """Load what another process synced into the shared index since this one last looked (its records,
        or a new calibration). True when something new was loaded. Cheap when nothing changed: one request."""
        if not self.shared:
            return False
        with self._sync_lock:
            if self._reload_if_changed(keep_classifier=False):
                return True
            with self._swap_lock:
                cached = self._cached_calibration(self._calibration_key(), self._collection)
                if cached is None or cached == self._ranking.calibration:
                    return False
                self._ranking = replace(self._ranking, calibration=cached)
            log.info("answer selection calibrated by another process: %s", cached.summary())
            return True

    def _reload_if_changed(self, keep_classifier: bool) -> bool:
        """Fetch the shared collection (its metadata as the server has it now) and load it again if another
        process wrote a new generation since this one loaded. True when it did. Under `_sync_lock`."""
        collection = self._home.collection()
        self._collection = collection
        if (collection.metadata or {}).get(_GENERATION) == self._seen:
            return False
        self._load(collection, keep_classifier)
        return True

    def _mark(self, **updates: str) -> None:
        """Record `updates` in the collection's metadata, keeping the rest (Chroma replaces it as a whole)."""
        with self._marking:
            collection = self._collection
            self._home.guard(lambda: collection.modify(metadata=metadata_of(collection) | updates))

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
            if self.shared:  # plan against what the server holds now, whoever wrote it
                self._reload_if_changed(keep_classifier=True)
            existing = self._metadata
            vetting = vet(files, {m["item_id"]: m["file"] for m in existing.values()})
            plan, changes = plan_sync(vetting, existing)
            embedded_before = self._embedder.texts_embedded
            collection = self._collection
            vectors = self._home.guard(lambda: write_plan(collection, self._embedder, plan, progress))
            texts_embedded = self._embedder.texts_embedded - embedded_before
            self._metadata = records.after(existing, plan)  # what was written, without reading it back
            for rid in plan.to_delete:
                self._texts.pop(rid, None)
            for record in plan.to_relabel:
                self._texts[record.id] = records.indexed(record.metadata, record.text, self._texts[record.id].vector)
            for record in plan.to_embed:
                self._texts[record.id] = records.indexed(record.metadata, record.text, vectors[record.id])
            key = self._calibration_key()
            cached = self._cached_calibration(key, self._collection)
            # Nothing written (a restart on unchanged files): the texts are those the scorer was built from.
            unchanged_texts = not (plan.to_embed or plan.to_relabel or plan.to_delete)
            scorer = self._ranking.scorer if unchanged_texts else self._scorer(key, keep=True)
            with self._swap_lock:
                self._generation += 1
                self._ranking = Ranking.of(self._metadata, self._texts, scorer, cached or self._ranking.calibration)
            if not unchanged_texts:  # the classifier is stored by now: the others may load it all
                self._seen = secrets.token_hex(8)
                self._mark(**{_GENERATION: str(self._seen)})
            if cached is None:
                self._calibrate_for(key, calibrate_in_background)
            return SyncReport(
                added=tuple(sorted(changes.added)),
                updated=tuple(sorted(changes.updated)),
                removed=tuple(sorted(changes.removed)),
                unchanged=changes.unchanged,
                texts_embedded=texts_embedded,
                seconds=time.perf_counter() - started,
                rejected=vetting.rejected,
                files=len(files),
                calibration=self._ranking.calibration if not calibrate_in_background or cached else None,
            )

    def _calibrate_for(self, key: str, in_background: bool) -> None:
        """Calibrate for the texts now served (`key`), at once or in the background. Under `_sync_lock`."""
        job = (key, self._generation, self._calibration_texts(), self._ranking.catalog)
        if in_background:
            # Not a daemon: the interpreter would stop it mid-computation at exit (and abort in torch).
            thread = threading.Thread(target=self._recalibrate, args=job, name="calibration")
            self._background = [t for t in self._background if t.is_alive()] + [thread]
            thread.start()
        else:
            self._recalibrate(*job)

    def adopt(self, embedder: Embedder, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Serve the same knowledge through `embedder` (a tuned encoder) from now on.

        The records are embedded again into a collection of the family's own for `embedder`, and the
        classifier and calibration are worked out for the new vectors, while the current encoder goes on
        serving; edits synced meanwhile are then caught up, and everything switches at once. Collections of
        tuned encoders used before are deleted first. Raises calibration.Cancelled, changing nothing, once
        `cancelled()` says stop or the index is closing.
        """
        if self.shared:
            raise ValueError("switching encoders is for the embedded index only")

        def stop() -> bool:
            return cancelled() or self._closing.is_set()

        with self._sync_lock:
            wanted = self._records()
            self._home.drop_siblings(keep={variant(self._home.family, embedder.identity)})
        encoding = reencoding.encode(self._home, embedder, wanted, self._clarify, stop)
        answers = AnswerVectors(embedder)
        calibrated = reencoding.calibrated(encoding, answers, self._clarify, stop)
        with self._sync_lock:
            if stop():
                raise calibration.Cancelled
            caught_up = self._records()
            if caught_up != wanted:  # a live edit was synced meanwhile: a few texts to embed, a classifier
                encoding = reencoding.catch_up(encoding, caught_up, self._clarify)
            with self._swap_lock:
                self._home, self._collection, self._embedder = encoding.home, encoding.collection, embedder
                self._answers, self._metadata, self._texts = answers, encoding.held.metadata, encoding.held.texts
                self._generation += 1
                self._ranking = Ranking.of(self._metadata, self._texts, encoding.scorer, calibrated)
            if caught_up == wanted:
                self._store_calibration(encoding.key, calibrated)
            else:  # what was calibrated is for the knowledge of a moment ago: it serves until this is done
                self._calibrate_for(encoding.key, in_background=True)
        log.info("now serving through encoder %s (collection %s)", embedder.identity, encoding.home.name)

    def _records(self) -> dict[str, Record]:
        """The records served now, as they would be written again."""
        return {rid: Record(rid, self._texts[rid].text, dict(meta)) for rid, meta in self._metadata.items()}

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
        return self._search(self._ranking, self._collection, query_vectors, query_texts, k)

    def find(self, texts: Sequence[str], k: int) -> list[list[Hit]]:
        """`search_many` for messages not yet embedded: by the encoder whose vectors are searched, also while
        `adopt` switches encoders."""
        with self._swap_lock:
            embedder, ranking, collection = self._embedder, self._ranking, self._collection
        return self._search(ranking, collection, embedder.embed(texts), texts, k)

    def _search(
        self, ranking: Ranking, collection: Collection, vectors: np.ndarray, texts: Sequence[str], k: int
    ) -> list[list[Hit]]:
        if k <= 0 or not ranking.catalog:
            return [[] for _ in vectors]
        # Items have several texts each; ask for enough texts to see 2k distinct items.
        n_results = min(len(self), max(k * 8, 40))
        result = self._home.guard(
            lambda: collection.query(query_embeddings=[v.tolist() for v in vectors], n_results=n_results, include=[])
        )
        weights = ranking.calibration.weights
        ranked = []
        for vector, text, record_ids in zip(vectors, texts, result["ids"], strict=True):
            nearest = list(dict.fromkeys(rid.rpartition("::")[0] for rid in record_ids))[: 2 * k]
            scored = ranking.scorer.score_candidates(vector, text, nearest, weights, extra=k)
            ranked.append([replace(ranking.catalog[i], score=score) for i, score in scored[:k]])
        return ranked

    @property
    def ranking(self) -> Ranking:
        """What searches read now (lookups by title, example or name among it); take it once per message."""
        return self._ranking

    @property
    def names(self) -> NameTable:
        """The out-of-scope names in use, and those ignored because the knowledge mentions them."""
        return self._ranking.names

    def answerable(self) -> dict[str, Hit]:
        return self._ranking.answerable()

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
        return snapshot.calibration_key(self._embedder.identity, self._metadata, self._clarify)

    def _calibration_texts(self) -> list[IndexedText]:
        return snapshot.calibration_order(self._texts, self._ranking.catalog)

    def _scorer(self, key: str, keep: bool) -> ItemScorer:
        return snapshot.scorer_for(self._home, key, self._texts, keep)

    def _store_calibration(self, key: str, calibrated: Calibration) -> None:
        self._mark(**{snapshot.CALIBRATION_KEY: key, snapshot.CALIBRATION: json.dumps(calibrated.to_dict())})

    def _cached_calibration(self, key: str, collection: Collection) -> Calibration | None:
        return snapshot.stored_calibration(collection.metadata, key)

    def _recalibrate(self, key: str, generation: int, texts: list[IndexedText], catalog: dict[str, Hit]) -> None:
        with self._calibration_lock:
            if generation != self._generation or self._closing.is_set():
                return  # a newer sync has started its own, or the service is stopping
            log.info("calibrating answer selection (%d texts)", len(texts))
            started = time.perf_counter()

            def cancelled() -> bool:  # newer knowledge makes this calibration pointless; so does stopping
                return self._closing.is_set() or generation != self._generation

            try:
                result = calibrate(
                    texts,
                    lambda: self._answers.texts(catalog, cancelled),
                    cancelled=cancelled,
                    embed=self.embedder.embed if self._clarify else None,
                )
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
            self._store_calibration(key, result)
