"""Word-overlap scores (BM25) between a message and each knowledge item.

Sentence embeddings blur rare, decisive words ("chargeback", "IBAN", a product name) into their
neighbours; BM25 rewards exactly those. One document per item: all the texts it is found by.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

# bm25s sets its own logger to DEBUG when imported: one line per index build in every service log.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN)


class Tokenizer:
    """Lower-cased words without stop words, reduced to their Snowball (Porter 2) stems."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
        stems: list[str] = self._stemmer.stemWords(words)
        return stems


@dataclass(frozen=True)
class LexicalScores:
    relative: np.ndarray  # (messages, items): BM25 divided by the message's best item (best = 1)
    absolute: np.ndarray  # (messages, items): BM25 divided by what a document holding every word would get

    def pick(self, absolute: bool) -> np.ndarray:
        return self.absolute if absolute else self.relative


class LexicalScorer:
    """BM25 (Lucene variant, k1 1.2, b 0.75) of each message against each item.

    The relative view says which item matches the message's words best. The absolute view also says
    how much of the message the knowledge base covers at all: a message about "iPhone passwords"
    shares "password" with an FAQ, but "iphone" appears nowhere, and that lowers every item's score.
    """

    def __init__(self, documents: Sequence[Sequence[str]], tokenizer: Tokenizer | None = None) -> None:
        self._tokenize = tokenizer or Tokenizer()
        self._n_items = len(documents)
        self._bm25 = bm25s.BM25(k1=1.2, b=0.75)
        corpus = [[token for text in texts for token in self._tokenize(text)] for texts in documents]
        document_frequency: Counter[str] = Counter(token for tokens in corpus for token in set(tokens))
        # Lucene's idf, as bm25s uses; a word no item contains gets the highest idf there is.
        n = max(self._n_items, 1)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in document_frequency.items()}
        self._unknown_idf = math.log(1 + (n + 0.5) / 0.5)
        if documents:
            self._bm25.index(corpus, show_progress=False)

    def scores(self, texts: Sequence[str]) -> LexicalScores:
        """A message sharing no word with any item scores 0 everywhere, in both views."""
        raw = np.zeros((len(texts), self._n_items), dtype=np.float32)
        full = np.ones((len(texts), 1), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = self._tokenize(text)
            if tokens and self._n_items:
                raw[row] = self._bm25.get_scores(tokens)
                # A word once in an average-length document scores its idf (the tf part is then 1).
                full[row, 0] = sum(self._idf.get(t, self._unknown_idf) for t in tokens)
        best = raw.max(axis=1, keepdims=True) if self._n_items else full
        relative = np.divide(raw, best, out=np.zeros_like(raw), where=best > 0)
        return LexicalScores(relative=relative, absolute=np.minimum(raw / full, 1.0))
