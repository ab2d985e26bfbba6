"""Which customer phrasings find another item first: where the knowledge base answers a question twice.

Like the cross-validation behind `rasa test nlu` or Dialogflow's agent validation: every FAQ phrasing
and out-of-scope example (all but an entry's own question) is hidden from its item in turn, a fold at a
time, and ranked against everything else with the weights the bot uses. A phrasing that finds another
item first points at two items that answer the same question, or at a phrasing filed under the wrong
entry. Customers who ask it that way get whichever item wins, and the winner may change with any edit.

Passage sentences are not probed: they are policy wording, not the way customers ask.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.knowledge.model import OUT_OF_SCOPE_KIND
from bot.retrieval.ranking.calibration import assign_folds, text_positions
from bot.retrieval.ranking.lexical import Tokenizer
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer, Weights

# More folds than calibration uses: each phrasing should be judged with nearly all of its siblings in
# place, as a customer's message is. Ten scorers cost a few seconds on a few hundred items.
FOLDS = 10
_PROBED_KINDS = frozenset({"faq", OUT_OF_SCOPE_KIND})


@dataclass(frozen=True)
class Crossing:
    """A phrasing of `item_id` that, asked by a customer, would be answered (or declined) by `found_id`."""

    text: str
    item_id: str
    found_id: str
    found_score: float
    own_score: float


@dataclass(frozen=True)
class Overlap:
    """The crossings from one item to another (one direction), most decisive first."""

    item_id: str
    found_id: str
    crossings: tuple[Crossing, ...]


@dataclass(frozen=True)
class OverlapReport:
    checked: int  # phrasings hidden and ranked
    crossings: tuple[Crossing, ...]

    def overlaps(self) -> list[Overlap]:
        """Crossings grouped by (item, item found instead), the pairs with most crossings first."""
        grouped: dict[tuple[str, str], list[Crossing]] = defaultdict(list)
        for crossing in self.crossings:
            grouped[(crossing.item_id, crossing.found_id)].append(crossing)
        pairs = [
            Overlap(item, found, tuple(sorted(found_by, key=lambda c: c.own_score - c.found_score)))
            for (item, found), found_by in grouped.items()
        ]
        return sorted(pairs, key=lambda p: (-len(p.crossings), p.item_id, p.found_id))

    def to_json(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "crossings": [
                {
                    "text": c.text,
                    "item": c.item_id,
                    "found": c.found_id,
                    "found_score": round(c.found_score, 4),
                    "own_score": round(c.own_score, 4),
                }
                for c in self.crossings
            ],
        }


def find_overlaps(
    texts: Sequence[IndexedText], weights: Weights, threshold: float, seed: int = 0, folds: int = FOLDS
) -> OverlapReport:
    """`texts` in calibration order (each item's lead text first: it is never hidden).

    Only a phrasing whose other item clears `threshold` counts: below it the customer would get the
    not-sure reply whichever item ranked first.
    """
    text_fold, _ = assign_folds(text_positions(texts), np.random.default_rng(seed), folds)
    probed = {i: fold for i, fold in text_fold.items() if texts[i].kind in _PROBED_KINDS}
    tokenizer = Tokenizer()
    crossings: list[Crossing] = []
    for fold in range(folds):
        hidden = [texts[i] for i, f in sorted(probed.items()) if f == fold]
        if not hidden:
            continue
        kept = [t for i, t in enumerate(texts) if probed.get(i) != fold]
        scorer = ItemScorer(kept, tokenizer)
        vectors = np.array([t.vector for t in hidden], dtype=np.float32)
        fused = weights.fuse(scorer.signals(vectors, [t.text for t in hidden]), scorer.policy_worded)
        for row, text in enumerate(hidden):
            best = int(fused[row].argmax())
            own = scorer.position[text.item_id]  # its lead text stays, so the item is there
            if best != own and fused[row, best] >= threshold:
                crossings.append(
                    Crossing(
                        text.text, text.item_id, scorer.item_ids[best], float(fused[row, best]), float(fused[row, own])
                    )
                )
    return OverlapReport(checked=len(probed), crossings=tuple(crossings))
