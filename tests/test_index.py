"""The index follows the knowledge files incrementally and keeps the last good version of broken files."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.knowledge.loader import read_knowledge_dir
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex

FAQ = """\
- id: opening-hours
  question: When is customer service open?
  alternates:
    - What are your support hours?
  answer: Monday to Friday, 9:00 to 17:00.
"""
OTHER = """\
- id: gift-wrap
  question: Do you offer gift wrapping?
  answer: Yes, for 3 euros per order.
"""


def open_index(path: Path, embedder: Embedder) -> KnowledgeIndex:
    return KnowledgeIndex.open(path, "knowledge", embedder)


def synced_index(tmp_path: Path, embedder: Embedder, files: dict[str, str]) -> tuple[Path, KnowledgeIndex]:
    """A knowledge folder holding `files` (name -> text), and an index synced to it."""
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in files.items():
        (kb / name).write_text(text)
    index = open_index(tmp_path / "chroma", embedder)
    index.sync(read_knowledge_dir(kb))
    return kb, index


def top(index: KnowledgeIndex, embedder: Embedder, text: str) -> tuple[str, str]:
    hit = index.search(embedder.embed_one(text), text, 1)[0]
    return hit.item_id, hit.body


def test_unchanged_files_are_not_re_embedded(tmp_path: Path, embedder: Embedder) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "hours.yml").write_text(FAQ)
    (kb / "gifts.yml").write_text(OTHER)
    index = open_index(tmp_path / "chroma", embedder)

    first = index.sync(read_knowledge_dir(kb))
    assert (first.added, first.texts_embedded) == (("gift-wrap", "opening-hours"), 3)

    again = index.sync(read_knowledge_dir(kb))
    assert (again.added, again.updated, again.removed, again.unchanged, again.texts_embedded) == (
        (),
        (),
        (),
        2,
        0,
    )

    # Edit one question in one file: only that text is embedded; the other file costs nothing.
    before = embedder.texts_embedded
    (kb / "hours.yml").write_text(FAQ.replace("When is customer service open?", "When can I call you?"))
    edited = index.sync(read_knowledge_dir(kb))
    assert edited.updated == ("opening-hours",) and edited.unchanged == 1
    assert edited.texts_embedded == 1 and embedder.texts_embedded - before == 1


def test_answer_only_edit_changes_the_reply_without_embedding(tmp_path: Path, embedder: Embedder) -> None:
    kb, index = synced_index(tmp_path, embedder, {"hours.yml": FAQ})
    (kb / "hours.yml").write_text(FAQ.replace("9:00 to 17:00", "8:00 to 20:00"))
    report = index.sync(read_knowledge_dir(kb))
    assert report.updated == ("opening-hours",) and report.texts_embedded == 0
    assert top(index, embedder, "what are your support hours")[1] == "Monday to Friday, 8:00 to 20:00."


def test_removed_entries_and_files_disappear(tmp_path: Path, embedder: Embedder) -> None:
    kb, index = synced_index(tmp_path, embedder, {"hours.yml": FAQ, "gifts.yml": OTHER})
    (kb / "gifts.yml").unlink()
    report = index.sync(read_knowledge_dir(kb))
    assert report.removed == ("gift-wrap",)
    assert set(index.owners()) == {"opening-hours"}
    assert top(index, embedder, "can you gift wrap my order")[0] == "opening-hours"


def test_a_broken_file_keeps_its_last_good_version_served(tmp_path: Path, embedder: Embedder) -> None:
    kb, index = synced_index(tmp_path, embedder, {"hours.yml": FAQ, "gifts.yml": OTHER})

    (kb / "hours.yml").write_text(FAQ.replace("  answer: Monday to Friday, 9:00 to 17:00.\n", ""))
    (kb / "gifts.yml").write_text(OTHER.replace("3 euros", "4 euros"))
    report = index.sync(read_knowledge_dir(kb))
    assert [f.path for f in report.rejected] == ["hours.yml"]
    assert "answer: required key is missing" in str(report.rejected[0].problems[0])
    assert report.removed == () and report.updated == ("gift-wrap",)  # the good file still applies
    assert top(index, embedder, "when is customer service open")[1] == "Monday to Friday, 9:00 to 17:00."


def test_index_persists_across_a_restart(tmp_path: Path, embedder: Embedder) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "hours.yml").write_text(FAQ)
    open_index(tmp_path / "chroma", embedder).sync(read_knowledge_dir(kb))

    # A new process would open a copy of the folder with a fresh client.
    shutil.copytree(tmp_path / "chroma", tmp_path / "restarted")
    reopened = open_index(tmp_path / "restarted", embedder)
    assert len(reopened) == 2
    assert reopened.sync(read_knowledge_dir(kb)).texts_embedded == 0
    assert top(reopened, embedder, "support hours?")[0] == "opening-hours"


def test_demo_knowledge_base_is_fully_indexed(demo_index_template: Path, embedder: Embedder) -> None:
    index = open_index(demo_index_template, embedder)
    owners = index.owners()
    assert len([i for i in owners if "#" not in i]) >= 30  # FAQ entries
    policy_files = {owners[i] for i in owners if "#" in i}
    assert {
        f"policies/{name}.md" for name in ("shipping", "returns", "payments", "privacy", "warranty")
    } <= policy_files


OTHER_SHOPS = """\
- id: other-shops
  examples:
    - can you check my order from another shop
  reply: I can only see orders placed with us.
  names:
    - Acme Mart
    - Gift Co
