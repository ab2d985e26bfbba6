"""Item scores for messages: dense similarity fused with BM25, over one consistent set of texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.ranking.dense import DenseScores, ItemSpace
from bot.ranking.lexical import LexicalScorer, LexicalScores, Tokenizer


@dataclass(frozen=True)
class IndexedText:
    item_id: str
    kind: str  # "faq" | "passage"
    text: str
    vector: np.ndarray  # unit length


@dataclass(frozen=True)
class Weights:
    """How the signals add up to an item's score (about 0..1.2; the answer threshold is on this scale)."""

    nearest: float  # share of the dense part from the item's two best texts; the rest is its centroid
    lexical: float  # weight of BM25, added to the dense part
    absolute_lexical: bool = False  # BM25 as a share of the message's words covered, not relative to the best item
    # Passages are long and worded like policy, not like questions, so messages match them less
    # closely than FAQ entries written as questions; this evens the odds.
    passage_bonus: float = 0.0

    def fuse(self, dense: DenseScores, lexical: LexicalScores, passages: np.ndarray) -> np.ndarray:
        """`passages`: (items,) bool, which columns are passages."""
        fused: np.ndarray = (
            self.nearest * dense.nearest
            + (1 - self.nearest) * dense.centroid
            + self.lexical * lexical.pick(self.absolute_lexical)
            + self.passage_bonus * passages
        )
        return fused


class ItemScorer:
    """Scores every item (or chosen candidates) for a batch of messages."""

    def __init__(self, texts: Sequence[IndexedText], tokenizer: Tokenizer | None = None) -> None:
        item_ids = sorted({t.item_id for t in texts})
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        self.item_ids = tuple(item_ids)
        dimension = len(texts[0].vector) if texts else 0
        vectors = np.array([t.vector for t in texts], dtype=np.float32).reshape(len(texts), dimension)
        text_items = np.array([self.position[t.item_id] for t in texts], dtype=np.intp)
        self.space = ItemSpace(len(item_ids), text_items, vectors)
        documents: list[list[str]] = [[] for _ in item_ids]
        self.passages = np.zeros(len(item_ids), dtype=bool)
        for t in texts:
            documents[self.position[t.item_id]].append(t.text)
            self.passages[self.position[t.item_id]] = t.kind == "passage"
        self.lexical = LexicalScorer(documents, tokenizer)

    def __len__(self) -> int:
        return len(self.item_ids)

    def signals(self, vectors: np.ndarray, texts: Sequence[str]) -> tuple[DenseScores, LexicalScores]:
        """Dense and lexical scores of every item, (messages, items) each."""
        return self.space.scores(vectors), self.lexical.scores(texts)

    def score_candidates(
        self, vector: np.ndarray, text: str, candidates: Sequence[str], weights: Weights, extra: int
    ) -> list[tuple[str, float]]:
        """Fused scores for `candidates` plus the `extra` items whose centroid and words match best.

        The candidates come from the nearest texts in the vector store; the extras catch items that
        only their wording or their topic as a whole brings up. Best first.
        """
        lexical = self.lexical.scores([text])
        centroid = self.space.centroid_scores(vector[np.newaxis, :])
        broad = weights.fuse(DenseScores(nearest=centroid, centroid=centroid), lexical, self.passages)[0]
        chosen = {self.position[c] for c in candidates if c in self.position}
        if extra > 0 and len(broad):
            chosen.update(np.argsort(-broad)[:extra].tolist())
        positions = np.array(sorted(chosen), dtype=np.intp)
        if len(positions) == 0:
            return []
        dense = self.space.scores(vector[np.newaxis, :], positions)
        picked = LexicalScores(lexical.relative[:, positions], lexical.absolute[:, positions])
        fused = weights.fuse(dense, picked, self.passages[positions])[0]
        order = np.argsort(-fused, kind="stable")
        return [(self.item_ids[positions[i]], float(fused[i])) for i in order]
