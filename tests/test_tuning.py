"""Tuning the encoder on the knowledge base's own phrasings (`bot kb tune`, bot/retrieval/tuning.py): the
phrasings of one item end up closer together, the same knowledge is tuned once, and the bot answers with
the tuned encoder on ONNX Runtime like with the bundled one."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from bot.config import load_config
from bot.retrieval.embedding import Embedder, EncoderKind, bundled_model_path
from bot.retrieval.tuning import batches_of, pairs_of, prune, tune, used
from serving.cli import app
from serving.runtime import build_engine

ITEMS = {
    "refund": ["I want my money back", "how do I get a refund", "refund please", "can you return my money"],
    "track-order": ["where is my order", "track my package", "has my parcel shipped yet", "order status"],
    "reset-password": ["forgot my password", "reset my password", "I can't log in", "my password does not work"],
    "gift-cards": ["do you sell gift cards", "gift card balance", "can I pay with a voucher", "buy a gift card"],
}


def separation(embedder: Embedder) -> float:
    """How much closer an item's phrasings are to each other than to other items' (mean cosines)."""
    texts = [text for phrasings in ITEMS.values() for text in phrasings]
    owners = np.repeat(np.arange(len(ITEMS)), [len(p) for p in ITEMS.values()])
    vectors = embedder.embed(texts)
    similarity = vectors @ vectors.T
    same = owners[:, None] == owners[None, :]
    return float(similarity[same & ~np.eye(len(texts), dtype=bool)].mean() - similarity[~same].mean())


def test_batches_pair_each_phrasing_with_another_of_its_item_and_never_hold_one_item_twice() -> None:
    items = {**ITEMS, "alone": ["a phrasing with no sibling"]}
    rng = random.Random(0)
    pairs = pairs_of(items, rng)
    assert sorted(anchor for _, anchor, _ in pairs) == sorted(t for p in ITEMS.values() for t in p)
    owner = {text: item for item, texts in ITEMS.items() for text in texts}
    assert all(owner[positive] == item and positive != anchor for item, anchor, positive in pairs)
    for size in (3, 4):
        batches = batches_of(pairs, size, rng)
        assert sum(len(b) for b in batches) == len(pairs) and all(2 <= len(b) <= size for b in batches)
        assert all(len({owner[anchor] for anchor, _ in batch}) == len(batch) for batch in batches)
    # One item with as many phrasings as the others together: spread over their batches, nothing unused.
    refunds = [f"refund question {n}" for n in range(12)]
    owner.update(dict.fromkeys(refunds, "refund"))
    lopsided = pairs_of({**ITEMS, "refund": refunds}, rng)
    batches = batches_of(lopsided, 4, rng)
    assert sum(len(b) for b in batches) == len(lopsided) == 24
    assert all(len({owner[anchor] for anchor, _ in batch}) == len(batch) for batch in batches)
    assert batches_of(pairs_of({"refund": refunds}, rng), 4, rng) == []  # one item: no negatives at all


def test_tuning_pulls_each_items_phrasings_together_and_the_same_knowledge_is_tuned_once(tmp_path: Path) -> None:
    base = bundled_model_path()
    tuned = tune(base, "all-MiniLM-L6-v2", ITEMS, tmp_path / "cache")
    assert not tuned.reused and tuned.pairs == 16 and tuned.model.name.startswith("all-MiniLM-L6-v2-tuned-")
    before = separation(Embedder(base, cache_dir=tmp_path / "cache"))
    after_embedder = Embedder(tuned.model, cache_dir=tmp_path / "cache")
    after = separation(after_embedder)
    assert after > before, (before, after)
    assert after_embedder.kind is EncoderKind.ONNX_INT8  # the tuned folder exports like the bundled one
    again = tune(base, "all-MiniLM-L6-v2", ITEMS, tmp_path / "cache")
    assert again.reused and again.model == tuned.model and again.seconds == 0.0
    changed = tune(
        base, "all-MiniLM-L6-v2", {**ITEMS, "refund": [*ITEMS["refund"], "refund status"]}, tmp_path / "cache"
    )
    assert not changed.reused and changed.model != tuned.model


def write_knowledge(folder: Path) -> Path:
    entries = [
        {"id": item, "question": texts[0], "alternates": texts[1:], "answer": f"The answer about {item}."}
        for item, texts in ITEMS.items()
    ]
    (folder / "faq").mkdir(parents=True)
    (folder / "faq" / "tiny.yml").write_text(yaml.safe_dump(entries), encoding="utf-8")
    return folder


def test_kb_tune_prints_the_folder_to_use_and_the_bot_answers_with_it(tmp_path: Path) -> None:
    knowledge = write_knowledge(tmp_path / "knowledge")
    config = tmp_path / "config.yml"
    settings = {"index": {"path": str(tmp_path / "chroma"), "encoder_cache": str(tmp_path / "cache")}}
    config.write_text(yaml.safe_dump({**settings, "knowledge": {"path": str(knowledge)}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["kb", "tune", "--config", str(config)])
    assert result.exit_code == 0, result.output
    folder = Path(result.output.split("embedding_model: ", 1)[1].split()[0])
    assert (folder / "modules.json").is_file()
    settings["index"]["embedding_model"] = str(folder)
    config.write_text(yaml.safe_dump({**settings, "knowledge": {"path": str(knowledge)}}), encoding="utf-8")
    engine = build_engine(load_config(config))
    engine.sync.run()
    assert engine.index.embedder.identity.startswith(f"{folder.name}/onnx-int8/")
    decision = engine.policy.decide("I forgot my password")
    assert decision.answer is not None and decision.answer.item_id == "reset-password"
    rerun = CliRunner().invoke(app, ["kb", "tune", "--config", str(config)])
    assert rerun.exit_code == 0 and "already tuned for these phrasings" in rerun.output


def test_knowledge_with_nothing_to_pull_together_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "knowledge" / "faq").mkdir(parents=True)
    (tmp_path / "knowledge" / "faq" / "one.yml").write_text(
        "- id: hours\n  question: When are you open?\n  answer: Nine to five.\n", encoding="utf-8"
    )
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"knowledge": {"path": str(tmp_path / "knowledge")}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["kb", "tune", "--config", str(config)])
    assert result.exit_code == 2
    assert "nothing to tune the encoder on" in result.output


def test_only_the_tuned_encoders_used_last_are_kept_with_their_exports(tmp_path: Path) -> None:
    folders = []
    for age in range(5):  # 0 is the newest
        folder = tmp_path / "tuned" / f"all-MiniLM-L6-v2-tuned-{age:016x}"
        folder.mkdir(parents=True)
        (folder / "modules.json").write_text("[]", encoding="utf-8")
        (tmp_path / f"export-{age}.onnx").write_bytes(b"onnx")
        os.utime(folder, (1_000_000 - age * 60, 1_000_000 - age * 60))
        folders.append(folder)
    abandoned, training = tmp_path / "tuned" / ".tuning-killed", tmp_path / "tuned" / ".tuning-running"
    abandoned.mkdir()
    training.mkdir()
    os.utime(abandoned, (1_000_000, 1_000_000))  # a process killed mid-training left it long ago
    used(folders[4])  # the oldest is used again: it is kept, the next oldest goes instead
    deleted = prune(tmp_path, 3, lambda folder: [tmp_path / f"export-{int(folder.name[-16:], 16)}.onnx"])
    assert sorted(deleted) == sorted([folders[2], folders[3]])
    assert [f.exists() for f in folders] == [True, True, False, False, True]
    assert not abandoned.exists() and training.exists()
    assert sorted(p.name for p in tmp_path.glob("export-*")) == ["export-0.onnx", "export-1.onnx", "export-4.onnx"]