"""


def test_out_of_scope_names_follow_edits_survive_a_restart_and_a_broken_file(
    tmp_path: Path, embedder: Embedder
) -> None:
    kb, index = synced_index(tmp_path, embedder, {"hours.yml": FAQ, "out_of_scope.yml": OTHER_SHOPS})
    named = index.ranking.out_of_scope_name("is acme mart's support open on sundays?")
    assert named is not None and (named[0].item_id, named[1].name) == ("other-shops", "Acme Mart")
    assert named[0].body == "I can only see orders placed with us."
    assert index.ranking.out_of_scope_name("is your support open on sundays?") is None

    # The store starts gift wrapping with Gift Co: a name the knowledge mentions declines nothing.
    (kb / "gifts.yml").write_text(OTHER.replace("3 euros per order", "3 euros per order, wrapped by Gift Co"))
    report = index.sync(read_knowledge_dir(kb))
    assert report.added == ("gift-wrap",)
    assert index.ranking.out_of_scope_name("does gift co wrap my order?") is None
    assert [(n.group, n.name) for n in index.names.ignored] == [("other-shops", "Gift Co")]

    # An edit to the names alone relabels the group without embedding anything.
    (kb / "out_of_scope.yml").write_text(OTHER_SHOPS.replace("- Acme Mart", "- Bolt Outlet"))
    report = index.sync(read_knowledge_dir(kb))
    assert report.updated == ("other-shops",) and report.texts_embedded == 0
    assert index.ranking.out_of_scope_name("acme mart hours?") is None
    assert index.ranking.out_of_scope_name("bolt outlet hours?") is not None

    # A broken file keeps its last good names; a restart reads them from the index alone.
    (kb / "out_of_scope.yml").write_text(OTHER_SHOPS.replace("  names:\n", "  names: oops\n"))
    assert [f.path for f in index.sync(read_knowledge_dir(kb)).rejected] == ["out_of_scope.yml"]
    assert index.ranking.out_of_scope_name("bolt outlet hours?") is not None
    shutil.copytree(tmp_path / "chroma", tmp_path / "restarted")
    reopened = open_index(tmp_path / "restarted", embedder)
    match = reopened.ranking.out_of_scope_name("Where are the Bolt Outlets?")  # a plural still names it
    assert match is not None and match[1].name == "Bolt Outlet"


def test_a_mark_or_names_taken_away_stay_away_after_a_restart(tmp_path: Path, embedder: Embedder) -> None:
    """Chroma merges a relabelled record's metadata into the old one: what an operator removes must not
    come back when the index is read again from disk."""
    marked = FAQ + "  handoff: true\n"
    kb, index = synced_index(tmp_path, embedder, {"hours.yml": marked, "out_of_scope.yml": OTHER_SHOPS})
    assert index.search(embedder.embed_one("support hours"), "support hours", 1)[0].handoff is True
    (kb / "hours.yml").write_text(FAQ)
    (kb / "out_of_scope.yml").write_text(OTHER_SHOPS.split("  names:")[0])
    report = index.sync(read_knowledge_dir(kb))
    assert set(report.updated) == {"opening-hours", "other-shops"} and report.texts_embedded == 0
    index.close()
    reopened = open_index(tmp_path / "chroma", embedder)
    assert reopened.search(embedder.embed_one("support hours"), "support hours", 1)[0].handoff is False
    assert reopened.ranking.out_of_scope_name("is acme mart's support open on sundays?") is None


RETURNS_FAQ = """\
- id: return-policy
  question: What is your return policy?
  alternates:
    - How long do I have to return something?
    - Can I send back part of my order?
    - I want to return a jacket
  answer: You can return items within 30 days of delivery.
