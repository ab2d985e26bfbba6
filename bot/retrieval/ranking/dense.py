"""Exact similarity between messages and knowledge items, from every text's stored vector.

An item is found by several texts (an FAQ's question and alternates, a passage's sentences). Two
views of it are used: the mean of its two best-matching texts (robust to one lucky paraphrase) and
its centroid (the topic as a whole, which rewards items whose texts agree with each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_QUERY_CHUNK = 512  # bounds the (messages x texts) similarity matrix during calibration


@dataclass(frozen=True)
class DenseScores:
    nearest: np.ndarray  # (messages, items): mean of the item's two most similar texts
    centroid: np.ndarray  # (messages, items): cosine to the normalised mean of the item's texts


class ItemSpace:
    """Text vectors grouped by item; items are numbered in the order given."""

    def __init__(self, n_items: int, text_items: np.ndarray, vectors: np.ndarray) -> None:
        """`text_items[i]` is the number (0 .. n_items-1) of the item that text `i` (row `vectors[i]`) finds."""
        order = np.argsort(text_items, kind="stable")
        self._vectors = np.ascontiguousarray(vectors[order], dtype=np.float32)
        counts = np.bincount(text_items, minlength=n_items)
        if n_items and counts.min() == 0:
            raise ValueError("every item needs at least one text")
        self._starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
        self._counts = counts
        if n_items:
            sums = np.add.reduceat(self._vectors, self._starts, axis=0)
            self._centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        else:
            self._centroids = np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)

    def centroid_scores(self, queries: np.ndarray) -> np.ndarray:
        scores: np.ndarray = queries @ self._centroids.T
        return scores

    def scores(self, queries: np.ndarray, items: np.ndarray | None = None) -> DenseScores:
        """Both views for `items` (positions; all items when None), columns in that order."""
        if items is None:
            starts, counts, vectors = self._starts, self._counts, self._vectors
            centroids = self._centroids
        else:
            counts = self._counts[items]
            rows = np.concatenate([np.arange(s, s + c) for s, c in zip(self._starts[items], counts, strict=True)])
            vectors = self._vectors[rows]
            starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
            centroids = self._centroids[items]
        nearest = np.empty((len(queries), len(counts)), dtype=np.float32)
        for begin in range(0, len(queries), _QUERY_CHUNK):
            chunk = queries[begin : begin + _QUERY_CHUNK]
            nearest[begin : begin + len(chunk)] = _top2_mean(chunk @ vectors.T, starts, counts)
        return DenseScores(nearest=nearest, centroid=queries @ centroids.T)


def _top2_mean(similarities: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per item (a run of columns), the mean of the two largest values; the only value for one-text items."""
    if similarities.shape[1] == 0:
        return np.zeros((similarities.shape[0], len(counts)), dtype=np.float32)
    first = np.maximum.reduceat(similarities, starts, axis=1)
    below_first = np.where(similarities >= np.repeat(first, counts, axis=1), -np.inf, similarities)
    second = np.maximum.reduceat(below_first, starts, axis=1)
    # A one-text item has no second value: its score is its only similarity.
    second = np.where(np.isfinite(second), second, first)
    mean: np.ndarray = (first + second) / 2
    return mean
