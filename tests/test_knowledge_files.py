"""Operators' files: every problem is reported with file, line and reason; valid files parse exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot import yamlsource
from bot.knowledge.faq import parse_faq
from bot.knowledge.loader import read_knowledge_dir, vet
from bot.knowledge.model import FaqEntry, OutOfScopeGroup, Passage
from bot.knowledge.out_of_scope import parse_out_of_scope
from bot.knowledge.policy import parse_policy
from serving.cli import app

GOOD_FAQ = """\
- id: track-order
  question: How can I track my order?
  alternates:
    - Where is my parcel?
  answer: Use the tracking link in your shipping email.
  tags: [orders]
- id: cancel-order
  question: Can I cancel my order?
  answer: Within 30 minutes of ordering.
"""


def messages(problems: object) -> list[str]:
    return [str(p) for p in problems]  # type: ignore[attr-defined]


def test_valid_faq_file_parses_every_field_with_its_line() -> None:
    parsed = parse_faq("faq/orders.yml", GOOD_FAQ)
    assert parsed.ok
    first, second = parsed.items
    assert isinstance(first, FaqEntry)
    assert (first.id, first.question, first.alternates, first.tags) == (
        "track-order",
        "How can I track my order?",
        ("Where is my parcel?",),
        ("orders",),
    )
    assert (first.line, second.line) == (1, 7)
    assert isinstance(second, FaqEntry)
    assert second.alternates == () and second.answer == "Within 30 minutes of ordering."


def test_bad_yaml_names_the_line() -> None:
    parsed = parse_faq("faq/bad.yml", "- id: a\n  question: [unclosed\n  answer: x\n")
    assert not parsed.ok
    (problem,) = parsed.problems
    # The mistake is the '[' on line 2 that is never closed; line 3 is only where PyYAML gave up.
    assert problem.file == "faq/bad.yml" and problem.line == 2
    assert problem.message == (
        "invalid YAML: unclosed '[' at column 13 (the parser gave up at line 3: expected ',' or ']', but got ':')"
    )


def test_an_unclosed_bracket_or_quote_is_reported_where_it_opened_however_far_the_parser_reads_on() -> None:
    # The list is never closed; the parser reads 20,000 more lines of what looks like its items first.
    text = "- id: a\n  question: [unclosed\n" + "    more words\n" * 20_000 + "  answer: x\n"
    (problem,) = parse_faq("faq/big.yml", text).problems
    assert str(problem) == (
        "faq/big.yml:2: invalid YAML: unclosed '[' at column 13 "
        "(the parser gave up at line 20003: expected ',' or ']', but got ':')"
    )
    (problem,) = parse_faq("faq/q.yml", "- id: a\n  question: 'unterminated\n  answer: x\n- id: b\n").problems
    assert str(problem) == (
        "faq/q.yml:2: invalid YAML: unclosed quote ' at column 13 "
        "(the file ends before it is closed: found unexpected end of stream)"
    )


def test_a_yaml_error_inside_a_block_is_reported_where_the_parser_found_it_with_where_the_block_began() -> None:
    (problem,) = parse_faq("faq/i.yml", "- id: a\n  question: q\n  answer: x\n bad: y\n").problems
    assert str(problem) == (
        "faq/i.yml:4: invalid YAML: while parsing a block collection (line 1): "
        "expected <block end>, but found '<block mapping start>'"
    )


def test_missing_and_empty_fields_and_unknown_keys_are_each_reported() -> None:
    text = (
        "- id: ok-entry\n  question: Fine?\n  answer: Yes.\n"
        "- id: no-answer\n  question: Where is the answer?\n"
        "- id: empty-answer\n  question: Empty?\n  answer: '   '\n"
        "- id: extra\n  question: Extra?\n  answer: Yes.\n  colour: red\n"
    )
    parsed = parse_faq("faq/x.yml", text)
    assert parsed.items == ()  # a broken file is unusable as a whole
    assert messages(parsed.problems) == [
        "faq/x.yml:4: entry 'no-answer': answer: required key is missing",
        "faq/x.yml:8: entry 'empty-answer': answer: must not be empty",
        "faq/x.yml:12: entry 'extra': colour: unknown key",
    ]


def test_duplicate_ids_in_one_file_point_at_both_lines() -> None:
    text = "- id: a\n  question: One?\n  answer: 1\n- id: a\n  question: Two?\n  answer: '2'\n"
    parsed = parse_faq("faq/d.yml", text)
    reasons = messages(parsed.problems)
    assert "faq/d.yml:3: entry 'a': answer: Input should be a valid string (got 1)" in reasons
    assert "faq/d.yml:4: duplicate id 'a' (first used on line 1)" in reasons


def test_top_level_must_be_a_list() -> None:
    parsed = parse_faq("faq/m.yml", "id: a\nquestion: q\n")
    assert messages(parsed.problems) == ["faq/m.yml:1: expected a list of FAQ entries, found a mapping"]


def test_policy_splits_at_headings_and_keeps_heading_paths() -> None:
    text = (
        "# Shipping policy\n\n## Delivery times\nEU orders arrive in 2-5 days.\n\n"
        "## Lost parcels\n\n### Reporting damage\nTell us within 48 hours.\n\n"
        "```\n# not a heading\n```\n"
    )
    parsed = parse_policy("policies/shipping.md", text)
    assert parsed.ok
    passages = parsed.items
    assert [p.id for p in passages] == [
        "policies/shipping#delivery-times",
        "policies/shipping#reporting-damage",
    ]
    damage = passages[1]
    assert isinstance(damage, Passage)
    assert damage.heading_path == ("Shipping policy", "Lost parcels", "Reporting damage")
    assert damage.line == 8
    assert "# not a heading" in damage.text  # a code block stays inside its passage


def test_questions_under_a_heading_are_read_and_no_comment_shows_in_a_passage() -> None:
    text = (
        "# Returns\nHow returns work.\n<!-- questions:\n- how do returns work?\n-->\n"
        "## Late returns\n<!-- questions:\n- what if my return is late?\n- 'refused: do I get it back?'\n-->\n"
        "Late parcels are sent back.\n\n<!-- note to self: check with legal -->\n"
        "## Code\n```\n<!-- questions:\n- not read\n-->\n```\n"
    )
    parsed = parse_policy("policies/returns.md", text)
    assert parsed.ok, parsed.problems
    intro, late, code = parsed.items
    assert isinstance(intro, Passage) and isinstance(late, Passage) and isinstance(code, Passage)
    assert (intro.text, intro.questions) == ("How returns work.", ("how do returns work?",))
    assert late.text == "Late parcels are sent back."  # neither comment is shown to customers
    assert late.questions == ("what if my return is late?", "refused: do I get it back?")
    assert late.utterances()[-2:] == late.questions
    assert late.line == 6
    assert code.questions == () and "<!-- questions:" in code.text  # a code block is text, not a comment


def test_problems_in_questions_name_the_line() -> None:
    text = (
        "# Doc\n## A\ntext\n<!-- questions:\n- [unclosed\n-->\n"  # 4-6, the '[' on 5
        "## B\ntext\n<!-- questions: just one -->\n"  # 9
        "## C\ntext\n<!-- questions:\n- fine\n- 42\n- 0.5\n-->\n"  # 12
        "## D\n<!-- questions:\n- about nothing\n-->\n### E\ntext\n"  # 17
    )
    parsed = parse_policy("p.md", text)
    assert not parsed.ok and parsed.items == ()
    problems = {(p.line, p.message.split(" (")[0]) for p in parsed.problems}
    assert problems == {
        (5, "questions: not a YAML list"),
        (9, "questions: expected a list of one or more questions, one per '- ' line"),
        (12, "questions: every entry must be a question written as text"),
        (17, "questions under a heading with no text of its own"),
    }


def test_entries_and_sections_marked_for_a_person_are_read_and_bad_marks_name_the_line() -> None:
    faq = GOOD_FAQ + "- id: complaint\n  question: How do I complain?\n  answer: A person will help.\n  handoff: true\n"
    parsed = parse_faq("faq/orders.yml", faq)
    assert parsed.ok and [item.handoff for item in parsed.items if isinstance(item, FaqEntry)] == [False, False, True]
    wrong = parse_faq("faq/orders.yml", faq.replace("handoff: true", "handoff: 'yes'"))
    assert [(p.line, "handoff" in p.message) for p in wrong.problems] == [(13, True)]
    disputes = "# Disputes\nHow disputes work.\n## Chargebacks\n<!-- handoff: true -->\nOur team handles them.\n"
    policy = parse_policy("policies/disputes.md", disputes + "## Refunds\nIn 14 days.\n")
    assert policy.ok, policy.problems
    marks = [(item.id.split("#")[1], item.handoff) for item in policy.items if isinstance(item, Passage)]
    assert marks == [("disputes", False), ("chargebacks", True), ("refunds", False)]
    assert all("handoff" not in item.body for item in policy.items)  # the mark is never shown to customers
    bad = parse_policy("p.md", "# Doc\n## A\ntext\n<!-- handoff: maybe -->\n## B\n<!-- handoff: true -->\n### C\nc\n")
    assert sorted((p.line, p.message) for p in bad.problems) == [
        (4, "handoff: expected true or false, found 'maybe'"),
        (5, "handoff under a heading with no text of its own"),
    ]


def test_repeated_headings_get_distinct_ids() -> None:
    text = "# Doc\n## A\n### Fees\none\n## B\n### Fees\ntwo\n"
    ids = [p.id for p in parse_policy("p.md", text).items]
    assert ids == ["p#fees", "p#b-fees"]


def test_a_duplicate_id_across_files_rejects_the_later_file_only(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD_FAQ)
    (tmp_path / "b.yml").write_text("- id: track-order\n  question: Again?\n  answer: Dup.\n")
    (tmp_path / "c.yml").write_text("- id: other\n  question: Other?\n  answer: Fine.\n")
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["a.yml", "c.yml"]
    assert messages(vetting.problems) == ["b.yml:1: duplicate id 'track-order': already used in a.yml:1"]


GOOD_OUT_OF_SCOPE = """\
# Messages to decline.
- id: other-shops
  examples:
    - where is my amazon parcel
    - cancel my ebay order
  reply: I can only help with orders placed with us.
