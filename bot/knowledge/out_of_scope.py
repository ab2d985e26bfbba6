"""Out-of-scope files: examples of messages the bot should decline rather than answer.

An operator lists what customers ask that the knowledge base does not (and should not) answer, in
groups: other shops' orders, trip advice, job applications... A message closer to one of these than
to anything answerable is declined with the group's reply (or the configured default) and the offer
of a person, like Rasa's out_of_scope intent or Dialogflow's negative examples. The examples also give
the answer threshold real unanswerable messages to calibrate against.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bot.knowledge import limits
from bot.knowledge.entries import EntryId, NonBlank, parse_entries
from bot.knowledge.model import KnowledgeFile, OutOfScopeGroup
from bot.knowledge.names import name_words

FILE_NAMES = ("out_of_scope.yml", "out_of_scope.yaml")


def is_out_of_scope_file(path: PurePath) -> bool:
    return path.name.lower() in FILE_NAMES


def _has_words(name: str) -> str:
    if not name_words(name):
        raise ValueError("a name needs at least one letter or digit")
    return name


Name = Annotated[NonBlank, AfterValidator(_has_words)]


class _GroupSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: EntryId
    examples: list[NonBlank] = Field(min_length=1)
    reply: NonBlank | None = None  # what the bot says instead of messages.out_of_scope
    names: list[Name] = Field(default_factory=list)  # a message naming one is declined too


_LIMITS = {"examples": limits.PHRASING, "reply": limits.REPLY, "names": limits.NAME}


def parse_out_of_scope(path: str, text: str) -> KnowledgeFile:
    """Parse one out-of-scope file: a YAML list of groups with id, examples, an optional reply and names."""

    def build(group: _GroupSchema, line: int) -> OutOfScopeGroup:
        return OutOfScopeGroup(
            id=group.id,
            examples=tuple(group.examples),
            reply=group.reply,
            file=path,
            line=line,
            names=tuple(group.names),
        )

    return parse_entries(path, text, _GroupSchema, build, "out-of-scope groups", _LIMITS)
