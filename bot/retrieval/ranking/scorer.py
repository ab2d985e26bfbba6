"""Item scores for messages: dense similarity, BM25 and a classifier fused, over one consistent set of texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.knowledge.model import OUT_OF_SCOPE_KIND
from bot.retrieval.ranking.classifier import ItemClassifier
from bot.retrieval.ranking.dense import DenseScores, ItemSpace
from bot.retrieval.ranking.lexical import LexicalScorer, LexicalScores, Tokenizer


@dataclass(frozen=True)
class IndexedText:
    item_id: str
    kind: str  # "faq" | "passage" | "out_of_scope"
    text: str
    vector: np.ndarray  # unit length
    # A passage its operators also gave customers' questions: found by question wording like an FAQ
    # entry, so it gets no passage bonus.
    asked: bool = False


@dataclass(frozen=True)
class Signals:
    """Every signal for a batch of messages, (messages, items) each, columns in the scorer's item order."""

    dense: DenseScores
    lexical: LexicalScores
    classifier: np.ndarray  # probability of each item

    def rows(self, keep: np.ndarray) -> Signals:
        """The same signals for the messages where `keep` is true."""
        return Signals(
            DenseScores(self.dense.nearest[keep], self.dense.centroid[keep]),
            LexicalScores(self.lexical.relative[keep], self.lexical.absolute[keep]),
            self.classifier[keep],
        )


@dataclass(frozen=True)
class Weights:
    """How the signals add up to an item's score (about 0..1.5; the answer threshold is on this scale)."""

    nearest: float  # share of the dense part from the item's two best texts; the rest is its centroid
    lexical: float  # weight of BM25, added to the dense part
    absolute_lexical: bool = False  # BM25 as a share of the message's words covered, not relative to the best item
    # Passages are long and worded like policy, not like questions, so messages match them less
    # closely than FAQ entries written as questions; this evens the odds for passages without questions.
    passage_bonus: float = 0.0
    classifier: float = 0.0  # weight of the classifier's probability, added like BM25

    def fuse(self, signals: Signals, policy_worded: np.ndarray) -> np.ndarray:
        """`policy_worded`: (items,) bool, which columns are passages found only by their policy wording."""
        fused: np.ndarray = (
            self.nearest * signals.dense.nearest
            + (1 - self.nearest) * signals.dense.centroid
            + self.lexical * signals.lexical.pick(self.absolute_lexical)
            + self.classifier * signals.classifier
            + self.passage_bonus * policy_worded
        )
        return fused


class ItemScorer:
    """Scores every item (or chosen candidates) for a batch of messages."""

    def __init__(
        self,
        texts: Sequence[IndexedText],
        tokenizer: Tokenizer | None = None,
        classifier: ItemClassifier | None = None,
    ) -> None:
        """`classifier`: one trained earlier on these same texts (from a cache); trained here when None."""
        item_ids = sorted({t.item_id for t in texts})
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        self.item_ids = tuple(item_ids)
        dimension = len(texts[0].vector) if texts else 0
        vectors = np.array([t.vector for t in texts], dtype=np.float32).reshape(len(texts), dimension)
        text_items = np.array([self.position[t.item_id] for t in texts], dtype=np.intp)
        self.space = ItemSpace(len(item_ids), text_items, vectors)
        documents: list[list[str]] = [[] for _ in item_ids]
        self.policy_worded = np.zeros(len(item_ids), dtype=bool)  # passages without questions: the bonus
        self.out_of_scope = np.zeros(len(item_ids), dtype=bool)  # groups of messages to decline
        for t in texts:
            documents[self.position[t.item_id]].append(t.text)
            self.policy_worded[self.position[t.item_id]] = t.kind == "passage" and not t.asked
            self.out_of_scope[self.position[t.item_id]] = t.kind == OUT_OF_SCOPE_KIND
        self.lexical = LexicalScorer(documents, tokenizer)
        if classifier is None or classifier.item_ids != self.item_ids:
            classifier = ItemClassifier.fit(vectors, text_items, self.item_ids)
        self.classifier = classifier

    def __len__(self) -> int:
        return len(self.item_ids)

    def signals(self, vectors: np.ndarray, texts: Sequence[str]) -> Signals:
        """Every signal for every item."""
        return Signals(self.space.scores(vectors), self.lexical.scores(texts), self.classifier.probabilities(vectors))

    def score_candidates(
        self, vector: np.ndarray, text: str, candidates: Sequence[str], weights: Weights, extra: int
    ) -> list[tuple[str, float]]:
        """Fused scores for `candidates` plus the `extra` items whose centroid, words and class match best.

        The candidates come from the nearest texts in the vector store; the extras catch items that
        only their wording, their topic as a whole or the classifier brings up. Best first.
        """
        lexical = self.lexical.scores([text])
        probabilities = self.classifier.probabilities(vector[np.newaxis, :])
        centroid = self.space.centroid_scores(vector[np.newaxis, :])
        broad = weights.fuse(Signals(DenseScores(centroid, centroid), lexical, probabilities), self.policy_worded)[0]
        chosen = {self.position[c] for c in candidates if c in self.position}
        if extra > 0 and len(broad):
            chosen.update(np.argsort(-broad)[:extra].tolist())
        positions = np.array(sorted(chosen), dtype=np.intp)
        if len(positions) == 0:
            return []
        dense = self.space.scores(vector[np.newaxis, :], positions)
        picked = Signals(
            dense,
            LexicalScores(lexical.relative[:, positions], lexical.absolute[:, positions]),
            probabilities[:, positions],
        )
        fused = weights.fuse(picked, self.policy_worded[positions])[0]
        order = np.argsort(-fused, kind="stable")
        return [(self.item_ids[positions[i]], float(fused[i])) for i in order]
