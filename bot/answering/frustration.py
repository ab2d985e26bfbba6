"""Recognising a frustrated or angry customer, with VADER (vaderSentiment): a published, rule-based
sentiment model whose lexicon and rules (capitals, exclamation marks, "but", negation) are its own, not ours.

A message counts as frustrated when VADER's compound score is at or below `threshold` (-1 is the most
negative). The default, -0.5, was chosen before the labelled set (evals/handoff-triggers.csv) existed and
has not been tuned on it; its precision and recall there are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class FrustrationDetector:
    def __init__(self, threshold: float = -0.5) -> None:
        self.threshold = threshold
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])

    def frustrated(self, text: str) -> bool:
        return self.score(text) <= self.threshold
