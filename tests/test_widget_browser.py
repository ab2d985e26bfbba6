"""The widget in a real headless Chromium: ask, see a cited answer, reload and keep history, no injection."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from bot.config import Config, load_config
from bot.retrieval.embedding import Embedder
from tests.browser import NEEDS_CHROMIUM
from tests.conftest import REPO, ConfigFactory, LiveServer
from tests.model_server import RecordingProxy

pytestmark = NEEDS_CHROMIUM
ARTIFACTS = REPO / "artifacts"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def ask(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Type your message")
    box.fill(text)
    box.press("Enter")


def test_ask_a_question_and_see_the_cited_answer_then_reload_and_see_history(
    page: Page, live_server: LiveServer
) -> None:
    page.goto(live_server.url + "/")
    launcher = page.get_by_role("button", name="Open chat")
    launcher.click()
    expect(page.get_by_role("textbox", name="Type your message")).to_be_focused()

    ask(page, "How can I track my order?")
    log = page.get_by_role("log")
    expect(log).to_contain_text("tracking link")
    expect(log).to_contain_text("faq/orders.yml")  # the citation is shown
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget-answer.png"))

    page.reload()
    page.get_by_role("button", name="Open chat").click()
    log = page.get_by_role("log")
    expect(log).to_contain_text("How can I track my order?")
    expect(log).to_contain_text("tracking link")
    text = log.inner_text()
    assert text.count("Tracking can take up to 24 hours") == 1  # history is not duplicated
    assert text.count("How can I track my order?\n") == 1  # one user bubble (the citation chip repeats the title)

    page.keyboard.press("Escape")
    expect(page.get_by_role("textbox", name="Type your message")).to_be_hidden()
    expect(page.get_by_role("button", name="Open chat")).to_be_focused()


def test_html_and_script_payloads_show_as_text_and_never_run(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/")
    page.get_by_role("button", name="Open chat").click()
    payloads = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>"]
    for payload in payloads:
        ask(page, payload)
    log = page.get_by_role("log")
    for payload in payloads:
        expect(log).to_contain_text(payload)
    # Shown as text: no element was made from either payload.
    shadow = "document.querySelector('#supportbot-widget').shadowRoot"
    assert page.evaluate(f"{shadow}.querySelectorAll('img, script').length") == 0
    # A control, added after both payloads were shown: once its broken image's onerror has run, an
    # image made from the first payload would have run its handler too.
    page.evaluate(
        "() => { const img = document.createElement('img');"
        " img.setAttribute('onerror', 'window.__control = 1'); img.src = '/no-such-image.png';"
        " document.body.appendChild(img); }"
    )
    page.wait_for_function("window.__control === 1", timeout=30_000)
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(ARTIFACTS / "widget-injection.png"))


def test_quick_replies_and_the_page_css_does_not_leak_in(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/")
    page.get_by_role("button", name="Open chat").click()
    ask(page, "what's the weather in Berlin tomorrow")
    talk = page.get_by_role("button", name="Talk to a person").last
    expect(talk).to_be_visible()
    # The demo page styles every <button> hot pink with 30px padding; the widget's buttons must not be.
    background = talk.evaluate("el => getComputedStyle(el).backgroundColor")
    assert background != "rgb(255, 105, 180)"
    talk.click()
    # No agents are set up (SUPPORTBOT_AGENT_TOKENS): the bot says so instead of promising a person.
    expect(page.get_by_role("log")).to_contain_text("no one from our team can take over this chat")


def test_mobile_viewport_opens_full_screen(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(live_server.url + "/")
    page.get_by_role("button", name="Open chat").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    # Once the opening transition has ended, the panel covers the screen.
    page.wait_for_function(
        "el => { const r = el.getBoundingClientRect(); return r.x <= 1 && r.width >= 374 && r.height >= 690; }",
        arg=dialog.element_handle(),
        timeout=30_000,
    )
    box = dialog.bounding_box()
    assert box is not None and box["x"] <= 1 and box["width"] >= 374 and box["height"] >= 690
    page.screenshot(path=str(ARTIFACTS / "widget-mobile.png"))
    context.close()


def test_messages_sent_while_the_server_is_down_are_delivered_once_after_it_returns(
    page: Page, config: Config, embedder: Embedder
) -> None:
    server = LiveServer(config, embedder).__enter__()
    port = server.port
    page.goto(server.url + "/")
    page.get_by_role("button", name="Open chat").click()
    ask(page, "How can I track my order?")
    log = page.get_by_role("log")
    expect(log).to_contain_text("tracking link")

    server.__exit__(None, None, None)  # the server goes away mid-conversation
    ask(page, "Can I pay with Klarna?")
    expect(page.get_by_text("Reconnecting")).to_be_visible()

    with LiveServer(config, embedder, port=port):  # back on the same address
        expect(log.get_by_role("listitem")).to_have_count(2)  # the second answer's citation
        text = log.inner_text()
    assert text.count("Can I pay with Klarna?\n") == 1
    with sqlite3.connect(config.store.path) as db:
        rows = db.execute("SELECT role, text FROM turns ORDER BY id").fetchall()
    assert [role for role, _ in rows] == ["user", "bot", "user", "bot"]
    assert rows[2][1] == "Can I pay with Klarna?"


WATCH_STREAMING = """
() => {
  window.__streamed = [];
  const root = document.querySelector('#supportbot-widget').shadowRoot;
  new MutationObserver(() => {
    root.querySelectorAll('.msg.bot.streaming .bubble').forEach((b) => {
      if (window.__streamed[window.__streamed.length - 1] !== b.textContent) window.__streamed.push(b.textContent);
    });
  }).observe(root, { subtree: true, childList: true, characterData: true });
}
"""


def test_a_model_answer_streams_into_the_widget_then_shows_its_citation(
    page: Page,
    write_config: ConfigFactory,
    llm_settings: dict[str, object],
    model_proxy: RecordingProxy,
    embedder: Embedder,
) -> None:
    from tests.tiny_model import CITED_ANSWER

    # The proxy holds the model's stream after its first piece: the widget must show that piece while
    # the rest has not left the model server.
    release = threading.Event()
    model_proxy.behaviour.hold_after_first_piece = release
    config = load_config(write_config(llm=llm_settings))
    with LiveServer(config, embedder) as server:
        page.goto(server.url + "/")
        page.get_by_role("button", name="Open chat").click()
        page.evaluate(WATCH_STREAMING)
        ask(page, "How long do I have to return something?")
        log = page.get_by_role("log")
        expect(log.locator(".msg.bot.streaming .bubble")).not_to_have_text("", timeout=30_000)
        assert CITED_ANSWER.startswith(log.locator(".msg.bot.streaming .bubble").inner_text())
        release.set()
        final = CITED_ANSWER.replace(" [1]", "")
        expect(log.locator(".msg.bot:not(.streaming) .bubble").last).to_have_text(final, timeout=30_000)
        expect(log).to_contain_text("faq/returns.yml")  # the cited passage, as a source chip
        streamed = page.evaluate("window.__streamed")
        page.screenshot(path=str(ARTIFACTS / "widget-model-answer.png"))

    assert len(streamed) > 2, streamed  # the bubble grew piece by piece before the final reply
    assert all(CITED_ANSWER.startswith(text) for text in streamed), streamed


def test_a_person_answers_in_the_widget_and_the_bot_stays_silent_until_released(
    page: Page, config: Config, embedder: Embedder
) -> None:
    """The customer's side in Chromium; the agent works through the agent API (tokens from the environment)."""
    token = "alice-token-0123456789"
    auth = {"Authorization": f"Bearer {token}"}
    with LiveServer(config, embedder, environ={"SUPPORTBOT_AGENT_TOKENS": f"alice:{token}"}) as server:
        with server.client() as agent:
            agent.get("/api/agent/me", headers=auth)  # Alice is online
            page.goto(server.url + "/")
            page.get_by_role("button", name="Open chat").click()
            page.get_by_role("button", name="Talk to a person").last.click()
            log = page.get_by_role("log")
            expect(log).to_contain_text(config.messages.handoff)
            (queued,) = agent.get("/api/agent/conversations", headers=auth).json()
            base = f"/api/agent/conversations/{queued['id']}"
            assert agent.post(f"{base}/claim", headers=auth).status_code == 200
            payload = '<img src=x onerror="window.__pwned=1"> Hi, Alice here!'
            assert agent.post(f"{base}/messages", headers=auth, json={"text": payload}).json()["delivered"]
            expect(log).to_contain_text(payload)  # pushed over the open WebSocket, as text
            expect(page.locator(".msg.agent .who")).to_have_text("alice")

            for text in ("My parcel never came", "It was order 1234"):
                ask(page, text)
                expect(log).to_contain_text(text)
            deadline = time.monotonic() + 60
            while len([t for t in agent.get(base, headers=auth).json()["turns"] if t["role"] == "user"]) < 3:
                assert time.monotonic() < deadline, "the customer's two messages did not reach the server"
                time.sleep(0.05)  # both reach the server (and are kept for Alice) before the release
            assert agent.post(f"{base}/release", headers=auth).status_code == 200
            ask(page, "How can I track my order?")
            expect(log).to_contain_text("tracking link")
            turns = agent.get(base, headers=auth).json()["turns"]
        assert [t["role"] for t in turns] == ["user", "bot", "agent", "user", "user", "user", "bot"]
        assert page.evaluate("window.__pwned") is None
        page.reload()  # the history shows the person's reply with their name
        page.get_by_role("button", name="Open chat").click()
        expect(page.locator(".msg.agent .who")).to_have_text("alice")
        expect(page.get_by_role("log")).to_contain_text("Hi, Alice here!")
