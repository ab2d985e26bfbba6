"""YAML files that hold a list of entries with ids (FAQ entries, out-of-scope examples), validated exactly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

from pydantic import BaseModel, StringConstraints, ValidationError

from bot.knowledge.limits import TextLimit
from bot.knowledge.model import KnowledgeFile, KnowledgeItem, Problem
from bot.validation import field_problems
from bot.yamlsource import LineMap, YamlSyntaxError, load_yaml

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
EntryId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"),
]

# A rasa-sdk action's name, as Rasa writes them (action_order_status, validate_order_form).
ActionName = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z][a-z0-9_]{0,99}$")]

Schema = TypeVar("Schema", bound=BaseModel)


def parse_entries(
    path: str,
    text: str,
    schema: type[Schema],
    build: Callable[[Schema, int], KnowledgeItem],
    what: str,
    limits: Mapping[str, TextLimit],
) -> KnowledgeFile:
    """Parse a YAML list of `schema` entries into items (`build(entry, line)`).

    Every problem is reported with its line; any problem makes the whole file unusable, so a half-edited
    file is never half-applied. `what` names the entries in messages ("FAQ entries"); `limits`: how long
    the text in each field (a string, a list of them, or None) may be (bot.knowledge.limits).
    """
    try:
        data, lines = load_yaml(text)
    except YamlSyntaxError as err:
        return KnowledgeFile(path, (), (Problem(path, err.line, err.message),))
    if data is None:
        return KnowledgeFile(path, (), (Problem(path, 1, f"the file is empty; expected a list of {what}"),))
    if not isinstance(data, list):
        return KnowledgeFile(path, (), (Problem(path, 1, f"expected a list of {what}, found a {yaml_type(data)}"),))

    items: list[KnowledgeItem] = []
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    for index, raw in enumerate(data):
        line = lines.line_of((index,))
        if not isinstance(raw, dict):
            problems.append(Problem(path, line, f"entry {index + 1}: expected a mapping, found a {yaml_type(raw)}"))
            continue
        raw_id = raw.get("id")
        if isinstance(raw_id, str) and raw_id.strip():
            id_line = lines.line_of((index, "id"))
            if raw_id.strip() in first_line_of_id:
                first = first_line_of_id[raw_id.strip()]
                problems.append(Problem(path, id_line, f"duplicate id {raw_id!r} (first used on line {first})"))
            else:
                first_line_of_id[raw_id.strip()] = id_line
        label = f"entry {raw['id']!r}" if isinstance(raw.get("id"), str) else f"entry {index + 1}"
        try:
            entry = schema.model_validate(raw)
        except ValidationError as err:
            for problem in field_problems(err):
                where = lines.line_of((index, *problem.path))
                problems.append(Problem(path, where, f"{label}: {problem.dotted}: {problem.reason}"))
            continue
        too_long = _too_long(path, lines, index, label, entry, limits)
        if too_long:
            problems.extend(too_long)
            continue
        items.append(build(entry, line))
    if problems:
        return KnowledgeFile(path, (), tuple(problems))
    return KnowledgeFile(path, tuple(items), ())


def _too_long(
    path: str, lines: LineMap, index: int, label: str, entry: BaseModel, limits: Mapping[str, TextLimit]
) -> list[Problem]:
    """A problem for each text of a valid `entry` longer than its field's limit."""
    problems = []
    for field, limit in limits.items():
        value = getattr(entry, field)
        texts = [((field,), value)] if isinstance(value, str) else [((field, i), v) for i, v in enumerate(value or ())]
        for where, text in texts:
            reason = limit.problem(text)
            if reason is not None:
                dotted = ".".join(str(part) for part in where)
                problems.append(Problem(path, lines.line_of((index, *where)), f"{label}: {dotted}: {reason}"))
    return problems


def yaml_type(value: object) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
