"""`bot kb check` for business actions: every action an FAQ entry or form names must be one the action
server lists (GET /actions), reported with the file and line that names it."""

from __future__ import annotations

from collections.abc import Iterable

from bot.knowledge.model import FaqEntry, Form, KnowledgeItem, Problem


def named_actions(items: Iterable[KnowledgeItem]) -> list[tuple[str, str, int]]:
    """(action, file, line) for each FAQ entry and form that names an action."""
    named: list[tuple[str, str, int]] = []
    for item in items:
        action = item.action if isinstance(item, FaqEntry | Form) else None
        if action:
            named.append((action, item.file, item.line))
        if isinstance(item, Form) and item.validate:
            named.append((item.validate, item.file, item.line))
    return named


def action_problems(items: Iterable[KnowledgeItem], listed: set[str], where: str) -> list[Problem]:
    shown = ", ".join(sorted(listed)) or "none"
    return [
        Problem(file, line, f"action {action!r} is not one the action server at {where} lists (it lists: {shown})")
        for action, file, line in named_actions(items)
        if action not in listed
    ]
