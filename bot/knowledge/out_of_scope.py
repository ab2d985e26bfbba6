"""Out-of-scope files: examples of messages the bot should decline rather than answer.

An operator lists what customers ask that the knowledge base does not (and should not) answer, in
groups: other shops' orders, trip advice, job applications... A message closer to one of these than
to anything answerable is declined with the group's reply (or the configured default) and the offer
of a person, like Rasa's out_of_scope intent or Dialogflow's negative examples. The examples also give
the answer threshold real unanswerable messages to calibrate against.
"""

from __future__ import annotations

from pathlib import PurePath

from pydantic import BaseModel, ConfigDict, Field

from bot.knowledge.entries import EntryId, NonBlank, parse_entries
from bot.knowledge.model import KnowledgeFile, OutOfScopeGroup

FILE_NAMES = ("out_of_scope.yml", "out_of_scope.yaml")


def is_out_of_scope_file(path: PurePath) -> bool:
    return path.name.lower() in FILE_NAMES


class _GroupSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: EntryId
    examples: list[NonBlank] = Field(min_length=1)
    reply: NonBlank | None = None  # what the bot says instead of messages.out_of_scope


def parse_out_of_scope(path: str, text: str) -> KnowledgeFile:
    """Parse one out-of-scope file: a YAML list of groups with id, examples and an optional reply."""

    def build(group: _GroupSchema, line: int) -> OutOfScopeGroup:
        return OutOfScopeGroup(id=group.id, examples=tuple(group.examples), reply=group.reply, file=path, line=line)

    return parse_entries(path, text, _GroupSchema, build, "out-of-scope groups")
