"""Policy documents: Markdown split into passages at headings, each keeping its file and heading path.

Under a heading, an HTML comment that starts with `questions:` lists ways customers ask about that
section, as a YAML list (the counterpart of an FAQ entry's alternates):

    ## Late and rejected returns
    <!-- questions:
    - what happens if my return gets to you after the 30 days?
    - you refused my return, do I get the boots back?
    -->

A section whose answer should hand the conversation to a person (complaints, legal matters) carries
`<!-- handoff: true -->` under its heading: the bot answers with the section, then a person takes over.

Comments are the operators' own: they are never part of the passage a customer is shown, and a
rendered policy page does not show them either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

import yaml
from markdown_it import MarkdownIt

from bot.knowledge import limits
from bot.knowledge.model import KnowledgeFile, Passage, Problem
from bot.yamlsource import locate_error

_MARKDOWN = MarkdownIt("commonmark")
_COMMENT = re.compile(r"\A\s*<!--(?P<inner>.*?)-->\s*\Z", re.DOTALL)
_QUESTIONS = re.compile(r"\A\s*questions\s*:", re.IGNORECASE)
_HANDOFF = re.compile(r"\A\s*handoff\s*:(?P<value>.*)\Z", re.IGNORECASE | re.DOTALL)


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
    questions: list[str] = field(default_factory=list)
    handoff: bool = False


def parse_policy(path: str, text: str) -> KnowledgeFile:
    """Parse one Markdown document. Headings inside code blocks are not headings (markdown-it knows)."""
    source_lines = text.splitlines()
    if not text.strip():
        return KnowledgeFile(path, (), (Problem(path, 1, "the document is empty"),))

    sections: list[_Section] = []
    problems: list[Problem] = []
    comments: list[tuple[int, int, str]] = []  # 0-based first line, line after, text inside <!-- -->
    tokens = _MARKDOWN.parse(text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            title = tokens[index + 1].content.strip()
            start, end = token.map
            sections.append(_Section(int(token.tag[1:]), title, start + 1, end))
        elif token.type == "html_block" and token.map is not None and (comment := _COMMENT.match(token.content)):
            comments.append((token.map[0], token.map[1], comment["inner"]))
    for current, following in pairwise(sections):
        current.body_end = following.line - 1
    if sections:
        sections[-1].body_end = len(source_lines)

    # Blank out comments so no passage shows them; lift out the questions for their section.
    shown = list(source_lines)  # what customers may see: the source with comments blanked
    preamble_questions: list[str] = []
    preamble_handoff = False
    for start, end, inner in comments:
        shown[start:end] = [""] * (end - start)
        owner = next((s for s in reversed(sections) if s.line - 1 < start), None)
        if (marker := _HANDOFF.match(inner)) is not None:
            value = marker["value"].strip().casefold()
            if value not in ("true", "false"):
                problems.append(Problem(path, start + 1, f"handoff: expected true or false, found {value[:40]!r}"))
            elif owner is not None:
                owner.handoff = value == "true"
            else:
                preamble_handoff = value == "true"
            continue
        if not _QUESTIONS.match(inner):
            continue
        questions, problem = _read_questions(path, start + 1, inner)
        if problem is not None:
            problems.append(problem)
        (owner.questions if owner is not None else preamble_questions).extend(questions)

    doc_stem = path.rsplit(".", 1)[0]
    passages: list[Passage] = []
    used_ids: set[str] = set()

    preamble_end = sections[0].line - 1 if sections else len(source_lines)
    preamble = "\n".join(shown[:preamble_end]).strip()
    if preamble:
        if (reason := limits.PASSAGE.problem(preamble)) is not None:
            problems.append(Problem(path, 1, f"the text before the first heading: {reason}"))
        title = doc_stem.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ").capitalize()
        passages.append(
            Passage(f"{doc_stem}#intro", (title,), preamble, path, 1, tuple(preamble_questions), preamble_handoff)
        )
        used_ids.add(f"{doc_stem}#intro")
    elif preamble_handoff:
        problems.append(Problem(path, 1, "handoff before the first heading, with no text for it to mark"))
    elif preamble_questions:
        problems.append(Problem(path, 1, "questions before the first heading, with no text for them to ask about"))

    trail: list[_Section] = []
    for section in sections:
        while trail and trail[-1].level >= section.level:
            trail.pop()
        trail.append(section)
        if not section.title:
            problems.append(Problem(path, section.line, "heading has no text"))
            continue
        if (reason := limits.HEADING.problem(section.title)) is not None:
            problems.append(Problem(path, section.line, f"heading: {reason}"))
            continue
        body = "\n".join(shown[section.body_start : section.body_end]).strip()
        if not body:
            if section.questions:
                problems.append(Problem(path, section.line, "questions under a heading with no text of its own"))
            if section.handoff:
                problems.append(Problem(path, section.line, "handoff under a heading with no text of its own"))
            continue  # a parent heading whose content lives in its sub-sections
        if (reason := limits.PASSAGE.problem(body)) is not None:
            problems.append(Problem(path, section.line, f"section {section.title!r}: {reason}"))
        passage_id = _unique_id(doc_stem, [s.title for s in trail], used_ids)
        used_ids.add(passage_id)
        heading_path = tuple(s.title for s in trail)
        passages.append(
            Passage(passage_id, heading_path, body, path, section.line, tuple(section.questions), section.handoff)
        )

    if problems:
        return KnowledgeFile(path, (), tuple(sorted(problems, key=lambda p: p.line)))
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


def _read_questions(path: str, line: int, inner: str) -> tuple[list[str], Problem | None]:
    """The list in a `<!-- questions: ... -->` comment that starts on `line` (1-based)."""
    body = inner.lstrip()  # "<!-- questions:" puts a space before the key; the list below starts at column 0
    line += inner[: len(inner) - len(body)].count("\n")
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as err:
        offset, why = locate_error(err, "the comment")
        return [], Problem(path, line + offset, f"questions: not a YAML list ({why})")
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list) or not questions:
        return [], Problem(path, line, "questions: expected a list of one or more questions, one per '- ' line")
    texts = [q.strip() for q in questions if isinstance(q, str) and q.strip()]
    if len(texts) != len(questions):
        return [], Problem(path, line, "questions: every entry must be a question written as text")
    for number, question in enumerate(texts, 1):
        if (reason := limits.PHRASING.problem(question)) is not None:
            return [], Problem(path, line, f"questions: question {number}: {reason}")
    return texts, None