- id: chit-chat
  examples: [tell me a joke]
"""


def test_out_of_scope_files_are_read_as_groups_of_examples_in_any_folder(tmp_path: Path) -> None:
    (tmp_path / "faq").mkdir()
    (tmp_path / "faq" / "orders.yml").write_text(GOOD_FAQ)
    (tmp_path / "faq" / "out_of_scope.yml").write_text(GOOD_OUT_OF_SCOPE)
    files = {f.path: f for f in read_knowledge_dir(tmp_path)}
    assert all(isinstance(item, FaqEntry) for item in files["faq/orders.yml"].items)
    shops, chat = files["faq/out_of_scope.yml"].items
    assert isinstance(shops, OutOfScopeGroup) and isinstance(chat, OutOfScopeGroup)
    assert (shops.id, shops.line, shops.reply) == ("other-shops", 2, "I can only help with orders placed with us.")
    assert shops.utterances() == ("where is my amazon parcel", "cancel my ebay order")
    assert (chat.id, chat.line, chat.reply, chat.examples) == ("chit-chat", 7, None, ("tell me a joke",))


def test_out_of_scope_problems_name_the_line_and_the_field() -> None:
    text = """\
- id: empty
  examples: []
- id: typo
  example: [hi]
- id: blank
  examples:
    - "  "