"""
BUNDLES = """\
# Returns
## Bundles
{questions}Products sold together as a bundle are refunded only as a complete bundle.
"""
BUNDLE_QUESTIONS = """\
<!-- questions:
- can I send back only the footprint from the tent set?
- I only want to keep one piece of the package deal
-->
"""


def test_a_passage_is_found_by_the_questions_operators_give_it(tmp_path: Path, embedder: Embedder) -> None:
    message = "I'd like to return just the footprint of the tent set and keep the tent"
    kb, index = synced_index(tmp_path, embedder, {"faq.yml": RETURNS_FAQ, "returns.md": BUNDLES.format(questions="")})
    assert top(index, embedder, message)[0] == "return-policy"  # the policy's wording alone loses

    (kb / "returns.md").write_text(BUNDLES.format(questions=BUNDLE_QUESTIONS))
    report = index.sync(read_knowledge_dir(kb))
    assert report.updated == ("returns#bundles",) and report.texts_embedded == 2  # just the two questions
    item_id, body = top(index, embedder, message)
    assert item_id == "returns#bundles"
    assert body == "Products sold together as a bundle are refunded only as a complete bundle."


SMALL = "".join(
    f"- id: topic-{n}\n  question: How does {topic} work?\n  alternates:\n"
    f"    - Tell me about {topic}\n    - I have a question on {topic}\n    - Where do I read up on {topic}?\n"
    f"  answer: {topic.capitalize()} is explained on our help pages. Write to us if anything is unclear.\n"
    for n, topic in enumerate(
        [
            "gift cards",
            "store pickup",
            "price matching",
            "loyalty points",
            "repairs",
            "rentals",
            "newsletters",
            "student discounts",
            "bulk orders",
        ]
    )
)


def big_faq(entries: int, sentences: int) -> str:
    """Many entries whose answers have many sentences: long to embed when calibrating."""
    return "".join(
        f"- id: rule-{n}\n  question: What does handbook rule {n} say?\n  answer: "
        + " ".join(f"Rule {n} clause {s} covers warehouse case number {n * sentences + s}." for s in range(sentences))
        + "\n"
        for n in range(entries)
    )


def test_a_newer_sync_stops_a_superseded_background_calibration_and_its_own_result_is_served(
    tmp_path: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.retrieval.index")

    def logged(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 120  # generous: this proves what happens, not how fast
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within 120s"
            time.sleep(0.02)

    kb, index = synced_index(tmp_path, embedder, {"small.yml": SMALL})
    assert index.calibration.calibrated and logged("answer selection calibrated") == 1

    # A big file arrives (a live edit): its calibration must embed 4,000 answer sentences first.
    (kb / "big.yml").write_text(big_faq(500, 8))
    embedded_before = embedder.texts_embedded
    index.sync(read_knowledge_dir(kb), calibrate_in_background=True)
    wait_for(lambda: logged("calibrating answer selection") == 2, "the big file's calibration to start")

    # It is deleted again, and another answer edited, while that calibration runs.
    (kb / "big.yml").unlink()
    (kb / "small.yml").write_text(SMALL.replace("Write to us", "Call us"))
    index.sync(read_knowledge_dir(kb), calibrate_in_background=True)
    wait_for(lambda: logged("calibration stopped: superseded by a newer sync") == 1, "the old calibration to stop")
    wait_for(lambda: logged("answer selection calibrated") == 2, "the new calibration")
    index.close()
    # Stopped early: the big file's questions were embedded, but nowhere near all its answer sentences.
    assert embedder.texts_embedded - embedded_before < 500 + 4000

    # What is served is the new content's calibration, and it is what the index stored for that content.
    shutil.copytree(tmp_path / "chroma", tmp_path / "restarted")
    reopened = open_index(tmp_path / "restarted", embedder)
    stored = reopened.sync(read_knowledge_dir(kb), calibrate_in_background=True).calibration
    assert stored is not None and stored == index.calibration and stored.calibrated
