"""FAQ files: a YAML list of entries with id, question, optional alternates, answer, optional tags."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bot.knowledge.model import FaqEntry, KnowledgeFile, Problem
from bot.validation import field_problems
from bot.yamlsource import YamlSyntaxError, load_yaml

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
EntryId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"),
]


class _FaqEntrySchema(BaseModel):
    """The exact schema operators and tools rely on; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: EntryId
    question: NonBlank
    alternates: list[NonBlank] = Field(default_factory=list)
    answer: NonBlank
    tags: list[NonBlank] = Field(default_factory=list)


def parse_faq(path: str, text: str) -> KnowledgeFile:
    """Parse one FAQ file. Every problem is reported; any problem makes the whole file unusable."""
    try:
        data, lines = load_yaml(text)
    except YamlSyntaxError as err:
        return KnowledgeFile(path, (), (Problem(path, err.line, err.message),))
    if data is None:
        return KnowledgeFile(path, (), (Problem(path, 1, "the file is empty; expected a list of FAQ entries"),))
    if not isinstance(data, list):
        return KnowledgeFile(
            path, (), (Problem(path, 1, f"expected a list of FAQ entries, found a {_yaml_type(data)}"),)
        )

    entries: list[FaqEntry] = []
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    for index, raw in enumerate(data):
        line = lines.line_of((index,))
        if not isinstance(raw, dict):
            problems.append(Problem(path, line, f"entry {index + 1}: expected a mapping, found a {_yaml_type(raw)}"))
            continue
        raw_id = raw.get("id")
        if isinstance(raw_id, str) and raw_id.strip():
            if raw_id.strip() in first_line_of_id:
                first = first_line_of_id[raw_id.strip()]
                problems.append(
                    Problem(
                        path,
                        lines.line_of((index, "id")),
                        f"duplicate id {raw_id!r} (first used on line {first})",
                    )
                )
            else:
                first_line_of_id[raw_id.strip()] = lines.line_of((index, "id"))
        try:
            entry = _FaqEntrySchema.model_validate(raw)
        except ValidationError as err:
            label = f"entry {raw['id']!r}" if isinstance(raw.get("id"), str) else f"entry {index + 1}"
            for problem in field_problems(err):
                where = lines.line_of((index, *problem.path))
                field = problem.dotted
                reason = "must not be empty" if "at least 1 character" in problem.reason else problem.reason
                problems.append(Problem(path, where, f"{label}: {field}: {reason}"))
            continue
        entries.append(
            FaqEntry(
                id=entry.id,
                question=entry.question,
                alternates=tuple(entry.alternates),
                answer=entry.answer,
                tags=tuple(entry.tags),
                file=path,
                line=line,
            )
        )
    if problems:
        return KnowledgeFile(path, (), tuple(problems))
    return KnowledgeFile(path, tuple(entries), ())


def _yaml_type(value: object) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
