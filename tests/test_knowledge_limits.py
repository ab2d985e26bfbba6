"""Knowledge has limits: an oversized answer, passage, phrasing, file or knowledge base is reported with its
file and line and not applied, and the last good version stays served. Nothing is cut short in silence."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bot.knowledge import limits
from bot.knowledge.faq import parse_faq
from bot.knowledge.loader import read_knowledge_dir, vet
from bot.knowledge.out_of_scope import parse_out_of_scope
from bot.knowledge.policy import parse_policy
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from serving.cli import app

FAQ = """\
- id: opening-hours
  question: When is customer service open?
  answer: Monday to Friday, 9:00 to 17:00.
- id: gift-wrap
  question: Do you offer gift wrapping?
  alternates:
    - Can you wrap my present?
  answer: {answer}
"""


def messages(problems: object) -> list[str]:
    return [str(p) for p in problems]  # type: ignore[attr-defined]


def test_an_answer_at_the_limit_is_accepted_and_one_character_more_is_reported_at_its_line() -> None:
    assert parse_faq("faq.yml", FAQ.format(answer="y" * limits.MAX_ANSWER_CHARS)).ok
    parsed = parse_faq("faq.yml", FAQ.format(answer="y" * (limits.MAX_ANSWER_CHARS + 1)))
    assert parsed.items == ()  # the whole file waits, as for any other problem
    assert messages(parsed.problems) == [
        f"faq.yml:8: entry 'gift-wrap': answer: {limits.MAX_ANSWER_CHARS + 1:,} characters, more than the "
        f"{limits.MAX_ANSWER_CHARS:,} an answer may have: "
        "shorten it, or split it into several entries"
    ]


def test_a_megabytes_answer_is_reported_without_quoting_it() -> None:
    parsed = parse_faq("faq.yml", FAQ.format(answer="word " * 216_000))  # a megabyte
    (problem,) = parsed.problems
    assert problem.line == 8 and f"1,079,999 characters, more than the {limits.MAX_ANSWER_CHARS:,}" in problem.message
    assert len(str(problem)) < 200


def test_phrasings_tags_replies_and_names_have_limits_too() -> None:
    long = "x" * (limits.MAX_PHRASING_CHARS + 1)
    faq = parse_faq(
        "faq.yml",
        f"- id: a\n  question: {long}\n  alternates:\n    - fine\n    - {long}\n  answer: ok\n  tags: [{long}]\n",
    )
    assert [(p.line, p.message.split(":")[1].strip()) for p in faq.problems] == [
        (2, "question"),
        (5, "alternates.1"),
        (7, "tags.0"),
    ]
    groups = parse_out_of_scope(
        "out_of_scope.yml",
        f"- id: g\n  examples: [fine, {long}]\n  reply: {'r' * (limits.MAX_ANSWER_CHARS + 1)}\n  names: [{long}]\n",
    )
    assert [p.message.split(", more")[0] for p in groups.problems] == [
        "entry 'g': examples.1: 1,001 characters",
        f"entry 'g': reply: {limits.MAX_ANSWER_CHARS + 1:,} characters",
        "entry 'g': names.0: 1,001 characters",
    ]


def test_a_long_policy_section_heading_or_question_is_reported_at_its_line() -> None:
    sentence = "Returns are free within thirty days of delivery. "
    body = sentence * (limits.MAX_PASSAGE_CHARS // len(sentence) + 1)
    text = f"# Returns\n\n## Fine\nShort.\n\n## Long\n{body}\n## {'H' * 1001}\ntext\n"
    text += f"## Asked\n<!-- questions:\n- {'q' * 1001}\n-->\ntext\n"
    parsed = parse_policy("returns.md", text)
    assert parsed.items == ()
    assert [(p.line, p.message.split(":")[0]) for p in parsed.problems] == [
        (6, "section 'Long'"),
        (8, "heading"),
        (11, "questions"),
    ]
    assert f"more than the {limits.MAX_PASSAGE_CHARS:,} a policy section may have: split it with sub-headings" in (
        parsed.problems[0].message
    )
    assert parse_policy("returns.md", f"# Returns\n\n## Long\n{body[: limits.MAX_PASSAGE_CHARS]}\n").ok


def test_an_oversized_file_is_not_read_and_its_last_good_version_stays_served(
    tmp_path: Path, embedder: Embedder
) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.yml").write_text(FAQ.format(answer="Yes, for 3 euros per order."))
    index = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)
    assert index.sync(read_knowledge_dir(kb)).added == ("gift-wrap", "opening-hours")

    # Valid YAML, every entry within the limits; the file as a whole is too big.
    entry = "- id: e{0}\n  question: Question number {0}?\n  answer: {1}\n"
    with (kb / "faq.yml").open("w") as out:
        out.write(FAQ.format(answer="Yes, for 4 euros per order."))
        for number in range(limits.MAX_FILE_BYTES // 3000 + 1):
            out.write(entry.format(number, "a" * 3000))
    (problem,) = vet(read_knowledge_dir(kb)).problems
    lines = (kb / "faq.yml").read_bytes()[: limits.MAX_FILE_BYTES].count(b"\n") + 1
    assert str(problem).startswith(
        f"faq.yml:1: the file is {(kb / 'faq.yml').stat().st_size:,} bytes, more than the 2,000,000 a knowledge "
        f"file may have (the limit falls on line {lines:,}): split it into several files"
    )
    report = index.sync(read_knowledge_dir(kb))
    assert [f.path for f in report.rejected] == ["faq.yml"] and not report.changed
    vector = embedder.embed_one("can you gift wrap it")
    assert index.search(vector, "can you gift wrap it", 1)[0].body == "Yes, for 3 euros per order."


def many(prefix: str, entries: int, phrasings: int = 1) -> str:
    """An FAQ file of `entries` entries, 4 lines each, with `phrasings` phrasings and a one-text answer each."""
    return "".join(
        f"- id: {prefix}{n}\n  question: {prefix} question {n}?\n"
        f"  alternates: [{', '.join(f'{prefix} {n} alternate {a}' for a in range(phrasings - 1))}]\n  answer: ok\n"
        for n in range(entries)
    )


def test_the_file_that_takes_the_knowledge_base_past_its_texts_is_rejected_at_the_entry_that_does(
    tmp_path: Path,
) -> None:
    assert limits.MAX_TEXTS == 12_000
    (tmp_path / "a.yml").write_text(many("a", 1199, phrasings=9))  # 11,990 texts: 9 phrasings and an answer each
    (tmp_path / "b.yml").write_text(many("b", 2))  # 4 more: fits
    (tmp_path / "c.yml").write_text(many("c", 20))  # its 4th entry would bring texts 12,001 and 12,002
    (tmp_path / "d.yml").write_text(many("d", 3))  # exactly 12,000 once c is left out
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["a.yml", "b.yml", "d.yml"]
    assert messages(vetting.problems) == [
        "c.yml:13: too many texts: this file's 40 and the 11,994 of the files applied before it are more than "
        "the 12,000 a knowledge base may have (each question, alternate, example, passage, answer, and sentence "
        "of a passage or answer is one): remove or merge entries"
    ]
    # What is served keeps its place: a new file that sorts first is the one left out.
    (tmp_path / "0.yml").write_text(many("z", 1))
    owners = {f"{p}{n}": f"{p}.yml" for p, count in (("a", 1199), ("b", 2), ("d", 3)) for n in range(count)}
    vetting = vet(read_knowledge_dir(tmp_path), owners)
    assert [f.path for f in vetting.rejected] == ["0.yml", "c.yml"]


def test_kb_check_reports_limits_with_file_and_line_and_counts_the_texts(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.yml").write_text(FAQ.format(answer="y" * (limits.MAX_ANSWER_CHARS + 1000)))
    (kb / "ok.yml").write_text(many("ok", 3))
    config = tmp_path / "config.yml"
    config.write_text(f"knowledge:\n  path: {kb}\n")
    result = CliRunner().invoke(app, ["kb", "check", "--config", str(config)])
    assert result.exit_code == 1
    too_long = f"answer: {limits.MAX_ANSWER_CHARS + 1000:,} characters, more than the {limits.MAX_ANSWER_CHARS:,}"
    assert f"{kb / 'faq.yml'}:8: entry 'gift-wrap': {too_long}" in result.output
    assert "6 texts to embed, of the 12,000 a knowledge base may have" in result.output  # questions, answers