- examples: [no id here]
  reply: 42
"""
    parsed = parse_out_of_scope("out_of_scope.yml", text)
    assert not parsed.ok and parsed.items == ()
    assert messages(parsed.problems) == [
        "out_of_scope.yml:2: entry 'empty': examples: must not be empty",
        "out_of_scope.yml:3: entry 'typo': examples: required key is missing",
        "out_of_scope.yml:4: entry 'typo': example: unknown key",
        "out_of_scope.yml:7: entry 'blank': examples.0: must not be empty",
        "out_of_scope.yml:8: entry 4: id: required key is missing",
        "out_of_scope.yml:9: entry 4: reply: Input should be a valid string (got 42)",
    ]


def test_out_of_scope_names_are_read_and_their_problems_name_the_line() -> None:
    good = parse_out_of_scope(
        "out_of_scope.yml", GOOD_OUT_OF_SCOPE.replace("  examples:\n", "  names: [Acme Mart]\n  examples:\n", 1)
    )
    assert good.ok and good.items[0].names == ("Acme Mart",)  # type: ignore[union-attr]
    text = """\
- id: shops
  examples: [where is my parcel from elsewhere]
  names:
    - Acme Mart
    - "?!"
- id: apps
  examples: [my streaming app is down]
  names: StreamCo
