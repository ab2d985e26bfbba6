"""Symbolic links in the knowledge folder: followed when they lead inside it, reported when they cannot be.

A broken link, a loop, or a link to somewhere outside the folder (whose edits live reload cannot see) is
a problem of its own at the link's path, never a file skipped without a word.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
from typer.testing import CliRunner

from bot.knowledge.loader import read_knowledge_dir, vet
from bot.knowledge.sync import KnowledgeSync
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from serving.cli import app

FAQ = "- id: {id}\n  question: {question}\n  answer: {answer}\n"
POLICY = "# Returns\n\n## Bundles\nProducts sold together as a bundle are refunded only as a complete bundle.\n"


def faq(entry_id: str) -> str:
    return FAQ.format(id=entry_id, question=f"What about {entry_id}?", answer=f"All about {entry_id}.")


def test_broken_links_and_loops_are_reported_at_the_link_and_the_other_files_load(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(faq("good"))
    (tmp_path / "gone.yml").symlink_to("missing.yml")
    (tmp_path / "loop.yml").symlink_to("loop.yml")
    (tmp_path / "ping.yml").symlink_to("pong.yml")
    (tmp_path / "pong.yml").symlink_to("ping.yml")
    (tmp_path / "policies").symlink_to("old/policies")  # a folder link whose folder is gone
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "notes.txt").symlink_to("missing.txt")  # not a knowledge file: ignored like one
    (tmp_path / ".#good.yml").symlink_to("editor@host.123")  # Emacs' lock file
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["good.yml"]
    assert [str(p) for p in vetting.problems] == [
        "gone.yml:1: broken symbolic link to missing.yml",
        "loop.yml:1: symbolic link loop: loop.yml -> loop.yml leads back to itself",
        "ping.yml:1: symbolic link loop: ping.yml -> pong.yml leads back to itself",
        "policies:1: broken symbolic link to old/policies (old does not exist)",
        "pong.yml:1: symbolic link loop: pong.yml -> ping.yml leads back to itself",
        "sub/up:1: symbolic link loop: it leads to the knowledge folder itself, a folder it is in",
    ]


def test_links_inside_the_folder_are_followed_and_links_outside_it_are_reported(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    release = kb / ".releases" / "v2"  # a hidden folder: read only through the links to it
    (release / "policies").mkdir(parents=True)
    (release / "faq.yml").write_text(faq("linked"))
    (release / "policies" / "returns.md").write_text(POLICY)
    (kb / "faq.yml").symlink_to(".releases/v2/faq.yml")
    (kb / "policies").symlink_to(".releases/v2/policies")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "shared.yml").write_text(faq("shared"))
    (kb / "shared.yml").symlink_to(outside / "shared.yml")
    (kb / "shared").symlink_to(outside)

    vetting = vet(read_knowledge_dir(kb))
    served = {item.id: item.file for f in vetting.accepted for item in f.items}
    assert served == {"linked": "faq.yml", "policies/returns#bundles": "policies/returns.md"}
    assert [str(p) for p in vetting.problems] == [
        f"shared:1: symbolic link to {outside}, outside the knowledge folder: live reload cannot see edits there; "
        "move it into the knowledge folder (a link to a place inside it is followed)",
        f"shared.yml:1: symbolic link to {outside / 'shared.yml'}, outside the knowledge folder: live reload cannot "
        "see edits there; move it into the knowledge folder (a link to a place inside it is followed)",
    ]


def linked_release(tmp_path: Path) -> Path:
    """A knowledge folder whose policies/ is a link to the release folder .v1/policies (and one FAQ file)."""
    kb = tmp_path / "kb"
    (kb / ".v1" / "policies").mkdir(parents=True)
    (kb / ".v1" / "policies" / "returns.md").write_text(POLICY)
    (kb / "faq.yml").write_text(faq("hours"))
    (kb / "policies").symlink_to(".v1/policies")
    return kb


def test_what_a_broken_link_to_a_folder_served_stays_served(tmp_path: Path, embedder: Embedder) -> None:
    kb = linked_release(tmp_path)
    index = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)
    index.sync(read_knowledge_dir(kb))
    assert set(index.owners()) == {"hours", "policies/returns#bundles"}

    shutil.rmtree(kb / ".v1")  # the release the link leads to is gone: a mistake, not a deletion
    report = index.sync(read_knowledge_dir(kb))
    assert [str(p) for f in report.rejected for p in f.problems] == [
        "policies:1: broken symbolic link to .v1/policies (.v1 does not exist)",
        "policies/returns.md:1: not read: policies: broken symbolic link to .v1/policies (.v1 does not exist) "
        "(the last good version stays served)",
    ]
    assert report.removed == () and set(index.owners()) == {"hours", "policies/returns#bundles"}
    (kb / "policies").unlink()  # removing the link is a deletion
    assert index.sync(read_knowledge_dir(kb)).removed == ("policies/returns#bundles",)


def test_kb_check_reports_a_broken_link_instead_of_no_problems(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "good.yml").write_text(faq("good"))
    (kb / "gone.yml").symlink_to("missing.yml")
    config = tmp_path / "config.yml"
    config.write_text(f"knowledge:\n  path: {kb}\n")
    result = CliRunner().invoke(app, ["kb", "check", "--config", str(config)])
    assert result.exit_code == 1
    assert f"{kb / 'gone.yml'}:1: broken symbolic link to missing.yml" in result.output
    assert "no problems" not in result.output


def test_live_reload_applies_the_removal_of_a_link_to_a_folder(tmp_path: Path, embedder: Embedder) -> None:
    kb = linked_release(tmp_path)
    sync = KnowledgeSync(kb, KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder))
    sync.run()
    assert set(sync.index.owners()) == {"hours", "policies/returns#bundles"}

    applied: list[bool] = []

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sync.watch, stop, 50)
            try:
                # The watch reloads once when it starts, already recording edits: then unlink.
                assert await wait_until(lambda: sync.status.syncs >= 2), "the watch did not start"
                # Only the link's own name changes: no knowledge file is edited, moved or deleted.
                await anyio.to_thread.run_sync((kb / "policies").unlink)
                applied.append(await wait_until(lambda: "policies/returns#bundles" not in sync.index.owners()))
            finally:
                stop.set()

    anyio.run(main)
    assert applied == [True], "the passage behind the removed link is still served"
    assert (kb / ".v1" / "policies" / "returns.md").exists()
    sync.index.close()
    shutil.rmtree(tmp_path / "chroma", ignore_errors=True)


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Whether `condition()` came true within `timeout` seconds (generous: edits are applied, not timed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await anyio.sleep(0.05)
    return False


def test_a_link_is_read_at_its_own_path_and_reported_once_its_target_is_gone(tmp_path: Path) -> None:
    (tmp_path / ".drafts").mkdir()
    (tmp_path / ".drafts" / "faq.yml").write_text(faq("draft"))
    (tmp_path / "live.yml").symlink_to(".drafts/faq.yml")
    (tmp_path / "again.yml").symlink_to(".drafts/faq.yml")  # a second link to it
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [(item.id, item.file) for f in vetting.accepted for item in f.items] == [("draft", "again.yml")]
    assert [str(p) for p in vetting.problems] == [
        "live.yml:1: symbolic link to .drafts/faq.yml, which is read already as again.yml: remove one of the links"
    ]
    os.rename(tmp_path / ".drafts" / "faq.yml", tmp_path / ".drafts" / "old.yml")
    assert [str(p) for p in vet(read_knowledge_dir(tmp_path)).problems] == [
        "again.yml:1: broken symbolic link to .drafts/faq.yml",
        "live.yml:1: broken symbolic link to .drafts/faq.yml",
    ]


def test_links_to_what_is_read_anyway_or_to_a_name_live_reload_ignores_are_reported(tmp_path: Path) -> None:
    (tmp_path / "faq").mkdir()
    (tmp_path / "faq" / "orders.yml").write_text(faq("orders"))
    (tmp_path / "orders.yml").symlink_to("faq/orders.yml")
    (tmp_path / "questions").symlink_to("faq")
    (tmp_path / ".v2" / "policies").mkdir(parents=True)
    (tmp_path / ".v2" / "policies" / "returns.md").write_text(POLICY)
    (tmp_path / ".v2" / "hours.txt").write_text(faq("hours"))
    (tmp_path / "a-policies").symlink_to(".v2/policies")
    (tmp_path / "b-policies").symlink_to(".v2/policies")
    (tmp_path / "hours.yml").symlink_to(".v2/hours.txt")
    os.mkfifo(tmp_path / ".v2" / "pipe.yml")  # reading it would wait forever
    (tmp_path / "pipe.yml").symlink_to(".v2/pipe.yml")
    vetting = vet(read_knowledge_dir(tmp_path))
    assert [f.path for f in vetting.accepted] == ["a-policies/returns.md", "faq/orders.yml"]
    assert [str(p) for p in vetting.problems] == [
        "b-policies:1: symbolic link to .v2/policies, which is read already as a-policies: remove one of the links",
        "hours.yml:1: symbolic link to .v2/hours.txt: live reload sees edits to .yml, .yaml and .md files only; "
        "give the file it leads to such a name",
        "orders.yml:1: symbolic link to faq/orders.yml, which is read as it is: remove the link (it would be "
        "served twice)",
        "pipe.yml:1: symbolic link to .v2/pipe.yml, which is neither a file nor a folder",
        "questions:1: symbolic link to faq, which is read as it is: remove the link (it would be served twice)",
    ]
