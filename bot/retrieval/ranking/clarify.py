"""When the bot asks back ("Do you mean: A, B or C?") instead of answering: how far the best item must lead
the runner-up, learnt from the knowledge base itself, for short messages and for longer ones.

Hidden phrasings (see calibration) are specific questions; customers also write vague ones ("my order",
"help with my account") that are close to several topics. The knowledge base shows what those look like
too: a phrasing cut down to its two most widespread words ("can I change the address on my order after it
shipped?" -> "order shipped") is still about its own item, but so much less specific that several items
fit. Both kinds are scored against the knowledge without them. At each candidate margin, over the messages
that would be answered:

- answering is worth 1 when its own item ranks first and -1 when another does (a confident wrong answer
  misleads: the customer reads it, may act on it, and has to ask again);
- asking back is worth CLARIFY_WORTH when its own item is among the choices (the best items within the
  margin of the first, at most CLARIFY_CHOICES): one tap away.

Messages of at most TERSE_WORDS content words (the terse versions, and hidden phrasings that short) get
the margin that does best on them; longer ones the margin that does best on them while costing at most
MAX_CLARIFIED (one point) of their correct answers. Nothing here looks at evaluation cases or customer
traffic, but the rule itself (-1 for a wrong answer, the two margins, the cap) was chosen after looking at
some: docs/BENCHMARKS.md, "Which case files informed which choices".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from bm25s.stopwords import STOPWORDS_EN
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from bot.retrieval.ranking.lexical import Tokenizer

CLARIFY_WORTH = 0.5  # a question back costs the customer one tap: half a correct answer
CLARIFY_CHOICES = 3
# Asking back a longer message may cost at most this share of the correct answers to them: the same one
# point the answer threshold may cost (calibration.MAX_ANSWERED_DROP). A full question that two topics fit
# about equally is still usually answered right; 5% was tried first and asked back one BANKING77 test
# message in ten (docs/BENCHMARKS.md).
MAX_CLARIFIED = 0.01
TERSE_WORDS = 2

_WORD = re.compile(r"[A-Za-z0-9']+")
# Words that say nothing about the topic ("my", "about", "can", "it"): BM25's short list and scikit-learn's.
_FUNCTION_WORDS = frozenset(STOPWORDS_EN) | ENGLISH_STOP_WORDS


def terse_versions(texts: Sequence[tuple[str, str]], tokenizer: Tokenizer) -> list[str | None]:
    """For each (item id, text): the text cut to its TERSE_WORDS content words found in the most items, in
    their order; None when it has no more content words than that (it is as terse already)."""
    spread: dict[str, set[str]] = defaultdict(set)
    for item_id, text in texts:
        for stem in tokenizer(text):
            spread[stem].add(item_id)
    result: list[str | None] = []
    for _, text in texts:
        words = [(w, tokenizer(w) if w.lower() not in _FUNCTION_WORDS else []) for w in _WORD.findall(text)]
        content = [(i, stems[0]) for i, (_, stems) in enumerate(words) if stems]
        if len(content) <= TERSE_WORDS:
            result.append(None)
            continue
        widest = sorted(content, key=lambda c: (-len(spread[c[1]]), c[0]))[:TERSE_WORDS]
        result.append(" ".join(words[i][0] for i, _ in sorted(widest)))
    return result


@dataclass(frozen=True)
class Ranked:
    """Hidden messages that would be answered (best score over the threshold, not an out-of-scope group)."""

    lead: np.ndarray  # best score minus the runner-up's
    right: np.ndarray  # bool: its own item ranks first
    own_lead: np.ndarray  # best score minus its own item's, inf when its own is not among the first choices
    weight: np.ndarray  # every item counts equally
    short: np.ndarray  # bool: at most TERSE_WORDS content words

    @classmethod
    def of(
        cls,
        fused: np.ndarray,
        expected: np.ndarray,
        declines: np.ndarray,
        threshold: float,
        weight: np.ndarray,
        short: np.ndarray,
    ) -> Ranked:
        """`fused`: (messages, items) scores; `expected`: each message's own column (-1 if none);
        `declines`: (items,) out-of-scope columns; `weight`, `short`: (messages,)."""
        if fused.shape[1] < 2 or fused.shape[0] == 0:
            empty, no = np.zeros(0), np.zeros(0, dtype=bool)
            return cls(empty, no, empty, empty, no)
        order = np.argsort(-fused, axis=1, kind="stable")[:, :CLARIFY_CHOICES]
        rows = np.arange(fused.shape[0])
        top = fused[rows, order[:, 0]]
        answered = (top >= threshold) & ~declines[order[:, 0]]
        is_own = order == expected[:, np.newaxis]
        own = fused[rows, np.maximum(expected, 0)]
        own_lead = np.where(is_own.any(axis=1), top - own, np.inf)
        lead = top - fused[rows, order[:, 1]]
        return cls(lead[answered], is_own[:, 0][answered], own_lead[answered], weight[answered], short[answered])

    @classmethod
    def joined(cls, parts: Sequence[Ranked]) -> Ranked:
        fields = ("lead", "right", "own_lead", "weight", "short")
        if not parts:
            return cls(*(np.zeros(0, dtype=bool if f in ("right", "short") else float) for f in fields))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))

    def where(self, keep: np.ndarray) -> Ranked:
        return Ranked(self.lead[keep], self.right[keep], self.own_lead[keep], self.weight[keep], self.short[keep])

    def values(self, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """At each margin: what answering and asking back are worth, and the share of correct answers lost."""
        wrong = ~self.right
        kept_right = mass_at_or_above(self.lead[self.right], self.weight[self.right], margins)
        kept_wrong = mass_at_or_above(self.lead[wrong], self.weight[wrong], margins)
        offered = self.weight.sum() - mass_at_or_above(np.maximum(self.lead, self.own_lead), self.weight, margins)
        all_right = float(self.weight[self.right].sum())
        lost = 1 - kept_right / all_right if all_right > 0 else np.zeros(len(margins))
        return kept_right - kept_wrong + CLARIFY_WORTH * offered, lost

    def asked(self, margin: float) -> float:
        """The share of these messages asked back at `margin`."""
        total = float(self.weight.sum())
        return float(self.weight[self.lead < margin].sum()) / total if total > 0 else 0.0


@dataclass(frozen=True)
class Margins:
    short: float  # for messages of at most TERSE_WORDS content words
    long: float
    asked_short: float  # share of the short hidden messages asked back
    asked_long: float


def choose_margins(specific: Ranked, terse: Ranked) -> Margins:
    short = Ranked.joined([specific.where(specific.short), terse])
    long = specific.where(~specific.short)
    short_margin = _best_margin(short, cap=False)
    long_margin = _best_margin(long, cap=True)
    return Margins(short_margin, long_margin, short.asked(short_margin), long.asked(long_margin))


def _best_margin(ranked: Ranked, cap: bool) -> float:
    candidates = np.concatenate([[0.0], np.unique(ranked.lead[ranked.lead > 0])])
    value, lost = ranked.values(candidates)
    if cap:
        value = np.where(lost <= MAX_CLARIFIED + 1e-12, value, -np.inf)
    return round(float(candidates[int(np.argmax(value))]), 4)  # the smallest among equals: candidates ascend


def content_words(text: str) -> int:
    """How many words of `text` say something about its topic."""
    return sum(w.lower() not in _FUNCTION_WORDS for w in _WORD.findall(text))


def mass_at_or_above(values: np.ndarray, weights: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, the total weight of the values at or above it."""
    order = np.argsort(values)
    sorted_values, sorted_weights = values[order], weights[order]
    tail = np.concatenate((np.cumsum(sorted_weights[::-1])[::-1], [0.0]))
    result: np.ndarray = tail[np.searchsorted(sorted_values, thresholds, side="left")]
    return result
