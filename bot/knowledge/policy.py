"""Policy documents: Markdown split into passages at headings, each keeping its file and heading path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from markdown_it import MarkdownIt

from bot.knowledge.model import KnowledgeFile, Passage, Problem

_MARKDOWN = MarkdownIt("commonmark")


def slugify(text: str) -> str:
    """Heading text to the id fragment operators use in eval cases: lowercase a-z0-9 joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-") or "section"


@dataclass
class _Section:
    level: int
    title: str
    line: int  # 1-based line of the heading
    body_start: int  # 0-based first line after the heading
    body_end: int = -1


def parse_policy(path: str, text: str) -> KnowledgeFile:
    """Parse one Markdown document. Headings inside code blocks are not headings (markdown-it knows)."""
    source_lines = text.splitlines()
    if not text.strip():
        return KnowledgeFile(path, (), (Problem(path, 1, "the document is empty"),))

    sections: list[_Section] = []
    tokens = _MARKDOWN.parse(text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            title = tokens[index + 1].content.strip()
            start, end = token.map
            sections.append(_Section(int(token.tag[1:]), title, start + 1, end))
    for current, following in pairwise(sections):
        current.body_end = following.line - 1
    if sections:
        sections[-1].body_end = len(source_lines)

    doc_stem = path.rsplit(".", 1)[0]
    passages: list[Passage] = []
    problems: list[Problem] = []
    used_ids: set[str] = set()

    preamble_end = sections[0].line - 1 if sections else len(source_lines)
    preamble = "\n".join(source_lines[:preamble_end]).strip()
    if preamble:
        title = doc_stem.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ").capitalize()
        passages.append(Passage(f"{doc_stem}#intro", (title,), preamble, path, 1))
        used_ids.add(f"{doc_stem}#intro")

    trail: list[_Section] = []
    for section in sections:
        while trail and trail[-1].level >= section.level:
            trail.pop()
        trail.append(section)
        if not section.title:
            problems.append(Problem(path, section.line, "heading has no text"))
            continue
        body = "\n".join(source_lines[section.body_start : section.body_end]).strip()
        if not body:
            continue  # a parent heading whose content lives in its sub-sections
        passage_id = _unique_id(doc_stem, [s.title for s in trail], used_ids)
        used_ids.add(passage_id)
        passages.append(Passage(passage_id, tuple(s.title for s in trail), body, path, section.line))

    if problems:
        return KnowledgeFile(path, (), tuple(problems))
    if not passages:
        return KnowledgeFile(path, (), (Problem(path, 1, "the document has headings but no text under them"),))
    return KnowledgeFile(path, tuple(passages), ())


def _unique_id(doc_stem: str, titles: list[str], used: set[str]) -> str:
    """The deepest heading's slug; a repeated heading takes its parents' slugs, then a counter."""
    for depth in range(1, len(titles) + 1):
        candidate = f"{doc_stem}#" + "-".join(slugify(t) for t in titles[-depth:])
        if candidate not in used:
            return candidate
    base = f"{doc_stem}#" + "-".join(slugify(t) for t in titles)
    counter = 2
    while f"{base}-{counter}" in used:
        counter += 1
    return f"{base}-{counter}"
