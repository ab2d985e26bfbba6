"""Prompt templates that operators edit in `prompts/`, validated at load and reloaded when edited.

Templates are Jinja (`{{ question }}`) rendered in a sandbox. Each template may use only the
variables its task provides and must use the ones the task cannot work without; a template that
breaks either rule, or does not parse, is reported with file and line and the last good version of
it stays in use. A task whose template never loaded is done without the model (the knowledge answer,
the configured handoff message), so a broken prompt can degrade answers but never break the bot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from bot.knowledge.model import Problem
from bot.watching import watch_directory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSpec:
    file: str
    purpose: str
    allowed: frozenset[str]
    required: frozenset[str] = frozenset()


SPECS: Mapping[str, PromptSpec] = {
    "system": PromptSpec("system.md", "anything (persona and rules for every request)", frozenset({"bot_name"})),
    "answer": PromptSpec(
        "answer.md",
        "answers from the retrieved knowledge",
        frozenset({"bot_name", "context", "question"}),
        frozenset({"context", "question"}),
    ),
    "clarify": PromptSpec(
        "clarify.md",
        "clarifying questions",
        frozenset({"bot_name", "question", "options"}),
        frozenset({"question", "options"}),
    ),
    "handoff": PromptSpec(
        "handoff.md",
        "handoff messages",
        frozenset({"bot_name", "transcript"}),
        frozenset({"transcript"}),
    ),
    "agent_summary": PromptSpec(
        "agent_summary.md",
        "summaries for the person who takes over",
        frozenset({"bot_name", "transcript"}),
        frozenset({"transcript"}),
    ),
}


class PromptUnavailable(LookupError):
    """The task's template has never loaded (missing or broken since start-up)."""


@dataclass(frozen=True)
class LoadReport:
    loaded: tuple[str, ...]
    problems: tuple[Problem, ...]


def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def _line_of(source: str, name: str) -> int:
    pattern = re.compile(r"\{[{%][^}]*\b" + re.escape(name) + r"\b")
    for number, line in enumerate(source.splitlines(), start=1):
        if pattern.search(line):
            return number
    return 1


def check_template(name: str, source: str, file_label: str) -> list[Problem]:
    """Everything wrong with one template's source, each with its line."""
    spec = SPECS[name]
    try:
        parsed = _environment().parse(source)
    except TemplateSyntaxError as err:
        return [Problem(file_label, err.lineno or 1, f"template syntax error: {err.message}")]
    used = meta.find_undeclared_variables(parsed)
    problems = [
        Problem(
            file_label,
            _line_of(source, var),
            f"unknown variable '{var}' (this template can use: {', '.join(sorted(spec.allowed))})",
        )
        for var in sorted(used - spec.allowed)
    ]
    problems += [
        Problem(file_label, 1, f"missing variable '{var}': the template must include {{{{ {var} }}}}")
        for var in sorted(spec.required - used)
    ]
    if not source.strip():
        problems.append(Problem(file_label, 1, "the template is empty"))
    return problems


class PromptLibrary:
    """The templates in use; `reload()` swaps in each file that validates and keeps the rest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._env = _environment()
        self._sources: dict[str, str] = {}
        self._templates: dict[str, Template] = {}  # compiled once per edit, not per message
        self.problems: tuple[Problem, ...] = ()
        self.reload()

    def reload(self) -> LoadReport:
        loaded, problems = [], []
        for name, spec in SPECS.items():
            path = self.directory / spec.file
            if not path.is_file():
                if name not in self._sources:
                    problems.append(
                        Problem(spec.file, 1, f"missing: without it the model is not used for {spec.purpose}")
                    )
                continue  # a file deleted while serving: its last good version stays in use
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                problems.append(Problem(spec.file, 1, f"cannot read: {err}"))
                continue
            found = check_template(name, source, spec.file)
            if found:
                problems += found
                continue
            if self._sources.get(name) != source:
                loaded.append(name)
                self._sources[name] = source
                self._templates[name] = self._env.from_string(source)
        self.problems = tuple(problems)
        for problem in problems:
            log.warning("prompt template not applied (last good version stays in use): %s", problem)
        if loaded:
            log.info("prompt templates loaded: %s", ", ".join(loaded))
        return LoadReport(tuple(loaded), self.problems)

    def available(self, name: str) -> bool:
        return name in self._sources

    def render(self, name: str, **variables: str) -> str:
        """Render with the variables the task provides (a template need not use them all)."""
        if name not in self._templates:
            raise PromptUnavailable(name)
        return self._templates[name].render(**variables).strip()

    async def watch(self, stop: anyio.Event, debounce_ms: int = 200) -> None:
        """Reload after each burst of edits until `stop` is set; templates that fail keep their last good version."""

        if not self.directory.is_dir():
            return

        async def reload() -> None:
            self.reload()

        await watch_directory(self.directory, reload, stop, debounce_ms)
