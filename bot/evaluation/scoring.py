"""Regression-testing a knowledge base: how often the bot picks the right answer, or rightly declines."""

from __future__ import annotations

import csv
import io
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.answering.policy import Decision, DecisionKind

OUT_OF_SCOPE = "out_of_scope"
CLARIFY = "clarify"  # predicted when the bot asked which of several topics was meant


class CaseFileError(ValueError):
    pass


@dataclass(frozen=True)
class EvalCase:
    text: str
    expected: str  # an FAQ id, a passage id, or "out_of_scope"
    line: int


@dataclass(frozen=True)
class CaseResult:
    text: str
    expected: str
    predicted: str  # the answered item's id, or "out_of_scope" when the bot declined
    confidence: float
    top3: tuple[str, ...]
    latency_ms: float
    declined_by: str | None = None  # the out-of-scope group that declined it, if one did
    declined_name: str | None = None  # the name that group lists which the message mentions, if that declined it
    related: tuple[str, ...] = ()  # the other topics offered with the answer
    choices: tuple[str, ...] = ()  # asked back: the topics offered

    @property
    def clarified_with_expected(self) -> bool:
        """Asked back, with the expected item among the choices: one tap from the right answer."""
        return self.predicted == CLARIFY and self.expected in self.choices

    @property
    def correct(self) -> bool:
        return self.predicted == self.expected

    @property
    def wrong_answer(self) -> bool:
        """Answered, but with another item than the one expected."""
        return self.expected != OUT_OF_SCOPE and self.predicted not in (OUT_OF_SCOPE, CLARIFY, self.expected)


