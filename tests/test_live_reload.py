"""While serving, an operator's edit answers from the new content within 2 seconds; a broken edit is not applied."""

from __future__ import annotations

import time
from pathlib import Path

from bot.config import Config
from bot.embedding import Embedder
from tests.conftest import LiveServer

NEW_FAQ = """\
- id: dog-friendly-stores
  question: Can I bring my dog into your stores?
  alternates:
    - Are dogs allowed in the shop?
  answer: Well-behaved dogs on a lead are welcome in all our stores.
"""


def ask(server: LiveServer, text: str) -> dict[str, object]:
    with server.client() as client:
        return client.post("/api/chat", json={"text": text}).json()  # type: ignore[no-any-return]


def wait_for(condition: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_edits_apply_live_and_broken_edits_keep_the_last_good_version(
    config: Config, embedder: Embedder, knowledge_dir: Path
) -> None:
    with LiveServer(config, embedder, watch=True) as server:
        time.sleep(0.3)  # let the watcher start
        # A new file.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ)
        elapsed = wait_for(
            lambda: (
                ask(server, "are dogs allowed in the shop?")["reply"]
                == "Well-behaved dogs on a lead are welcome in all our stores."
            ),
            2.0,
        )
        assert elapsed < 2.0

        # An edit to the answer.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("all our stores", "our Berlin store"))
        wait_for(lambda: "Berlin" in str(ask(server, "are dogs allowed in the shop?")["reply"]), 2.0)

        # A broken edit: the last good version stays served.
        (knowledge_dir / "faq" / "stores-dogs.yml").write_text(NEW_FAQ.replace("  answer:", "  answr:"))
        time.sleep(1.0)
        assert "Berlin" in str(ask(server, "are dogs allowed in the shop?")["reply"])

        # Removing the file removes the entry.
        (knowledge_dir / "faq" / "stores-dogs.yml").unlink()

        def entry_gone() -> bool:
            citations = ask(server, "are dogs allowed in the shop?")["citations"]
            return not any(c["id"] == "dog-friendly-stores" for c in citations)  # type: ignore[attr-defined]

        wait_for(entry_gone, 2.0)
