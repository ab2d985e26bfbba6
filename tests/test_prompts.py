"""Prompt templates: validated with file and line, reloaded when edited, last good version kept."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bot.config import load_config
from bot.llm.breaker import BreakerState, CircuitBreaker
from bot.llm.grounding import read_citations
from bot.llm.prompts import PromptLibrary, PromptUnavailable
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import Hit
from serving.cli import app
from tests.conftest import ConfigFactory, LiveServer
from tests.model_server import RecordingProxy

RETURNS_QUESTION = "How long do I have to return something?"


def test_the_shipped_templates_are_valid(prompts_dir: Path) -> None:
    library = PromptLibrary(prompts_dir)
    assert library.problems == ()
    assert "bot_name" not in library.render("system", bot_name="Northwind")
    assert "Northwind" in library.render("system", bot_name="Northwind")


def test_problems_name_the_file_the_line_and_what_is_wrong(prompts_dir: Path) -> None:
    (prompts_dir / "answer.md").write_text("Passages:\n{{ context }}\n\nQuestion: {{ customer_text }}\n")
    (prompts_dir / "clarify.md").write_text("Which one?\n{% if options %}\n{{ question }}\n")
    (prompts_dir / "handoff.md").unlink()

    problems = [str(p) for p in PromptLibrary(prompts_dir).problems]

    assert (
        "answer.md:4: unknown variable 'customer_text' (this template can use: bot_name, context, question)" in problems
    )
    assert "answer.md:1: missing variable 'question': the template must include {{ question }}" in problems
    assert any(p.startswith("clarify.md:3: template syntax error:") for p in problems), problems
    assert any(
        p.startswith("handoff.md:1: missing: without it the model is not used for handoff messages") for p in problems
    )


def test_a_task_whose_template_never_loaded_is_unavailable(prompts_dir: Path) -> None:
    (prompts_dir / "clarify.md").write_text("{{ nonsense }}")
    library = PromptLibrary(prompts_dir)
    assert not library.available("clarify") and library.available("answer")
    with pytest.raises(PromptUnavailable):
        library.render("clarify", question="q", options="o")


def test_a_broken_edit_keeps_the_last_good_template(prompts_dir: Path) -> None:
    library = PromptLibrary(prompts_dir)
    (prompts_dir / "answer.md").write_text("V2 {{ context }} {{ question }}")
    assert library.reload().loaded == ("answer",)
    (prompts_dir / "answer.md").write_text("V3 {{ context }} {{ question }} {{ secret_var }}")
    report = library.reload()
    assert report.loaded == () and [p.line for p in report.problems] == [1]
    assert library.render("answer", context="C", question="Q", bot_name="B") == "V2 C Q"


def test_bot_prompts_check_reports_problems_and_fails(write_config: ConfigFactory, prompts_dir: Path) -> None:
    config = write_config()
    runner = CliRunner()
    assert runner.invoke(app, ["prompts", "check", "--config", str(config)]).exit_code == 0
    (prompts_dir / "system.md").write_text("You are {{ bot_nam }}.")
    result = runner.invoke(app, ["prompts", "check", "--config", str(config)])
    assert result.exit_code == 1
    assert "system.md:1: unknown variable 'bot_nam'" in result.output


def test_edited_prompts_apply_live_and_a_broken_edit_is_reported_not_used(
    write_config: ConfigFactory,
    llm_settings: dict[str, object],
    model_proxy: RecordingProxy,
    embedder: Embedder,
    prompts_dir: Path,
) -> None:
    # It asks again and again until the edit is used: on a busy machine that can pass the address limit.
    config = load_config(write_config(llm=llm_settings, web={"messages_per_minute_per_ip": 1_000_000}))
    answer = prompts_dir / "answer.md"
    with LiveServer(config, embedder, watch=True) as server, server.client() as client:
        answer.write_text("EDITED TEMPLATE\n<context>\n{{ context }}\n</context>\n{{ question }}\n")
        deadline = time.monotonic() + 30
        while True:  # the edit applies within moments
            if prompt_of_a_model_answer(client, model_proxy).startswith("EDITED TEMPLATE"):
                break
            assert time.monotonic() < deadline, "the edited template was never used"
            time.sleep(0.2)

        answer.write_text("BROKEN {{ context }} {{ question }} {{ not_a_variable }}\n")
        health = wait_for_problem(client)
        assert any("answer.md:1: unknown variable 'not_a_variable'" in p for p in health["model"]["prompt_problems"])
        # The last good version.
        assert prompt_of_a_model_answer(client, model_proxy).startswith("EDITED TEMPLATE")


def prompt_of_a_model_answer(client: httpx.Client, model_proxy: RecordingProxy) -> str:
    """Asks RETURNS_QUESTION; the user prompt of the one model request made for it. (The tiny model is not
    trained on an edited template, so its answer may be set aside as uncited: the prompt is what counts.)"""
    before = len(model_proxy.requests)
    assert client.post("/api/chat", json={"text": RETURNS_QUESTION}).status_code == 200
    assert len(model_proxy.requests) == before + 1, "this question never reached the model"
    prompt = model_proxy.user_prompt()
    assert RETURNS_QUESTION in prompt
    return prompt


def wait_for_problem(client: httpx.Client) -> dict[str, dict[str, list[str]]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        if health["model"]["prompt_problems"]:
            return dict(health)
        time.sleep(0.1)
    raise AssertionError("the broken template was never reported")


def test_only_citations_of_passages_that_were_shown_count() -> None:
    hits = [Hit(f"item-{n}", "faq", f"T{n}", "body", "faq/x.yml", n, 0.9) for n in (1, 2)]
    answer = read_citations("Returns take 30 days [2]. Shipping is free [1, 2]. Also [7].", hits)
    assert [h.item_id for h in answer.cited] == ["item-2", "item-1"]
    assert answer.text == "Returns take 30 days. Shipping is free. Also."
    assert read_citations("No sources here.", hits).cited == ()


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh each time (a plain `breaker.state` after an assert stays narrowed for the type checker)."""
    return breaker.state


def test_breaker_opens_after_failures_lets_one_trial_through_and_closes_on_success() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_after_s=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and not breaker.allow()  # one trial call at a time
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED and breaker.allow()
