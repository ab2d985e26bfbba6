"""Choosing the score weights and the answer threshold from the knowledge base itself.

Operators write several phrasings per FAQ entry and several sentences per passage, so the knowledge
base can test itself: hide some phrasings and ask whether they still find their item (questions that
should be answered), and hide whole items and ask whether their phrasings are declined (questions the
knowledge base has no answer for). The threshold is the one that declines the most of the latter
while losing at most one point of the former; the weights are those that do best at it.

Operators may also list examples of messages to decline (out-of-scope groups). A message whose best
item is such a group is declined at any threshold (by the group above it, as unsure below it), so hidden
examples count with the unanswerable messages, declined when a group (their own or another) ranks first
or nothing clears the threshold.

One thing that test cannot see: a hidden passage sentence is worded like the passage, while customers
ask about a policy in their own words. FAQ entries show the size of that gap, because each has both:
a customer's phrasing scores this much lower against the entry's answer (policy wording) than against
its other phrasings (question wording). Passages get that much added.

Nothing here looks at evaluation cases or customer traffic. It runs whenever the knowledge changes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from bot.knowledge.model import OUT_OF_SCOPE_KIND
from bot.retrieval.ranking.clarify import (
    TERSE_WORDS,
    Ranked,
    choose_margins,
    content_words,
    mass_at_or_above,
    terse_versions,
)
from bot.retrieval.ranking.dense import DenseScores
from bot.retrieval.ranking.lexical import LexicalScores, Tokenizer
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer, Signals, Weights

# Searched jointly with the threshold; each gets its own measured passage bonus.
WEIGHT_GRID: tuple[Weights, ...] = tuple(
    Weights(nearest, lexical, absolute, classifier=classifier)
    for nearest in (0.4, 0.7, 1.0)
    for lexical in (0.0, 0.1, 0.2, 0.3)
    for absolute in ((False, True) if lexical else (False,))
    for classifier in (0.0, 0.15, 0.3)
)
FOLDS = 4
# Which phrasings a fold hides is random; on a small knowledge base one draw can favour a weighting by
# luck. Pooling a few draws steadies the choice.
REPEATS = 3
# The threshold declines as many unanswerable phrasings as it can while costing at most this share of
# the correct answers the ranking alone gives. Fixed in advance, not tuned: a customer who gets "I'm not
# sure" for a question the knowledge base answers is a failure too, so the threshold may not buy
# abstentions with more than one point of answers.
MAX_ANSWERED_DROP = 0.01
# Among the thresholds within that cost, and across weightings: how much declining an unanswerable
# question counts against answering an answerable one correctly. Fixed in advance, not tuned: roughly
# one in five support messages has no answer in the knowledge base.
UNANSWERABLE_SHARE = 0.2
MIN_ITEMS = 8
MIN_HELD_OUT = 20
MIN_STYLE_PROBES = 20
# When there is too little to learn from.
DEFAULT_WEIGHTS = Weights(0.4, 0.1, passage_bonus=0.1)
DEFAULT_THRESHOLD = 0.6
VERSION = 10  # part of the cache key: bump when the procedure changes


@dataclass(frozen=True)
class Calibration:
    weights: Weights
    threshold: float
    calibrated: bool  # False: too few items or phrasings to learn from; defaults in use
    objective: float = 0.0
    answered_correctly: float = 0.0  # share of hidden phrasings answered with their own item
    declined: float = 0.0  # share of unanswerable phrasings declined (hidden items', out-of-scope examples)
    held_out: int = 0
    seconds: float = 0.0
    # An answer must lead the runner-up by this much, or the bot asks which of the close topics is meant
    # (`clarify`): one margin for messages of at most two content words, one for longer ones.
    clarify_short: float = 0.0
    clarify_long: float = 0.0
    clarified_short: float = 0.0  # share of short hidden messages (terse versions included) asked back
    clarified_long: float = 0.0
    asks_back: bool = False  # whether the margins were calibrated (answering.clarify: auto)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Calibration:
        weights = data["weights"]
        assert isinstance(weights, dict)
        fields = {k: v for k, v in data.items() if k != "weights"}
        return cls(weights=Weights(**weights), **fields)  # type: ignore[arg-type]

    def summary(self) -> str:
        if not self.calibrated:
            return f"default weights, threshold {self.threshold:.3f} (too little knowledge to calibrate from)"
        w = self.weights
        return (
            f"threshold {self.threshold:.3f}; weights nearest {w.nearest}, lexical {w.lexical}"
            f"{' (coverage)' if w.absolute_lexical else ''}, classifier {w.classifier}, "
            f"passage bonus {w.passage_bonus:.3f}; "
            f"hidden phrasings answered correctly {self.answered_correctly:.1%}, "
            f"unanswerable phrasings declined {self.declined:.1%}; "
            f"{self._asking_back()} ({self.held_out} phrasings held out, {self.seconds:.1f}s)"
        )

    def _asking_back(self) -> str:
        if not self.asks_back:
            return "asking back off"
        return (
            f"asks back below a lead of {self.clarify_short:.3f} when short ({self.clarified_short:.1%} of short "
            f"hidden messages), {self.clarify_long:.3f} otherwise ({self.clarified_long:.1%})"
        )


DEFAULT = Calibration(DEFAULT_WEIGHTS, DEFAULT_THRESHOLD, calibrated=False)


@dataclass(frozen=True)
class _Probe:
    """Held-out messages scored against a knowledge base without them; fused later under each weighting."""

    signals: Signals
    policy_worded: np.ndarray  # (items,) bool: passages without questions, which get the passage bonus
    expected: np.ndarray  # (messages,) position of the message's own item, -1 if removed
    owners: list[str]
    declines: np.ndarray  # (items,) bool, which columns are out-of-scope groups
    texts: tuple[str, ...] = ()  # the messages

    def fuse(self, weights: Weights) -> np.ndarray:
        return weights.fuse(self.signals, self.policy_worded)

    def own_scores(self, weights: Weights) -> np.ndarray:
        scores: np.ndarray = self.fuse(weights)[np.arange(len(self.owners)), self.expected]
        return scores

    def ranked(self, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
        """Each message's best score and whether its own item ranks first.

        The score is -inf when there is nothing to find or an out-of-scope group ranks first: such a
        message is declined at any threshold.
        """
        fused = self.fuse(weights)
        if fused.shape[1] == 0:
            return np.full(len(self.owners), -np.inf), np.zeros(len(self.owners), dtype=bool)
        best = fused.argmax(axis=1)
        top: np.ndarray = np.where(self.declines[best], -np.inf, fused.max(axis=1))
        return top, best == self.expected

    def rows(self, keep: np.ndarray) -> _Probe:
        """The same probe for the messages where `keep` is true."""
        return _Probe(
            self.signals.rows(keep),
            self.policy_worded,
            self.expected[keep],
            [o for o, k in zip(self.owners, keep, strict=True) if k],
            self.declines,
            tuple(t for t, k in zip(self.texts, keep, strict=True) if k),
        )


class Cancelled(Exception):
    """Calibration was asked to stop before it finished: the service is stopping, or newer knowledge came."""


def calibrate(
    texts: Sequence[IndexedText],
    answer_texts: Callable[[], Sequence[IndexedText]] = tuple,
    seed: int = 0,
    cancelled: Callable[[], bool] = lambda: False,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> Calibration:
    """Weights and threshold for `texts`, given in a fixed order (each item's lead text first).

    `answer_texts` gives FAQ answers split like passages (kind "passage", item id of their entry);
    it is called only when there is enough knowledge to calibrate, since it may have to embed them.
    `embed` gives vectors for the terse versions of the phrasings, from which (and from the hidden
    phrasings) the margins for asking back are learnt (`clarify`); without it, asking back is off and
    there are no margins.
    `cancelled` is asked before each scorer a fold builds and each weighting tried; when it says so,
    `Cancelled` is raised.
    """

    def check() -> None:
        if cancelled():
            raise Cancelled

    started = time.perf_counter()
    by_item = text_positions(texts)
    groups = {t.item_id for t in texts if t.kind == OUT_OF_SCOPE_KIND}
    # Out-of-scope examples help place the threshold, but only answerable items show what it costs.
    answerable_items = [item for item in by_item if item not in groups]
    held_out = sum(len(by_item[item]) - 1 for item in answerable_items)
    if len(answerable_items) < MIN_ITEMS or held_out < MIN_HELD_OUT:
        return DEFAULT

    tokenizer = Tokenizer()
    answers = answer_texts()
    answered_by = {t.item_id for t in answers}
    shortened = _terse_texts(texts, groups, tokenizer, embed) if embed is not None else {}
    answerable: list[_Probe] = []
    terse: list[_Probe] = []  # hidden phrasings cut to their most widespread words
    unanswerable: list[_Probe] = []
    style: list[tuple[_Probe, _Probe]] = []  # FAQ phrasings vs. question wording, and vs. answer wording
    for repeat in range(REPEATS):
        text_fold, item_fold = assign_folds(by_item, np.random.default_rng(seed + repeat))
        for fold in range(FOLDS):
            check()
            hidden = [t for i, t in enumerate(texts) if text_fold.get(i) == fold]
            # A passage's first text is its whole section, which contains every hidden sentence word for word.
            leaking = {t.item_id for t in hidden if t.kind == "passage"}
            kept = [
                t
                for i, t in enumerate(texts)
                if text_fold.get(i) != fold and not (t.item_id in leaking and i == by_item[t.item_id][0])
            ]
            scorer = ItemScorer(kept, tokenizer)
            probe = _probe(scorer, hidden)
            # A hidden example of an out-of-scope group is a message to decline, not to answer.
            from_group = np.array([t.item_id in groups for t in hidden], dtype=bool)
            answerable.append(probe.rows(~from_group))
            cut = [t for i, t in shortened.items() if text_fold.get(i) == fold]
            if cut:
                terse.append(_probe(scorer, cut))
            if from_group.any():
                unanswerable.append(probe.rows(from_group))
            # A hidden item is asked about with its phrasings (its only text when it has just one).
            asked = [
                t
                for i, t in enumerate(texts)
                if item_fold[t.item_id] == fold and (i in text_fold or len(by_item[t.item_id]) == 1)
            ]
            remaining = [t for t in texts if item_fold[t.item_id] != fold]
            check()
            unanswerable.append(_probe(ItemScorer(remaining, tokenizer), asked))
            is_faq = np.array([t.item_id in answered_by for t in hidden], dtype=bool)
            if is_faq.any():
                faq_hidden = [t for t, faq in zip(hidden, is_faq, strict=True) if faq]
                worded_as_answers = [t for t in kept if t.item_id not in answered_by] + list(answers)
                check()
                style.append((probe.rows(is_faq), _probe(ItemScorer(worded_as_answers, tokenizer), faq_hidden)))

    probes = sum(len(q.owners) for q, _ in style)
    best: Calibration | None = None
    for base in WEIGHT_GRID:
        check()
        bonus = _style_gap(style, base) if probes >= MIN_STYLE_PROBES else DEFAULT_WEIGHTS.passage_bonus
        weights = replace(base, passage_bonus=round(bonus, 4))
        # Wrongly ranked answerable messages keep their weight in the total, but no threshold counts them.
        top, correct, weight = _ranked(answerable, weights)
        correct_top, correct_weight = top[correct], weight[correct]
        declined_top, _, declined_weight = _ranked(unanswerable, weights)
        # -inf (an out-of-scope group ranked first) is declined at every threshold, so it is no candidate.
        candidates = np.unique(np.concatenate([correct_top, declined_top]))
        candidates = candidates[np.isfinite(candidates)]
        if len(candidates) == 0:
            continue
        # At threshold t: answered correctly = weight of correctly ranked messages scoring >= t;
        # declined = weight of unanswerable messages scoring < t.
        answered = mass_at_or_above(correct_top, correct_weight, candidates)
        declined = 1 - mass_at_or_above(declined_top, declined_weight, candidates)
        objective = (1 - UNANSWERABLE_SHARE) * answered + UNANSWERABLE_SHARE * declined
        # Thresholds are ascending, so answered[0] is what the ranking alone gets right.
        objective = np.where(answered >= answered[0] - MAX_ANSWERED_DROP, objective, -1.0)
        pick = int(np.argmax(objective))
        if best is None or objective[pick] > best.objective + 1e-9:
            best = Calibration(
                weights=weights,
                threshold=round(float(candidates[pick]), 4),
                calibrated=True,
                objective=float(objective[pick]),
                answered_correctly=float(answered[pick]),
                declined=float(declined[pick]),
                held_out=held_out,
            )
    if best is None:  # no hidden phrasing found any item: nothing to place a threshold by
        return replace(DEFAULT, seconds=time.perf_counter() - started)
    if embed is None:  # asking back is off: no margins to learn
        return replace(best, seconds=time.perf_counter() - started)
    margins = choose_margins(_ranked_for_clarifying(answerable, best), _ranked_for_clarifying(terse, best))
    return replace(
        best,
        asks_back=True,
        clarify_short=margins.short,
        clarify_long=margins.long,
        clarified_short=margins.asked_short,
        clarified_long=margins.asked_long,
        seconds=time.perf_counter() - started,
    )


def _ranked_for_clarifying(probes: list[_Probe], chosen: Calibration) -> Ranked:
    weight = _item_weights([o for p in probes for o in p.owners])
    parts, start = [], 0
    for probe in probes:
        end = start + len(probe.owners)
        short = np.array([content_words(t) <= TERSE_WORDS for t in probe.texts], dtype=bool)
        fused = probe.fuse(chosen.weights)
        parts.append(Ranked.of(fused, probe.expected, probe.declines, chosen.threshold, weight[start:end], short))
        start = end
    return Ranked.joined(parts)


def _terse_texts(
    texts: Sequence[IndexedText], groups: set[str], tokenizer: Tokenizer, embed: Callable[[Sequence[str]], np.ndarray]
) -> dict[int, IndexedText]:
    """Position -> the terse version of each answerable FAQ phrasing that has one, embedded."""
    faq = [i for i, t in enumerate(texts) if t.kind == "faq" and t.item_id not in groups]
    cut = terse_versions([(texts[i].item_id, texts[i].text) for i in faq], tokenizer)
    chosen = [(i, c) for i, c in zip(faq, cut, strict=True) if c is not None]
    if not chosen:
        return {}
    vectors = embed([c for _, c in chosen])
    return {i: replace(texts[i], text=c, vector=v) for (i, c), v in zip(chosen, vectors, strict=True)}


def text_positions(texts: Sequence[IndexedText]) -> dict[str, list[int]]:
    """item id -> the positions of its texts in `texts`, in order."""
    by_item: dict[str, list[int]] = defaultdict(list)
    for position, text in enumerate(texts):
        by_item[text.item_id].append(position)
    return by_item


def assign_folds(
    by_item: dict[str, list[int]], rng: np.random.Generator, folds: int = FOLDS
) -> tuple[dict[int, int], dict[str, int]]:
    """Which fold hides each text (by position) and each item.

    The first text (an FAQ's question, a passage's whole section) always stays; the others take turns.
    """
    text_fold: dict[int, int] = {}
    for positions in by_item.values():
        offset = int(rng.integers(folds))
        for rank, i in enumerate(rng.permutation(len(positions) - 1)):
            text_fold[positions[i + 1]] = (rank + offset) % folds
    item_fold = {item: rank % folds for rank, item in enumerate(rng.permutation(sorted(by_item)).tolist())}
    return text_fold, item_fold


def _probe(scorer: ItemScorer, queries: Sequence[IndexedText]) -> _Probe:
    owners = [q.item_id for q in queries]
    texts = tuple(q.text for q in queries)
    if not queries or len(scorer) == 0:
        empty = np.zeros((len(queries), len(scorer)), dtype=np.float32)
        signals = Signals(DenseScores(empty, empty), LexicalScores(empty, empty), empty)
        return _Probe(signals, scorer.policy_worded, np.full(len(queries), -1), owners, scorer.out_of_scope, texts)
    expected = np.array([scorer.position.get(o, -1) for o in owners])
    vectors = np.array([q.vector for q in queries], dtype=np.float32)
    signals = scorer.signals(vectors, texts)
    return _Probe(signals, scorer.policy_worded, expected, owners, scorer.out_of_scope, texts)


def _style_gap(style: list[tuple[_Probe, _Probe]], weights: Weights) -> float:
    """Median of how much higher a hidden FAQ phrasing scores against its entry's question wording."""
    gaps = np.concatenate(
        [as_questions.own_scores(weights) - as_answers.own_scores(weights) for as_questions, as_answers in style]
    )
    return max(0.0, float(np.median(gaps)))


def _item_weights(owners: list[str]) -> np.ndarray:
    """Every item counts equally, however many phrasings it has."""
    counts: dict[str, int] = defaultdict(int)
    for owner in owners:
        counts[owner] += 1
    return np.array([1 / (counts[o] * len(counts)) for o in owners], dtype=np.float64)


def _ranked(probes: list[_Probe], weights: Weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All probes' messages: best score, whether their own item ranks first, and their weight."""
    ranked = [probe.ranked(weights) for probe in probes]
    top = np.concatenate([r[0] for r in ranked])
    correct = np.concatenate([r[1] for r in ranked])
    return top, correct, _item_weights([o for p in probes for o in p.owners])
