"""FAQ answers embedded as passages, for calibration: how the knowledge base words its answers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bot.knowledge.model import answer_as_passage
from bot.retrieval import records
from bot.retrieval.embedding import Embedder
from bot.retrieval.hit import Hit
from bot.retrieval.ranking import calibration
from bot.retrieval.ranking.scorer import IndexedText

# Embedded this many at a time, so a superseded calibration stops between batches.
_ANSWER_BATCH = 64


class AnswerVectors:
    """The FAQ answers' sentences, embedded once each (by text digest) and kept for the next calibration."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    def texts(self, catalog: dict[str, Hit], cancelled: Callable[[], bool] = lambda: False) -> list[IndexedText]:
        """FAQ answers split as passages are, embedded in batches; raises calibration.Cancelled between
        them once `cancelled()` says so (what was embedded is kept)."""
        pending: list[tuple[str, str, str]] = []  # (item id, text, digest)
        for hit in catalog.values():
            if hit.kind == "faq":
                as_passage = answer_as_passage(hit.item_id, hit.title, hit.body, hit.file, hit.line)
                pending.extend((hit.item_id, text, records.digest(text)) for text in as_passage.utterances())
        # By length, so each batch pads to texts of about its own length.
        missing = sorted(
            {text for _, text, digest in pending if digest not in self._vectors}, key=lambda t: (len(t), t)
        )
        for start in range(0, len(missing), _ANSWER_BATCH):
            if cancelled():
                raise calibration.Cancelled
            batch = missing[start : start + _ANSWER_BATCH]
            for text, vector in zip(batch, self._embedder.embed(batch), strict=True):
                self._vectors[records.digest(text)] = vector
        wanted = {digest for _, _, digest in pending}
        self._vectors = {d: v for d, v in self._vectors.items() if d in wanted}
        return [IndexedText(item_id, "passage", text, self._vectors[d]) for item_id, text, d in pending]
