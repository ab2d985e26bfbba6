"""A message close to several topics gets "Do you mean: A, B or C?" with the topics a tap away; a clear
short one keeps its answer. The margin comes from the knowledge base itself (bot/retrieval/ranking/clarify.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bot.answering.policy import DecisionKind
from bot.answering.replies import compose_reply
from bot.config import Config, load_config
from bot.evaluation.scoring import CLARIFY, EvalCase, evaluate
from bot.knowledge.loader import read_knowledge_dir
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from bot.retrieval.ranking.clarify import Ranked, choose_margins, content_words, terse_versions
from bot.retrieval.ranking.lexical import Tokenizer
from bot.types import AnsweredBy
from serving.runtime import Engine, build_engine
from tests.conftest import DEMO_KNOWLEDGE, ConfigFactory


@pytest.fixture
def engine(write_config: ConfigFactory, embedder: Embedder) -> Engine:
    """Asking back on: the start-up sync calibrates its margins (the demo template was indexed with it off)."""
    engine = build_engine(load_config(write_config(answering={"clarify": "auto"})), embedder)
    assert engine.sync.run().calibration is not None
    return engine


def test_a_phrasing_is_cut_to_its_most_widespread_words() -> None:
    texts = [
        ("change-order", "can I change the address on my order after it shipped"),
        ("track-order", "where is my order"),
        ("cancel-order", "please cancel my order"),
        ("shipping-cost", "what does shipping cost"),
        ("express", "is there express shipping"),
        ("short", "order status"),
    ]
    terse = terse_versions(texts, Tokenizer())
    # "order" is in four items, "shipped" (ship) in three: the specific "change" and "address" go.
    assert terse[0] == "order shipped"
    assert terse[5] is None  # two content words already
    assert content_words("help with my account") == 2 and content_words("can I change it") == 1


def ranked(leads: list[float], right: list[bool], short: bool) -> Ranked:
    n = len(leads)
    own = [0.0 if r else lead for r, lead in zip(right, leads, strict=True)]  # the right one is a choice
    return Ranked(np.array(leads), np.array(right), np.array(own), np.full(n, 1 / n), np.full(n, short))


def test_the_margin_asks_where_close_calls_are_mostly_wrong_and_answers_where_they_are_right() -> None:
    # Short messages: below a lead of 0.2 the best is usually another topic, above it usually right.
    wrong_when_close = ranked(
        [0.05, 0.1, 0.15, 0.18, 0.3, 0.5, 0.6], [False, False, True, False, True, True, True], True
    )
    # Longer ones: close calls are right as often as the others: asking would cost correct answers.
    right_when_close = ranked([0.01, 0.02, 0.3, 0.4], [True, True, True, True], False)
    margins = choose_margins(right_when_close, wrong_when_close)
    assert 0.18 < margins.short <= 0.3
    assert margins.long == 0.0 and margins.asked_long == 0.0
    assert margins.asked_short == pytest.approx(4 / 7)


def test_a_vague_message_is_asked_back_and_a_tapped_choice_is_answered(engine: Engine) -> None:
    calibrated = engine.index.calibration
    assert calibrated.clarify_short > calibrated.clarify_long >= 0
    decision = engine.policy.decide("my order")
    assert decision.kind is DecisionKind.CLARIFY
    assert 2 <= len(decision.choices) <= 3
    assert decision.choices[0].score - decision.candidates[1].score < calibrated.clarify_short
    reply = compose_reply(decision, engine.config.messages, engine.config.answering)
    assert reply.answered_by is AnsweredBy.FALLBACK and reply.reason == "clarify"
    assert reply.text.startswith(engine.config.messages.clarify)
    *topics, person = reply.quick_replies
    assert topics == [hit.title for hit in decision.choices] and len(set(topics)) == len(topics)
    assert person == engine.config.messages.talk_to_human_button
    for hit in decision.choices:  # a tap sends the title back: answered from that topic
        tapped = engine.policy.decide(hit.title)
        assert tapped.kind is DecisionKind.ANSWER and tapped.answer is not None
        assert tapped.answer.item_id == hit.item_id


def test_clear_messages_short_or_long_are_answered(engine: Engine) -> None:
    for text, item in [
        ("password", "reset-password"),
        ("gift card balance", "gift-cards"),
        ("I forgot my password, how do I reset it?", "reset-password"),
    ]:
        decision = engine.policy.decide(text)
        assert decision.kind is DecisionKind.ANSWER and decision.answer is not None, (text, decision.kind)
        assert decision.answer.item_id == item


def test_asking_back_is_off_unless_configured(config: Config, embedder: Embedder) -> None:
    assert config.answering.clarify == "off"
    engine = build_engine(config, embedder)
    decision = engine.policy.decide("my order")
    assert decision.kind is DecisionKind.ANSWER and decision.choices == ()


def test_eval_counts_a_question_back_with_the_expected_topic_as_its_own_outcome(engine: Engine) -> None:
    asked = engine.policy.decide("my order")
    expected = asked.choices[1].item_id
    report = evaluate(
        engine.policy.decide,
        [EvalCase("my order", expected, 2), EvalCase("password", "reset-password", 3)],
        engine.index.answerable_ids(),
    )
    first, second = report.cases
    assert first.predicted == CLARIFY and first.clarified_with_expected and not first.wrong_answer
    assert second.correct
    figures = report.figures()
    assert figures["top1_accuracy"] == 0.5 and figures["clarified"] == 0.5
    assert figures["clarified_with_expected"] == 0.5 and figures["top1_or_clarified"] == 1.0


def test_an_unquoted_off_or_on_in_yaml_means_off_or_auto(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    for written, meant in (("off", "off"), ("on", "auto"), ("auto", "auto"), ('"off"', "off")):
        path.write_text(f"answering:\n  clarify: {written}\n")
        assert load_config(path).answering.clarify == meant, written


def test_the_margins_for_asking_back_cost_extra_work_only_when_the_bot_asks_back(
    tmp_path: Path, demo_index_template: Path, embedder: Embedder
) -> None:
    embedded = {}
    for clarify in (False, True):  # the same edit, with asking back off and on
        home = tmp_path / str(clarify)
        shutil.copytree(demo_index_template, home / "chroma")
        shutil.copytree(DEMO_KNOWLEDGE, home / "kb")
        index = KnowledgeIndex.open(home / "chroma", "knowledge", embedder, clarify=clarify)
        (home / "kb" / "faq" / "shipping.yml").unlink()
        before = embedder.texts_embedded
        report = index.sync(read_knowledge_dir(home / "kb"))
        assert report.texts_embedded == 0 and report.calibration is not None and report.calibration.calibrated
        embedded[clarify] = embedder.texts_embedded - before  # the answers calibration reads, and terse versions
        assert report.calibration.asks_back is clarify
        assert ("asking back off" in report.calibration.summary()) is not clarify
    # Off: the phrasings cut to their two most widespread words are neither embedded nor probed.
    assert embedded[True] > embedded[False]
