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
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(part for part in (err.context, err.problem) if part)
        raise YamlSyntaxError(line, f"invalid YAML: {reason or err}") from err
    except yaml.YAMLError as err:
        raise YamlSyntaxError(1, f"invalid YAML: {err}") from err
    lines: dict[PathKey, int] = {}
    if root is not None:
        _walk(root, (), lines)
    return data, LineMap(lines)


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
