"""YAML loading that remembers where each value came from, so errors can name a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class LineMap:
    """Maps a path inside the document (keys and list indexes) to its 1-based line."""

    lines: dict[PathKey, int]

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of the deepest known prefix of `path` (pydantic error paths can go deeper)."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)


def load_yaml(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document and map its paths to lines. Raises YamlSyntaxError."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        offset, reason = locate_error(err)
        raise YamlSyntaxError(offset + 1, f"invalid YAML: {reason}") from err
    lines: dict[PathKey, int] = {}
    if root is not None:
        _walk(root, (), lines)
    return data, LineMap(lines)


# Constructs that must be closed, by PyYAML's context for them: the parser only notices one is left open
# where the text stops making sense (lines later, or where the file ends), but the mistake is where it opened.
_OPENED = {
    "while parsing a flow sequence": "unclosed '['",
    "while parsing a flow mapping": "unclosed '{'",
    "while scanning a quoted scalar": "unclosed quote",
    "while scanning a simple key": "no ':' after this key",
}


def locate_error(err: yaml.YAMLError, document: str = "the file") -> tuple[int, str]:
    """Where (0-based line) the mistake behind a PyYAML error is, and the reason, naming both ends when apart.

    An unclosed '[', '{' or quote is reported where it opened (PyYAML's context mark), with the line where
    the parser gave up; any other error where the parser found it, with where its context began.
    `document` names what was parsed, for an error at its end ("the file", "the comment").
    """
    if not isinstance(err, yaml.MarkedYAMLError) or (err.problem_mark is None and err.context_mark is None):
        return 0, str(err)
    problem, context = err.problem_mark, err.context_mark
    found = err.problem or ""
    at_end = "end of stream" in found or "<stream end>" in found
    opened = _OPENED.get(err.context or "")
    if opened is not None and context is not None and (problem is None or context.line < problem.line or at_end):
        if opened == "unclosed quote" and context.buffer and context.pointer < len(context.buffer):
            opened += f" {context.buffer[context.pointer]}"
        gave_up = f"{document} ends before it is closed" if at_end else f"the parser gave up at line {_line(problem)}"
        return context.line, f"{opened} at column {context.column + 1} ({gave_up}: {found})"
    if problem is None:
        assert context is not None
        return context.line, " ".join(part for part in (err.context, found) if part) or str(err)
    began = f" (line {context.line + 1})" if context is not None and context.line != problem.line else ""
    reason = f"{err.context}{began}: {found}" if err.context else found
    return problem.line, reason or str(err)


def _line(mark: yaml.Mark | None) -> int:
    return mark.line + 1 if mark is not None else 1


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], seen: set[int] | None = None) -> None:
    """Record the line of every path under `node`.

    A node reached again through an alias (`*name`) is not walked again: nested aliases would otherwise
    take exponential time (a few hundred bytes could stall the knowledge watcher for hours).
    """
    seen = set() if seen is None else seen
    lines[path] = node.start_mark.line + 1
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            _walk(value_node, child, lines, seen)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, seen)
