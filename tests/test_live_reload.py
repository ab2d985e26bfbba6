"""While serving, an operator's edit is answered from the new content; a broken edit is not applied.

These tests prove that edits are applied, not how fast: each waits (up to EDIT_APPLIED_S, generous for a
busy machine) for the new answer, or for /health to report the sync that read a broken file. How fast an
edit is served is a product promise, measured on a quiet machine by bench/live_edit.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.retrieval.embedding import Embedder
from tests.conftest import LiveServer

NEW_FAQ = """\
- id: dog-friendly-stores
  question: Can I bring my dog into your stores?
  alternates:
    - Are dogs allowed in the shop?
  answer: Well-behaved dogs on a lead are welcome in all our stores.
"""

VISITS = """\
- id: warehouse-visits
  examples:
    - is there parking at your warehouse?
    - can I visit the warehouse to pick up my order myself
    - do you do tours of the warehouse
  reply: Our warehouse does not take visitors.
"""


EDIT_APPLIED_S = 60.0


def polled(config: Config) -> Config:
    """The config with the web channel's rate limits out of the way: these tests ask again and again until an
    edit is served, which on a busy machine can take longer than the default 60 messages a minute allow."""
    web = config.web.model_copy(update={"messages_per_minute_per_ip": 1_000_000})
    return config.model_copy(update={"web": web})


def ask(server: LiveServer, text: str) -> dict[str, object]:
    with server.client() as client:
        response = client.post("/api/chat", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def knowledge_status(server: LiveServer) -> dict[str, Any]:
    with server.client() as client:
        return client.get("/health").json()["knowledge"]  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = EDIT_APPLIED_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def wait_for_rejection(server: LiveServer, syncs_before: int, needle: str) -> list[str]:
    """Wait for a sync after `syncs_before` that did not apply a file; its problems, as /health lists them."""

    def rejected() -> bool:
        status = knowledge_status(server)
        return status["syncs"] > syncs_before and any(needle in problem for problem in status["rejected"])

    wait_for(rejected, f"a sync rejecting {needle}")
    return list(knowledge_status(server)["rejected"])


def answers_with(server: LiveServer, question: str, item_id: str) -> bool:
    reply = ask(server, question)
    return reply["answered_by"] == "knowledge" and [c["id"] for c in reply["citations"]] == [item_id]  # type: ignore[attr-defined]


def test_edits_apply_live_and_broken_edits_keep_the_last_good_version(
    config: Config, embedder: Embedder, knowledge_dir: Path
) -> None:
    with LiveServer(polled(config), embedder, watch=True) as server:
        assert not answers_with(server, "are dogs allowed in the shop?", "dog-friendly-stores")
        # A new file.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
        wait_for(
            lambda: (
                ask(server, "are dogs allowed in the shop?")["reply"]
                == "Well-behaved dogs on a lead are welcome in all our stores."
            ),
            "the new file answered",
        )
        assert answers_with(server, "are dogs allowed in the shop?", "dog-friendly-stores")

        # An edit to the answer.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("all our stores", "our Berlin store"))
        wait_for(lambda: "Berlin" in str(ask(server, "are dogs allowed in the shop?")["reply"]), "the edit answered")

        # A broken edit: once a sync has read it (and /health names its problem), the last good version
        # is still the one served.
        syncs = knowledge_status(server)["syncs"]
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("  answer:", "  answr:"))
        problems = wait_for_rejection(server, syncs, "faq/stores-dogs.yml")
        assert any("answer" in problem for problem in problems), problems
        assert "Berlin" in str(ask(server, "are dogs allowed in the shop?")["reply"])
        assert answers_with(server, "are dogs allowed in the shop?", "dog-friendly-stores")

        # Removing the file removes the entry.
        (knowledge_dir / "faq" / "stores-dogs.yml").unlink()

        def entry_gone() -> bool:
            citations = ask(server, "are dogs allowed in the shop?")["citations"]
            return not any(c["id"] == "dog-friendly-stores" for c in citations)  # type: ignore[attr-defined]

        wait_for(entry_gone, "the removed file no longer answered")
        assert knowledge_status(server)["rejected"] == []  # the broken file went with it

        # A new group of messages to decline, in a folder of its own, listing a question answered until
        # now (as an operator does from `bot review`): it is declined with the group's reply at once,
        # whatever the threshold the background recalibration is still working out.
        question = "is there parking at your warehouse?"
        assert ask(server, question)["answered_by"] == "knowledge"
        (knowledge_dir / "visits").mkdir()
        (knowledge_dir / "visits" / "out_of_scope.yml").write_text(VISITS)
        wait_for(
            lambda: str(ask(server, question)["reply"]).startswith("Our warehouse does not take visitors."),
            "the new out-of-scope group declined",
        )
        declined = ask(server, question)
        assert declined["answered_by"] == "fallback" and declined["citations"] == [] and not declined["handoff"]


def test_live_reload_survives_an_undecodable_file_name_and_a_swapped_directory(
    config: Config, embedder: Embedder, knowledge_dir: Path
) -> None:
    with LiveServer(polled(config), embedder, watch=True) as server:
        # A file whose name is not UTF-8 (Latin-1 "café"): the watcher cannot decode it, so an edit after it
        # shows that watching goes on. The sync that applies that edit names the file it could not apply
        # (an answer from it could not be cited) and serves everything else.
        (knowledge_dir / "faq" / "caf\udce9.yml").write_bytes(NEW_FAQ.replace("dog-friendly", "cafe-dogs").encode())
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
        wait_for(
            lambda: "Well-behaved dogs" in str(ask(server, "are dogs allowed in the shop?")["reply"]),
            "an edit after the undecodable name answered",
        )
        problems = knowledge_status(server)["rejected"]
        assert any(p.startswith("faq/caf") and "file name is not UTF-8" in p for p in problems), problems
        assert answers_with(server, "are dogs allowed in the shop?", "dog-friendly-stores")  # not cafe-dogs
        assert answers_with(server, "How do I track my order?", "track-order")

        # Deployed by swapping folders: the old one moves away, a new copy takes its place.
        knowledge_dir.rename(knowledge_dir.with_name("knowledge.old"))
        shutil.copytree(knowledge_dir.with_name("knowledge.old"), knowledge_dir)
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("all our stores", "our Berlin store"))
        wait_for(lambda: "Berlin" in str(ask(server, "are dogs allowed in the shop?")["reply"]), "the swapped folder")
        # And it goes on watching the new folder.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("all our stores", "our Oslo store"))
        wait_for(lambda: "Oslo" in str(ask(server, "are dogs allowed in the shop?")["reply"]), "an edit in the new one")


def test_a_new_folder_is_served_even_when_its_files_land_before_the_watch_on_it(
    config: Config, embedder: Embedder, knowledge_dir: Path
) -> None:
    # A script (or `cp -r`) creates a folder and writes its files within microseconds, before the watcher
    # has started watching the folder: then only the folder's own creation is reported.
    with LiveServer(polled(config), embedder, watch=True) as server:
        for n, city in enumerate(("Berlin", "Oslo", "Lyon", "Turin")):
            (knowledge_dir / f"topic-{n}").mkdir()
            faq = NEW_FAQ.replace("all our stores", f"our {city} store").replace("dog-friendly", f"dogs-{n}")
            (knowledge_dir / f"topic-{n}" / "dogs.yml").write_text(faq.replace("the shop", f"the {city} shop"))
            wait_for(
                lambda city=city: city in str(ask(server, f"are dogs allowed in the {city} shop?")["reply"]),  # type: ignore[misc]
                f"the new folder topic-{n}",
            )