"""
    parsed = parse_out_of_scope("out_of_scope.yml", text)
    assert messages(parsed.problems) == [
        "out_of_scope.yml:5: entry 'shops': names.1: Value error, a name needs at least one letter or digit (got '?!')",
        "out_of_scope.yml:8: entry 'apps': names: Input should be a valid list (got 'StreamCo')",
    ]


def test_kb_check_notes_a_listed_name_that_the_knowledge_mentions(tmp_path: Path, write_config: object) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "orders.yml").write_text(GOOD_FAQ)
    (tmp_path / "kb" / "out_of_scope.yml").write_text(
        "- id: other-shops\n  examples: [my order from another shop]\n  names: [Acme Mart, Parcel]\n"
    )
    config = write_config()  # type: ignore[operator]
    result = CliRunner().invoke(app, ["kb", "check", "--config", str(config), "--knowledge", str(tmp_path / "kb")])
    assert result.exit_code == 0, result.output
    assert "note: out-of-scope group 'other-shops' lists 'Parcel', which the knowledge mentions" in result.output
    assert "1 out-of-scope groups (1 name); no problems" in result.output


def test_an_out_of_scope_group_may_not_reuse_an_faq_id(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD_FAQ)
    (tmp_path / "out_of_scope.yml").write_text("- id: cancel-order\n  examples: [cancel my netflix]\n")
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["a.yml"]
    assert messages(vetting.problems) == ["out_of_scope.yml:1: duplicate id 'cancel-order': already used in a.yml:7"]


def test_an_out_of_scope_example_may_not_repeat_an_faq_phrasing(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD_FAQ)
    (tmp_path / "out_of_scope.yml").write_text("- id: parcels\n  examples: [tell me a joke, 'where is my  PARCEL?']\n")
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["a.yml"]
    assert messages(vetting.problems) == [
        "out_of_scope.yml:1: group 'parcels': example 'where is my  PARCEL?' is also a phrasing of FAQ entry "
        "'track-order' (a.yml): a message cannot be both answered and declined"
    ]


def test_non_utf8_file_is_reported_not_crashed(tmp_path: Path) -> None:
    (tmp_path / "bin.md").write_bytes(b"# Title\n\n## Part\nok\n\xff\xfe garbage")
    (problem,) = vet(read_knowledge_dir(tmp_path)).problems
    assert problem.file == "bin.md" and problem.line == 5 and "not UTF-8" in problem.message


def test_editor_swap_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD_FAQ)
    (tmp_path / ".a.yml.swp").write_text("garbage: [")
    (tmp_path / "a.yml~").write_text("garbage: [")
    assert [f.path for f in read_knowledge_dir(tmp_path)] == ["a.yml"]


def test_kb_check_reports_every_problem_and_exits_non_zero(tmp_path: Path, write_config: object) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "good.yml").write_text(GOOD_FAQ)
    (tmp_path / "kb" / "bad.yml").write_text("- id: x\n  question: q\n")
    (tmp_path / "kb" / "broken.yml").write_text("- id: y\n  question: 'unterminated\n")
    config = write_config()  # type: ignore[operator]
    result = CliRunner().invoke(app, ["kb", "check", "--config", str(config), "--knowledge", str(tmp_path / "kb")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'kb' / 'bad.yml'}:1: entry 'x': answer: required key is missing" in result.output
    assert f"{tmp_path / 'kb' / 'broken.yml'}:" in result.output and "invalid YAML" in result.output


def test_a_file_name_that_is_not_utf8_is_reported_and_the_other_files_load(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD_FAQ)
    (tmp_path / "caf\udce9.yml").write_text(GOOD_FAQ.replace("id: ", "id: other-"))  # Latin-1 "café.yml"
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["good.yml"]
    assert [str(p) for p in vetting.problems] == ["caf\\xe9.yml:1: file name is not UTF-8: rename the file"]


def test_kb_check_passes_on_the_demo_knowledge_base(write_config: object) -> None:
    result = CliRunner().invoke(app, ["kb", "check", "--config", str(write_config())])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    assert "36 passages (36 with questions), 13 out-of-scope groups, 3 forms; no problems" in result.output
    assert "name an action, but no actions are configured" in result.output  # the test config has none


def test_nested_yaml_aliases_are_read_without_expanding_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each level refers to the one before ten times: expanded, 12 levels would be 10^12 strings.
    lines = ["- id: a", "  question: q", "  answer: x", '  tags: &l0 ["t","t","t","t","t","t","t","t","t","t"]']
    lines += [f"  alternates{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 12)]
    # The line map's walk visits each node once; were aliases expanded it would never end, so it is
    # stopped (and the test failed) long before that.
    walked = [0]
    walk = yamlsource._walk

    def counting_walk(*args: Any, **kwargs: Any) -> None:
        walked[0] += 1
        if walked[0] > 10_000:
            raise AssertionError("the YAML walk is expanding aliases")
        walk(*args, **kwargs)

    monkeypatch.setattr(yamlsource, "_walk", counting_walk)
    parsed = parse_faq("faq/aliases.yml", "\n".join(lines) + "\n")
    assert 0 < walked[0] < 500  # about one visit per node and alias, not one per expanded value
    assert not parsed.ok and parsed.problems[0].message == "entry 'a': alternates1: unknown key"
    assert parsed.problems[0].line == 5
