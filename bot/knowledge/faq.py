"""FAQ files: a YAML list of entries with id, question, optional alternates, answer, optional tags and
`handoff: true` for an entry whose answer hands the conversation to a person (complaints, legal threats)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bot.knowledge import limits
from bot.knowledge.entries import ActionName, EntryId, NonBlank, parse_entries
from bot.knowledge.model import FaqEntry, KnowledgeFile


class _FaqEntrySchema(BaseModel):
    """The exact schema operators and tools rely on; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: EntryId
    question: NonBlank
    alternates: list[NonBlank] = Field(default_factory=list)
    answer: NonBlank
    tags: list[NonBlank] = Field(default_factory=list)
    handoff: bool = False  # true: the answer is given, then a person takes the conversation over
    action: ActionName | None = None  # the business action this entry runs (README, "Business actions")


_LIMITS = {"question": limits.PHRASING, "alternates": limits.PHRASING, "answer": limits.ANSWER, "tags": limits.TAG}


def parse_faq(path: str, text: str) -> KnowledgeFile:
    """Parse one FAQ file. Every problem is reported; any problem makes the whole file unusable."""

    def build(entry: _FaqEntrySchema, line: int) -> FaqEntry:
        return FaqEntry(
            id=entry.id,
            question=entry.question,
            alternates=tuple(entry.alternates),
            answer=entry.answer,
            tags=tuple(entry.tags),
            file=path,
            line=line,
            handoff=entry.handoff,
            action=entry.action,
        )

    return parse_entries(path, text, _FaqEntrySchema, build, "FAQ entries", _LIMITS)
