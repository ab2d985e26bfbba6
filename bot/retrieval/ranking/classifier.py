"""A linear classifier over the knowledge base's own phrasings: which item a message belongs to.

Nearest-neighbour similarity treats every direction of the embedding alike. A classifier trained on
the phrasings learns which directions tell the items apart ("card arrived" vs "card not arrived"),
and its probabilities spread out when a message resembles several items or none. It is one more
signal in the fused score; calibration decides how much it counts.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

# Inverse regularisation strength. Chosen on held-out phrasings of the knowledge bases themselves
# (calibration's validation objective on the demo and on BANKING77 training data), never on test sets.
INVERSE_REGULARISATION = 10.0
_MAX_ITERATIONS = 200


@dataclass(frozen=True)
class ItemClassifier:
    """Multinomial logistic regression from a text's vector to its item (columns in `item_ids` order)."""

    item_ids: tuple[str, ...]
    coef: np.ndarray  # (items, dimension)
    intercept: np.ndarray  # (items,)

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: np.ndarray, item_ids: Sequence[str]) -> ItemClassifier:
        """Learn from `vectors` (texts, dimension); `labels[i]` is the position in `item_ids` of text i's item.

        Every item has a text.
        """
        item_ids = tuple(item_ids)
        dimension = vectors.shape[1] if vectors.ndim == 2 else 0
        if len(item_ids) < 2:  # one item (or none): it is the only answer there is
            return cls(item_ids, np.zeros((len(item_ids), dimension), np.float32), np.zeros(len(item_ids), np.float32))
        # Each item counts equally, however many phrasings it has (FAQ entries have many, passages few).
        counts = np.bincount(labels, minlength=len(item_ids))
        sample_weight = len(labels) / (len(item_ids) * counts[labels])
        model = LogisticRegression(C=INVERSE_REGULARISATION, max_iter=_MAX_ITERATIONS)
        # One BLAS thread: the server answers messages on the other core meanwhile. An unconverged fit after
        # _MAX_ITERATIONS is already a usable ranking signal, and one phrasing per item (an item per class) is
        # a knowledge base scikit-learn mistakes for regression data: neither warning is worth a log line.
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
            model.fit(vectors, labels, sample_weight=sample_weight)
        coef, intercept = model.coef_, model.intercept_
        if len(item_ids) == 2:  # scikit-learn keeps one row for two classes; softmax of (-z/2, z/2) is sigmoid(z)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return cls(item_ids, coef.astype(np.float32), intercept.astype(np.float32))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(messages, items): how likely each message is to belong to each item; rows sum to 1."""
        if len(self.item_ids) < 2:
            return np.ones((len(vectors), len(self.item_ids)), dtype=np.float32)
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return result

    def to_bytes(self, key: str) -> bytes:
        """What `from_bytes` reads back with the same `key` (what the classifier was trained on)."""
        handle = io.BytesIO()
        np.savez(handle, key=np.array(key), item_ids=np.array(self.item_ids), coef=self.coef, intercept=self.intercept)
        return handle.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> ItemClassifier | None:
        """The classifier `to_bytes` wrote under `key`; None when it is for other texts or unreadable."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                if str(stored["key"]) != key:
                    return None
                return cls(tuple(str(i) for i in stored["item_ids"]), stored["coef"], stored["intercept"])
        except (OSError, KeyError, ValueError, EOFError):
            return None

    def save(self, path: Path, key: str) -> None:
        """Store for `load` with the same `key`. Atomic."""
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(self.to_bytes(key))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path, key: str) -> ItemClassifier | None:
        """The classifier `save` stored under `key`; None when there is none, it is for other texts, or unreadable."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return cls.from_bytes(data, key)
