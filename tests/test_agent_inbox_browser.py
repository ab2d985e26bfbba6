"""The agent inbox (/agent) and the widget in two Chromium contexts: a person takes over and gives it back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from bot.config import Config
from bot.retrieval.embedding import Embedder
from tests.browser import NEEDS_CHROMIUM
from tests.conftest import LiveServer

pytestmark = NEEDS_CHROMIUM
TOKEN = "alice-token-0123456789"
XSS = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture
def served(config: Config, embedder: Embedder) -> Iterator[LiveServer]:
    with LiveServer(config, embedder, environ={"SUPPORTBOT_AGENT_TOKENS": f"alice:{TOKEN}"}) as server:
        yield server


def new_page(browser: Browser) -> Page:
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.set_default_timeout(30_000)
    return page


def ask(widget: Page, text: str) -> None:
    box = widget.get_by_role("textbox", name="Type your message")
    box.fill(text)
    box.press("Enter")


def test_an_agent_claims_replies_and_releases_from_the_inbox(
    browser: Browser, served: LiveServer, config: Config
) -> None:
    agent, customer = new_page(browser), new_page(browser)
    try:
        agent.goto(served.url + "/agent")
        agent.get_by_label("Agent token").fill(TOKEN)
        agent.keyboard.press("Enter")
        expect(agent.get_by_text("Signed in as alice")).to_be_visible()
        queue = agent.get_by_role("navigation", name="Conversations")
        expect(queue).to_contain_text("Nothing here.")

        customer.goto(served.url + "/")
        customer.get_by_role("button", name="Open chat").click()
        ask(customer, f"{XSS} I want to talk to a person")
        widget_log = customer.get_by_role("log")
        expect(widget_log).to_contain_text(config.messages.handoff)  # Alice is online

        entry = queue.get_by_role("button").filter(has_text="I want to talk to a person")
        expect(entry).to_contain_text("customer_request")  # appeared without a reload
        entry.focus()
        agent.keyboard.press("Enter")  # keyboard all the way
        transcript = agent.get_by_role("log", name="Transcript")
        expect(transcript).to_contain_text(XSS)  # customer text is shown as text
        agent.get_by_role("button", name="Claim").focus()
        agent.keyboard.press("Enter")
        expect(agent.locator("#owner")).to_have_text("Owned by alice")
        agent.get_by_role("textbox", name="Message to the customer or note").fill("Hi, Alice here. Order number?")
        agent.get_by_role("button", name="Send to customer").click()
        expect(widget_log).to_contain_text("Hi, Alice here. Order number?")
        expect(customer.locator(".msg.agent .who")).to_have_text("alice")

        for text in ("It is order 4711", "It never arrived"):
            ask(customer, text)
            expect(transcript).to_contain_text(text)  # live in the inbox
        agent.get_by_role("textbox", name="Message to the customer or note").fill("Refund approved by the lead")
        agent.get_by_role("button", name="Add internal note").click()
        expect(transcript).to_contain_text("Refund approved by the lead")

        agent.get_by_role("button", name="Release to the bot").click()
        expect(agent.locator("#owner")).to_have_text("With the bot")
        ask(customer, "How can I track my order?")
        expect(widget_log).to_contain_text("tracking link")
        with served.client() as client:
            (item,) = client.get("/api/agent/conversations?state=bot",
                                 headers={"Authorization": f"Bearer {TOKEN}"}).json()  # fmt: skip
            turns = client.get(f"/api/agent/conversations/{item['id']}",
                               headers={"Authorization": f"Bearer {TOKEN}"}).json()["turns"]  # fmt: skip
        roles = [t["role"] for t in turns]
        # The bot said nothing to the two messages Alice owned; the note never reached the customer.
        assert roles == ["user", "bot", "agent", "user", "user", "note", "user", "bot"]
        assert "Refund approved" not in widget_log.inner_text()
        assert agent.evaluate("window.__pwned") is None and customer.evaluate("window.__pwned") is None
    finally:
        agent.context.close()
        customer.context.close()
