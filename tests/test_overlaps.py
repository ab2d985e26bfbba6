"""`bot kb overlaps`: phrasings that another item answers first, found before customers hit them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ConfigFactory
from tests.test_cli import run

MISFILED = "where is my parcel right now"
DECLINED_BUT_ANSWERED = "how long until my refund arrives"
FAQ = f"""\
- id: track-order
  question: Where is my order?
  alternates:
    - track my parcel
    - has my package shipped yet
    - order status please
  answer: Follow the tracking link in your dispatch email.
- id: refund-timing
  question: How long do refunds take?
  alternates:
    - when will I get my money back
    - the refund is still not on my card
    - {MISFILED}
  answer: Refunds reach your card 3 to 5 working days after we receive the return.
- id: gift-wrap
  question: Do you offer gift wrapping?
  alternates:
    - can you wrap my present
    - gift wrap option at checkout
  answer: Yes, for 3 euros per order.
"""
OUT_OF_SCOPE = f"""\
- id: off-topic
  examples:
    - tell me a joke
    - what's the weather tomorrow
    - {DECLINED_BUT_ANSWERED}
"""


def overlaps(config: Path, knowledge: Path, out: Path) -> tuple[str, dict[tuple[str, str], str]]:
    code, output = run("kb", "overlaps", "--config", str(config), "--knowledge", str(knowledge), "--json", str(out))
    assert code == 0, output
    crossings = json.loads(out.read_text())["crossings"]
    return output, {(c["item"], c["text"]): c["found"] for c in crossings}


def test_a_misfiled_phrasing_is_reported_with_the_item_that_answers_it_and_moving_it_clears_the_report(
    tmp_path: Path, write_config: ConfigFactory
) -> None:
    config = write_config()
    knowledge = tmp_path / "other-kb"
    knowledge.mkdir()
    (knowledge / "faq.yml").write_text(FAQ)
    (knowledge / "out_of_scope.yml").write_text(OUT_OF_SCOPE)

    output, found = overlaps(config, knowledge, tmp_path / "before.json")
    assert found[("refund-timing", MISFILED)] == "track-order"
    assert found[("off-topic", DECLINED_BUT_ANSWERED)] == "refund-timing"
    # The pair names both items with where they are defined, so the operator can go and fix it.
    assert "refund-timing (faq.yml:8)  ->  track-order (faq.yml:1)" in output
    assert repr(MISFILED) in output

    # The editor's fix: the phrasing moves to the entry that answers it; the example leaves the list to decline.
    fixed = FAQ.replace(f"    - {MISFILED}\n", "").replace(
        "    - order status please\n", f"    - order status please\n    - {MISFILED}\n"
    )
    (knowledge / "faq.yml").write_text(fixed)
    (knowledge / "out_of_scope.yml").write_text(OUT_OF_SCOPE.replace(f"    - {DECLINED_BUT_ANSWERED}\n", ""))
    output, found = overlaps(config, knowledge, tmp_path / "after.json")
    assert found == {}, output
    assert "no phrasing would be answered by another item" in output
