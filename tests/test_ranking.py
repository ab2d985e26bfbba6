"""Answer selection: exact item scores, word overlap, and the threshold the knowledge base calibrates itself."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from bot.answering.policy import DecisionKind, ResponsePolicy
from bot.config import AnsweringSettings
from bot.knowledge.loader import read_knowledge_dir
from bot.retrieval.embedding import Embedder
from bot.retrieval.index import KnowledgeIndex
from bot.retrieval.ranking.calibration import DEFAULT_THRESHOLD, FOLDS, assign_folds, calibrate, text_positions
from bot.retrieval.ranking.classifier import ItemClassifier
from bot.retrieval.ranking.dense import ItemSpace
from bot.retrieval.ranking.lexical import LexicalScorer
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer, Weights
from tests.conftest import DEMO_KNOWLEDGE


def test_item_scores_use_the_two_best_texts_and_the_centroid() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(7, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = np.array([2, 0, 1, 0, 2, 0, 2])  # texts of three items, interleaved; item 1 has one text
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    space = ItemSpace(3, owners, vectors)

    scores = space.scores(queries)
    subset = space.scores(queries, np.array([2, 1]))

    for item in range(3):
        sims = np.sort(queries @ vectors[owners == item].T, axis=1)[:, ::-1]
        expected = sims[:, :2].mean(axis=1) if sims.shape[1] > 1 else sims[:, 0]
        np.testing.assert_allclose(scores.nearest[:, item], expected, rtol=1e-5)
        centroid = vectors[owners == item].sum(axis=0)
        np.testing.assert_allclose(scores.centroid[:, item], queries @ centroid / np.linalg.norm(centroid), rtol=1e-5)
    np.testing.assert_allclose(subset.nearest, scores.nearest[:, [2, 1]], rtol=1e-6)


def test_word_overlap_finds_the_item_with_the_rare_word_and_ignores_stop_words() -> None:
    lexical = LexicalScorer(
        [
            ["How do I pay by bank transfer?", "Can I pay with my IBAN"],
            ["How do I pay with a credit card?"],
            ["When will my order ship?"],
        ]
    )
    scores = lexical.scores(["paying via IBAN", "the and of", "shipping of orders"])
    assert scores.relative[0].argmax() == 0 and scores.relative[0, 0] == 1.0  # "iban" decides, "paying" -> "pay"
    assert not scores.relative[1].any() and not scores.absolute[1].any()  # nothing but stop words
    assert scores.relative[2].argmax() == 2  # stems: shipping -> ship, orders -> order
    assert 0 < scores.absolute[0, 0] < 1  # "via" appears nowhere, so the message is only partly covered


def test_the_passage_bonus_goes_only_to_passages_without_questions() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [
        IndexedText("faq", "faq", "a question", vectors[0]),
        IndexedText("policy", "passage", "policy wording", vectors[1]),
        IndexedText("asked", "passage", "policy wording too", vectors[2], asked=True),
        IndexedText("asked", "passage", "a customer's question", vectors[3], asked=True),
    ]
    scorer = ItemScorer(texts)
    assert dict(zip(scorer.item_ids, scorer.policy_worded.tolist(), strict=True)) == {
        "asked": False,
        "faq": False,
        "policy": True,
    }
    query = vectors[1] + vectors[2]
    plain = dict(scorer.score_candidates(query, "x", list(scorer.item_ids), Weights(0.5, 0.0), extra=0))
    bonus = dict(
        scorer.score_candidates(query, "x", list(scorer.item_ids), Weights(0.5, 0.0, passage_bonus=0.3), extra=0)
    )
    assert bonus["policy"] == pytest.approx(plain["policy"] + 0.3)
    assert bonus["asked"] == pytest.approx(plain["asked"]) and bonus["faq"] == pytest.approx(plain["faq"])


def test_the_classifier_learns_which_direction_tells_two_items_apart() -> None:
    # Two items whose phrasings differ by a small, consistent step along axis 0 and vary widely along axis 1.
    # The message is on "refund"'s side of axis 0, but its single nearest phrasing is one of "return"'s.
    spread = np.repeat(np.arange(-2.0, 2.5, 1.0), 6)  # 30 phrasings each
    refund = np.column_stack([np.full(30, 0.3), spread, np.full(30, 3.0)])
    returns = np.column_stack([np.full(30, -0.3), spread + 0.5, np.full(30, 3.0)])
    vectors = np.vstack([refund, returns]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    message = np.array([[0.12, 0.5, 3.0]], dtype=np.float32)
    message /= np.linalg.norm(message)

    classifier = ItemClassifier.fit(vectors, np.repeat([0, 1], 30), ["refund", "return"])
    probabilities = classifier.probabilities(message)

    assert (message @ vectors.T).argmax() >= 30  # nearest neighbour: a "return" phrasing
    assert probabilities[0, 0] > 0.5  # the classifier: refund
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert classifier.probabilities(vectors).argmax(axis=1).tolist() == [0] * 30 + [1] * 30
    only = ItemClassifier.fit(vectors[:3], np.zeros(3, dtype=np.intp), ["refund"])  # nothing to tell apart
    assert only.probabilities(message).tolist() == [[1.0]]


@pytest.fixture(scope="module")
def demo_index(demo_index_template: Path, embedder: Embedder) -> KnowledgeIndex:
    return KnowledgeIndex.open(demo_index_template, "knowledge", embedder)


def test_calibration_and_classifier_are_stored_with_the_index_and_reused_after_a_restart(
    tmp_path: Path, demo_index_template: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(demo_index_template, tmp_path / "chroma")

    def retrain(*_args: object) -> ItemClassifier:
        raise AssertionError("the classifier was trained again for unchanged knowledge")

    def recalibrate(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("answer selection was calibrated again for unchanged knowledge")

    with monkeypatch.context() as patch:
        patch.setattr(ItemClassifier, "fit", classmethod(retrain))
        patch.setattr("bot.retrieval.index.calibrate", recalibrate)
        reopened = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)
        first = reopened.calibration
        assert first.calibrated and 0.3 < first.threshold < 1.0 and first.weights.passage_bonus > 0

        report = reopened.sync(read_knowledge_dir(DEMO_KNOWLEDGE))
        assert report.texts_embedded == 0 and report.calibration == first  # the stored result, not a new run

    # An edit trains a classifier that knows the new item, and stores it in place of the old one.
    (tmp_path / "kb").mkdir()
    shutil.copytree(DEMO_KNOWLEDGE, tmp_path / "kb", dirs_exist_ok=True)
    (tmp_path / "kb" / "faq" / "gift-wrap.yml").write_text(
        "- id: gift-wrap\n  question: Can you gift wrap my order?\n  answer: Yes, for 3 euros at checkout.\n"
    )
    reopened.sync(read_knowledge_dir(tmp_path / "kb"))
    stored = ItemClassifier.load(tmp_path / "chroma" / "knowledge.classifier.npz", reopened._calibration_key())
    assert stored is not None and "gift-wrap" in stored.item_ids


def test_calibration_does_not_depend_on_the_order_chroma_returns_texts_in(demo_index: KnowledgeIndex) -> None:
    # The stored calibration was computed right after indexing; a reopened index reads its texts back
    # from Chroma in another order. Same knowledge, same result.
    again = calibrate(demo_index._calibration_texts(), lambda: demo_index._answers.texts(demo_index._ranking.catalog))
    assert (again.threshold, again.weights) == (demo_index.calibration.threshold, demo_index.calibration.weights)


def test_a_tiny_knowledge_base_uses_the_default_threshold_however_many_out_of_scope_examples_it_has(
    tmp_path: Path, embedder: Embedder
) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "hours.yml").write_text(
        "- id: opening-hours\n  question: When are you open?\n  answer: Monday to Friday, 9:00 to 17:00.\n"
    )
    shutil.copy(DEMO_KNOWLEDGE / "out_of_scope.yml", kb)  # 60 examples cannot say what a threshold costs
    index = KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)
    report = index.sync(read_knowledge_dir(kb))
    assert report.calibration is not None and not report.calibration.calibrated
    assert index.calibration.threshold == DEFAULT_THRESHOLD
    policy = ResponsePolicy(index, AnsweringSettings(), "Talk to a person")
    assert policy.decide("zzzz qqqq").kind is DecisionKind.NOT_SURE
    assert policy.decide("When are you open?").kind is DecisionKind.ANSWER


def test_calibration_copes_with_a_fold_that_hides_nothing() -> None:
    # Twenty entries with one alternate each: each alternate is hidden in one of four folds, chosen at
    # random per entry, so some draws leave a fold with nothing to hide. That fold has nothing to measure;
    # it must not stop the knowledge base from being calibrated (it used to raise, failing the sync).
    rng = np.random.default_rng(7)
    texts = []
    for n in range(20):
        centre = rng.normal(size=16)
        for k in range(2):
            vector = centre + 0.3 * rng.normal(size=16)
            texts.append(
                IndexedText(f"item-{n:02d}", "faq", f"question {n} phrasing {k}", vector / np.linalg.norm(vector))
            )
    by_item = text_positions(texts)
    seed = next(s for s in range(1000) if len(set(assign_folds(by_item, np.random.default_rng(s))[0].values())) < FOLDS)
    result = calibrate(texts, seed=seed)
    assert result.calibrated and result.held_out == 20


def demo_copy(tmp_path: Path, template: Path, embedder: Embedder) -> KnowledgeIndex:
    """An editable copy of the demo knowledge (at tmp_path/kb) and of its index."""
    shutil.copytree(template, tmp_path / "chroma")
    shutil.copytree(DEMO_KNOWLEDGE, tmp_path / "kb")
    return KnowledgeIndex.open(tmp_path / "chroma", "knowledge", embedder)


def test_an_edit_recalibrates_and_a_pinned_threshold_wins(
    tmp_path: Path, demo_index_template: Path, embedder: Embedder
) -> None:
    index = demo_copy(tmp_path, demo_index_template, embedder)
    before = index.calibration
    (tmp_path / "kb" / "faq" / "shipping.yml").unlink()
    report = index.sync(read_knowledge_dir(tmp_path / "kb"))
    assert report.removed and report.calibration is not None and report.calibration.calibrated
    assert report.calibration != before and index.calibration == report.calibration

    auto = ResponsePolicy(index, AnsweringSettings(), "Talk to a person")
    pinned = ResponsePolicy(index, AnsweringSettings(threshold=0.05), "Talk to a person")
    assert auto.threshold == index.calibration.threshold and pinned.threshold == 0.05
    far_off = "the quick brown fox jumps over the lazy dog"  # near no topic, nor any out-of-scope example
    assert auto.decide(far_off).kind is DecisionKind.NOT_SURE
    assert pinned.decide(far_off).kind is DecisionKind.ANSWER


def test_live_edits_answer_at_once_and_recalibrate_in_the_background(
    tmp_path: Path, demo_index_template: Path, embedder: Embedder
) -> None:
    index = demo_copy(tmp_path, demo_index_template, embedder)
    before = index.calibration
    (tmp_path / "kb" / "faq" / "kayaks.yml").write_text(
        "- id: kayak-rental\n  question: Do you rent out kayaks?\n"
        "  alternates: [can I hire a kayak for the weekend, kayak rental prices]\n"
        "  answer: Yes, from our Rotterdam store, 35 euros a day.\n"
    )
    report = index.sync(read_knowledge_dir(tmp_path / "kb"), calibrate_in_background=True)
    assert report.added == ("kayak-rental",) and report.calibration is None
    policy = ResponsePolicy(index, AnsweringSettings(), "Talk to a person")
    decision = policy.decide("how much is it to hire a kayak")
    assert decision.answer is not None and decision.answer.item_id == "kayak-rental"

    deadline = time.monotonic() + 60
    while index.calibration == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert index.calibration != before and index.calibration.calibrated
