"""How the bot decides what kind of answer a message gets.

The same decision serves live conversations and `bot eval`, so evaluation measures what users get.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.answering.guard import InputProblem, guard_input
from bot.answering.handoff import asks_for_human
from bot.answering.smalltalk import SmallTalk, classify_smalltalk
from bot.config import AnsweringSettings
from bot.knowledge.model import OUT_OF_SCOPE_KIND
from bot.retrieval.batching import QueryBatcher
from bot.retrieval.index import Hit, KnowledgeIndex
from bot.retrieval.ranking.clarify import CLARIFY_CHOICES, TERSE_WORDS, content_words


class DecisionKind(StrEnum):
    ANSWER = "answer"  # a knowledge item is confidently the answer
    NOT_SURE = "not_sure"  # nothing matched well enough: say so, suggest, offer a person
    CLARIFY = "clarify"  # several topics fit about equally well: ask which one is meant
    OUT_OF_SCOPE = "out_of_scope"  # most like what the operator listed as not to be answered: decline
    SMALLTALK = "smalltalk"
    HANDOFF = "handoff"  # the customer asked for a person
    INVALID = "invalid"  # empty, too long or unreadable input


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    text: str  # the message as the engine read it (cleaned)
    answer: Hit | None = None
    candidates: tuple[Hit, ...] = ()  # answerable items, best first, whatever the decision
    related: tuple[Hit, ...] = ()  # with an answer: other candidates that cleared the threshold too
    choices: tuple[Hit, ...] = ()  # asking back: the topics it may be about, best first
    declined_by: Hit | None = None  # the out-of-scope group that declined the message
    declined_name: str | None = None  # the name it lists that the message mentions, when that declined it
    smalltalk: SmallTalk | None = None
    problem: InputProblem | None = None
    original_length: int = 0
    retrieval_ms: float = 0.0

    @property
    def confidence(self) -> float:
        """The score of what the decision went by: the answer, the declining group, or the best candidate."""
        chosen = self.answer or self.declined_by
        if chosen is not None:
            return chosen.score
        return self.candidates[0].score if self.candidates else 0.0


class ResponsePolicy:
    """guard input -> a person? -> small talk? -> retrieve -> answer or admit uncertainty."""

    def __init__(
        self, index: KnowledgeIndex, settings: AnsweringSettings, human_button_label: str, query_workers: int = 1
    ) -> None:
        self._index = index
        self._settings = settings
        self._human_button_label = human_button_label
        # Messages arriving together from many conversations share one encoder call and one search;
        # up to `query_workers` such batches run at once.
        self._retrieval = QueryBatcher(self._retrieve_many, workers=query_workers)

    def decide(self, raw_text: str) -> Decision:
        guarded = guard_input(raw_text, self._settings.max_message_chars)
        if guarded.problem is not None:
            return Decision(DecisionKind.INVALID, guarded.text, problem=guarded.problem, original_length=guarded.length)
        text = guarded.text
        if asks_for_human(text, self._human_button_label):
            return Decision(DecisionKind.HANDOFF, text)
        smalltalk = classify_smalltalk(text)
        if smalltalk is not None:
            return Decision(DecisionKind.SMALLTALK, text, smalltalk=smalltalk)

        started = time.perf_counter()
        ranked = self._retrieval.run(text)
        retrieval_ms = (time.perf_counter() - started) * 1000
        candidates = tuple(hit for hit in ranked if hit.kind != OUT_OF_SCOPE_KIND)[: self._candidates]
        # An operator's explicit out-of-scope listing wins; then a topic's exact title (a tapped suggestion,
        # or a question typed exactly as the knowledge base asks it), answered as surely as a listing declines;
        # then a company or product an out-of-scope group names and the knowledge never mentions.
        lookup = self._index.ranking
        listed = lookup.out_of_scope_example(text)
        titled = lookup.item_titled(text) if listed is None else None
        if titled is not None:
            return self._answer(text, replace(titled, score=1.0), candidates, retrieval_ms)
        named = lookup.out_of_scope_name(text) if listed is None else None
        group = listed or (named[0] if named else None) or self._group_ranked_first(ranked)
        if group is not None:
            return Decision(
                DecisionKind.OUT_OF_SCOPE,
                text,
                None,
                candidates,
                declined_by=group,
                declined_name=named[1].name if named else None,
                retrieval_ms=retrieval_ms,
            )
        best = candidates[0] if candidates else None
        if best is not None and self._confident(best, candidates[1:2]):
            choices = self._choices(text, candidates)
            if len(choices) > 1:
                return Decision(
                    DecisionKind.CLARIFY, text, None, candidates, choices=choices, retrieval_ms=retrieval_ms
                )
            return self._answer(text, best, candidates, retrieval_ms)
        return Decision(DecisionKind.NOT_SURE, text, None, candidates, retrieval_ms=retrieval_ms)

    def _answer(self, text: str, best: Hit, candidates: tuple[Hit, ...], retrieval_ms: float) -> Decision:
        # The other items the bot would have answered with had they ranked first: when the answer
        # missed, the right one is often among them, a tap away.
        # A title shown twice (two items may share one) would be a button that leads nowhere new.
        shown = {best.title}
        related: list[Hit] = []
        for hit in candidates:
            if len(related) < self._settings.related and hit.title not in shown and self.clearance(hit) >= 0:
                related.append(hit)
                shown.add(hit.title)
        return Decision(DecisionKind.ANSWER, text, best, candidates, related=tuple(related), retrieval_ms=retrieval_ms)

    def _choices(self, text: str, candidates: tuple[Hit, ...]) -> tuple[Hit, ...]:
        """The topics to ask about when the best does not lead the others by the calibrated margin (for its
        length: `clarify`), each title once; fewer than two: answer."""
        if self._settings.clarify == "off" or len(candidates) < 2:
            return ()
        calibrated = self._index.calibration
        short = content_words(text) <= TERSE_WORDS
        margin = calibrated.clarify_short if short else calibrated.clarify_long
        best = candidates[0]
        if best.score - candidates[1].score >= margin:
            return ()
        chosen: dict[str, Hit] = {}
        for hit in candidates:
            if best.score - hit.score < margin and hit.title not in chosen and len(chosen) < CLARIFY_CHOICES:
                chosen[hit.title] = hit
        return tuple(chosen.values())

    @property
    def _candidates(self) -> int:
        return max(self._settings.suggestions, self._settings.related + 1, 3)

    def _retrieve_many(self, texts: Sequence[str]) -> list[list[Hit]]:
        return self._index.find(texts, self._candidates * 2)

    @property
    def threshold(self) -> float:
        """The score an answer needs: pinned in config, or calibrated from the knowledge base."""
        pinned = self._settings.threshold
        return self._index.calibration.threshold if pinned == "auto" else pinned

    def clearance(self, hit: Hit) -> float:
        """How far a hit's score clears the answer threshold (negative: below it)."""
        return hit.score - self.threshold

    def _group_ranked_first(self, ranked: Sequence[Hit]) -> Hit | None:
        """The out-of-scope group that ranks first and clears the threshold, if one does. Below it the bot is
        unsure anyway, and the closest topics it then suggests help more with a vague message ("help me
        please") than a flat refusal does."""
        if ranked and ranked[0].kind == OUT_OF_SCOPE_KIND and self.clearance(ranked[0]) >= 0:
            return ranked[0]
        return None

    def _confident(self, best: Hit, runner_up: Sequence[Hit]) -> bool:
        if self.clearance(best) < 0:
            return False
        return not runner_up or best.score - runner_up[0].score >= self._settings.min_margin