@dataclass(frozen=True)
class EvalReport:
    cases: tuple[CaseResult, ...]
    unknown_expected: tuple[str, ...]  # expected ids the knowledge base does not have

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    @property
    def top1_accuracy(self) -> float:
        return _share(sum(c.correct for c in self.cases), len(self.cases))

    @property
    def top3_accuracy(self) -> float:
        hits = sum(c.correct if c.expected == OUT_OF_SCOPE else c.expected in c.top3 for c in self.cases)
        return _share(hits, len(self.cases))

    @property
    def in_scope_accuracy(self) -> float:
        in_scope = [c for c in self.cases if c.expected != OUT_OF_SCOPE]
        return _share(sum(c.correct for c in in_scope), len(in_scope))

    @property
    def clarified(self) -> float:
        """Share of cases asked back (counted as not correct in top-1)."""
        return _share(sum(c.predicted == CLARIFY for c in self.cases), len(self.cases))

    @property
    def clarified_with_expected(self) -> float:
        """Share of cases asked back with the expected item among the choices."""
        return _share(sum(c.clarified_with_expected for c in self.cases), len(self.cases))

    @property
    def top1_or_clarified(self) -> float:
        """Answered right, or asked back with the right item a tap away."""
        return _share(sum(c.correct or c.clarified_with_expected for c in self.cases), len(self.cases))

    @property
    def oos_precision(self) -> float:
        declined = [c for c in self.cases if c.predicted == OUT_OF_SCOPE]
        return _share(sum(c.expected == OUT_OF_SCOPE for c in declined), len(declined))

    @property
    def oos_recall(self) -> float:
        oos = [c for c in self.cases if c.expected == OUT_OF_SCOPE]
        return _share(sum(c.predicted == OUT_OF_SCOPE for c in oos), len(oos))

    @property
    def wrong_answers(self) -> int:
        return sum(c.wrong_answer for c in self.cases)

    @property
    def wrong_answers_offering_expected(self) -> float | None:
        """Of the wrong answers, the share that offered the expected item as a related topic (a tap away);
        None when no answer was wrong."""
        wrong = [c for c in self.cases if c.wrong_answer]
        return _share(sum(c.expected in c.related for c in wrong), len(wrong)) if wrong else None

    def latency_percentile(self, pct: int) -> float:
        latencies = sorted(c.latency_ms for c in self.cases)
        if not latencies:
            return 0.0
        if len(latencies) == 1:
            return latencies[0]
        return statistics.quantiles(latencies, n=100, method="inclusive")[pct - 1]

    def confused_pairs(self, limit: int = 10) -> list[tuple[str, str, int]]:
        counts = Counter((c.expected, c.predicted) for c in self.cases if not c.correct)
        return [(e, p, n) for (e, p), n in counts.most_common(limit)]

    def figures(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "top1_accuracy": round(self.top1_accuracy, 4),
            "top3_accuracy": round(self.top3_accuracy, 4),
            "clarified": round(self.clarified, 4),
            "clarified_with_expected": round(self.clarified_with_expected, 4),
            "top1_or_clarified": round(self.top1_or_clarified, 4),
            "in_scope_accuracy": round(self.in_scope_accuracy, 4),
            "oos_precision": round(self.oos_precision, 4),
            "oos_recall": round(self.oos_recall, 4),
            "wrong_answers": self.wrong_answers,
            "wrong_answers_offering_expected": _rounded(self.wrong_answers_offering_expected),
            "latency_ms_p50": round(self.latency_percentile(50), 3),
            "latency_ms_p95": round(self.latency_percentile(95), 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.figures(),
            "confused_pairs": [{"expected": e, "predicted": p, "count": n} for e, p, n in self.confused_pairs()],
            "unknown_expected": list(self.unknown_expected),
            "cases": [
                {
                    "text": c.text,
                    "expected": c.expected,
                    "predicted": c.predicted,
                    "confidence": round(c.confidence, 4),
                    "top3": list(c.top3),
                    "latency_ms": round(c.latency_ms, 3),
                    "declined_by": c.declined_by,
                    "declined_name": c.declined_name,
                    "related": list(c.related),
                    "choices": list(c.choices),
                }
                for c in self.cases
            ],
        }


def load_cases(path: Path) -> list[EvalCase]:
    """Read a `text,expected` CSV. Raises CaseFileError naming the file and line of any bad row."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CaseFileError(f"{path}: cannot read case file: {err}") from err
    reader = csv.DictReader(io.StringIO(content))
    missing = {"text", "expected"} - set(reader.fieldnames or [])
    if missing:
        raise CaseFileError(f"{path}:1: header must have columns text,expected (missing: {', '.join(sorted(missing))})")
    cases = []
    for row in reader:
        line = reader.line_num
        text, expected = (row.get("text") or "").strip(), (row.get("expected") or "").strip()
        if not text or not expected:
            raise CaseFileError(f"{path}:{line}: both text and expected are required")
        cases.append(EvalCase(text, expected, line))
    if not cases:
        raise CaseFileError(f"{path}: no cases")
    return cases


ACTION_PREFIX = "action:"  # a case expecting `action:NAME`: the bot runs that business action


def predicted_label(decision: Decision, expected: str = "") -> str:
    """The item answered from (or out_of_scope); `action:NAME` when the case expects an action and the
    entry answered from runs one."""
    if decision.kind is DecisionKind.ANSWER and decision.answer is not None:
        if expected.startswith(ACTION_PREFIX) and decision.answer.action:
            return ACTION_PREFIX + decision.answer.action
        return decision.answer.item_id
    if decision.kind is DecisionKind.CLARIFY:
        return CLARIFY
    return OUT_OF_SCOPE


def evaluate(
    decide: Callable[[str], Decision],
    cases: Sequence[EvalCase],
    known_ids: set[str],
    known_actions: frozenset[str] = frozenset(),
) -> EvalReport:
    """`known_ids`: the items a case may expect (answerable ones: a case expecting a decline says out_of_scope);
    `known_actions`: the actions answerable entries run (a case may expect `action:NAME`)."""
    results = []
    for case in cases:
        started = time.perf_counter()
        decision = decide(case.text)
        latency = (time.perf_counter() - started) * 1000
        results.append(
            CaseResult(
                text=case.text,
                expected=case.expected,
                predicted=predicted_label(decision, case.expected),
                confidence=decision.confidence,
                top3=tuple(h.item_id for h in decision.candidates[:3]),
                latency_ms=latency,
                declined_by=decision.declined_by.item_id if decision.declined_by else None,
                declined_name=decision.declined_name,
                related=tuple(h.item_id for h in decision.related),
                choices=tuple(
                    ACTION_PREFIX + h.action if case.expected.startswith(ACTION_PREFIX) and h.action else h.item_id
                    for h in decision.choices
                ),
            )
        )
    known = known_ids | {ACTION_PREFIX + action for action in known_actions}
    unknown = sorted({c.expected for c in cases if c.expected != OUT_OF_SCOPE and c.expected not in known})
    return EvalReport(tuple(results), tuple(unknown))


def _rounded(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
