"""The `bot` command as operators use it: kb index, eval, chat."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from serving.cli import app
from tests.conftest import ConfigFactory

EXPECTED_KEYS = {
    "top1_accuracy",
    "top3_accuracy",
    "clarified",
    "clarified_with_expected",
    "top1_or_clarified",
    "oos_precision",
    "oos_recall",
    "wrong_answers",
    "wrong_answers_offering_expected",
    "latency_ms_p50",
    "latency_ms_p95",
    "n_cases",
}
TINY_FAQ = """\
- id: opening-hours
  question: When is customer service open?
  alternates:
    - What are your support hours?
    - when can i reach you
  answer: Monday to Friday, 9:00 to 17:00.
- id: gift-wrap
  question: Do you offer gift wrapping?
  alternates:
    - can you wrap my present
  answer: Yes, for 3 euros per order.
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_kb_index_reports_what_changed(write_config: ConfigFactory, knowledge_dir: Path) -> None:
    config = str(write_config())
    code, output = run("kb", "index", "--config", config)
    assert code == 0 and "added 0, updated 0, removed 0" in output and "embedded 0 texts" in output

    (knowledge_dir / "faq" / "extra.yml").write_text(TINY_FAQ)
    code, output = run("kb", "index", "--config", config)
    assert code == 0
    assert "added 2, updated 0, removed 0" in output and "embedded 5 texts" in output
    assert "gift-wrap, opening-hours" in output


def test_kb_index_exits_non_zero_when_a_file_is_not_applied(write_config: ConfigFactory, knowledge_dir: Path) -> None:
    (knowledge_dir / "faq" / "broken.yml").write_text("- id: x\n  question: q\n")
    code, output = run("kb", "index", "--config", str(write_config()))
    assert code == 1
    assert "faq/broken.yml:1: entry 'x': answer: required key is missing" in output


def test_eval_on_a_separate_knowledge_dir_writes_figures_and_leaves_the_configured_index_alone(
    tmp_path: Path, write_config: ConfigFactory
) -> None:
    config = write_config()
    kb = tmp_path / "other-kb"
    kb.mkdir()
    (kb / "faq.yml").write_text(TINY_FAQ)
    cases = tmp_path / "cases.csv"
    with cases.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "expected"])
        writer.writerows(
            [
                ["what time does support open", "opening-hours"],
                ["could you gift wrap it", "gift-wrap"],
                ["what is the capital of peru", "out_of_scope"],
                ["tell me a joke about penguins", "out_of_scope"],
            ]
        )
    before = run("kb", "index", "--config", str(config))[1]
    out = tmp_path / "report.json"
    code, output = run(
        "eval",
        "--config",
        str(config),
        "--knowledge",
        str(kb),
        "--cases",
        str(cases),
        "--json",
        str(out),
        "--min-accuracy",
        "0.75",
    )
    assert code == 0, output
    report = json.loads(out.read_text())
    assert set(report) >= EXPECTED_KEYS
    assert report["n_cases"] == 4 and report["top1_accuracy"] >= 0.75
    assert {c["text"]: c["predicted"] for c in report["cases"]}["could you gift wrap it"] == "gift-wrap"
    assert all(set(c) >= {"text", "expected", "predicted", "confidence"} for c in report["cases"])
    # The configured index still serves the demo knowledge base, untouched.
    after = run("kb", "index", "--config", str(config))[1]
    assert "added 0, updated 0, removed 0" in before and "added 0, updated 0, removed 0" in after

    code, output = run(
        "eval",
        "--config",
        str(config),
        "--knowledge",
        str(kb),
        "--cases",
        str(cases),
        "--min-accuracy",
        "1.01",
    )
    assert code == 1 and "below --min-accuracy" in output


def test_eval_rejects_a_malformed_case_file(tmp_path: Path, write_config: ConfigFactory) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("question,answer\nhi,there\n")
    code, output = run("eval", "--config", str(write_config()), "--cases", str(cases))
    assert code == 2 and "header must have columns text,expected" in output


def test_chat_in_the_terminal(write_config: ConfigFactory) -> None:
    result = CliRunner().invoke(
        app, ["chat", "--config", str(write_config())], input="hello\nhow do I reset my password?\n/quit\n"
    )
    assert result.exit_code == 0, result.output
    replies = [line for line in result.output.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 2
    assert "[1] " in result.output and "faq/account.yml" in result.output


def test_bad_config_exits_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "config.yml"
    bad.write_text("answering:\n  min_margin: 2\n")
    code, output = run("kb", "check", "--config", str(bad))
    assert code == 2 and f"{bad}:2: answering.min_margin" in output


def test_set_up_problems_are_one_line_and_exit_2_on_every_command(tmp_path: Path, write_config: ConfigFactory) -> None:
    missing = write_config(knowledge={"path": str(tmp_path / "no-such-folder")})
    for command in (["kb", "check"], ["kb", "index"], ["eval"], ["chat"], ["serve"]):
        code, output = run(*command, "--config", str(missing))
        assert (code, output.strip()) == (2, f"knowledge directory not found: {tmp_path / 'no-such-folder'}"), command
    (tmp_path / "not-a-store.sqlite3").write_bytes(b"\x00garbage" * 500)
    bad_store = write_config(store={"path": str(tmp_path / "not-a-store.sqlite3")})
    for command in (["chat"], ["serve"]):
        code, output = run(*command, "--config", str(bad_store))
        assert code == 2 and output.strip().endswith("cannot be opened: file is not a database"), (command, output)


def test_demo_eval_cases_match_the_knowledge_base_and_accuracy_does_not_regress(
    tmp_path: Path, write_config: ConfigFactory
) -> None:
    out = tmp_path / "demo.json"
    code, output = run("eval", "--config", str(write_config()), "--json", str(out))
    assert code == 0, output
    report = json.loads(out.read_text())
    assert report["unknown_expected"] == []  # every expected id exists in the demo knowledge base
    assert report["n_cases"] >= 100
    # Regression floor one case below the figures recorded in docs/BENCHMARKS.md (117 of 129 = 90.7%, the
    # target being 90%; in scope 97.1%; OOS 100% / 67%), so a near tie that another CPU breaks the other
    # way does not fail the build, while any real regression does.
    correct = sum(c["predicted"] == c["expected"] for c in report["cases"])
    assert correct >= 116, f"{correct} of {report['n_cases']}"  # counted: the reported share is rounded
    assert report["in_scope_accuracy"] >= 0.96
    assert report["oos_recall"] >= 0.55
    assert report["oos_precision"] >= 0.95
    assert report["wrong_answers"] == 0 or report["wrong_answers_offering_expected"] >= 0.6
    assert all(c["predicted"] not in c["related"] and len(c["related"]) <= 2 for c in report["cases"])
