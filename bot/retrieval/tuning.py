"""Tuning the sentence encoder on the knowledge base's own phrasings (`bot kb tune`).

Two phrasings of the same item (an FAQ entry's question and its alternates, a passage's questions, an
out-of-scope group's examples) should land close together, and close to nothing else. One epoch of
contrastive training with sentence-transformers' MultipleNegativesRankingLoss teaches the encoder
exactly that: each phrasing is paired with another of its item, and every other pair in the batch is a
negative (batches never hold two pairs of one item, which would be false negatives). The result is a
sentence-transformers folder the bot uses like any other (`index.embedding_model`), exported to ONNX on
first use. It is kept under a name derived from the base model, the phrasings and the recipe, so the
same knowledge is never tuned twice.

Recipe: one epoch at learning rate 2e-5 (the loss and these two were chosen on a validation split carved
from BANKING77's training phrasings, never its test set: docs/BENCHMARKS.md, "Tuning the encoder"),
batches of 16 pairs and a warm-up over the first 10% of steps (sentence-transformers' usual values, not
tuned). AdamW runs fused (the same update; its step about 6x cheaper, which saves a sixth of a batch of
short phrasings, and nothing measurable where long passages dominate, as on the demo).
Operators run it with `bot kb tune`; with `index.tune: auto` the bot runs it after each change of the
phrasings (`bot.retrieval.autotune`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.retrieval.onnx_encoder import model_digest

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
LEARNING_RATE = 2e-5
BATCH_PAIRS = 16
WARMUP_SHARE = 0.1
SEED = 0
ABANDONED_S = 86_400.0  # a training folder this old belongs to no running training (10,000 phrasings: 40 min)

Progress = Callable[[int, int], None]  # (batches done, batches in all)


class NothingToTune(ValueError):
    """No item has two phrasings: there is nothing to pull together."""


class TuningCancelled(Exception):
    """`cancelled()` said stop (newer knowledge, or the service stopping): nothing was kept."""


@dataclass(frozen=True)
class TuningResult:
    model: Path  # the tuned sentence-transformers folder
    pairs: int
    seconds: float  # 0 when it was already tuned for these phrasings
    reused: bool


def tuned_folder(
    base: Path, name: str, items: Mapping[str, Sequence[str]], cache_dir: Path, base_digest: str | None = None
) -> Path:
    """Where the encoder tuned from `base` (called `name`, its content hash `base_digest` if known) on
    `items` is kept (whether or not it exists yet)."""
    recipe = f"v{RECIPE_VERSION}|{LEARNING_RATE}|{BATCH_PAIRS}|{base_digest or model_digest(base)}"
    digest = hashlib.sha256(recipe.encode())
    for item in sorted(items):
        digest.update(json.dumps([item, sorted(items[item])]).encode())
    return cache_dir / "tuned" / f"{name}-tuned-{digest.hexdigest()[:16]}"


def used(model: Path) -> None:
    """Mark a tuned encoder as just used (its folder's time), so `prune` keeps it."""
    with contextlib.suppress(OSError):
        os.utime(model)


def prune(cache_dir: Path, keep: int, exports_of: Callable[[Path], list[Path]]) -> list[Path]:
    """Delete the tuned encoders in `cache_dir` beyond the `keep` used last (every phrasing edit makes a new
    one, about 120 MB with its ONNX export), each with the files `exports_of` names, and training folders a
    killed process left a day ago or more; the tuned folders deleted.
    A process still serving one keeps it loaded; restarted, it tunes again."""
    tuned = sorted((p for p in (cache_dir / "tuned").glob("*-tuned-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    for old in tuned[keep:]:
        for export in exports_of(old):
            export.unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
    for work in (cache_dir / "tuned").glob(".tuning-*"):  # left by a process killed while training
        with contextlib.suppress(OSError):
            if time.time() - work.stat().st_mtime > ABANDONED_S:
                shutil.rmtree(work, ignore_errors=True)
    return tuned[keep:]


def pairs_of(items: Mapping[str, Sequence[str]], rng: random.Random) -> list[tuple[str, str, str]]:
    """(item, phrasing, another phrasing of that item): one pair per phrasing of every item that has two."""
    pairs = []
    for item in sorted(items):
        texts = sorted(set(items[item]))
        if len(texts) < 2:
            continue
        for position, text in enumerate(texts):
            other = rng.randrange(len(texts) - 1)
            pairs.append((item, text, texts[other + (other >= position)]))
    return pairs


def batches_of(pairs: list[tuple[str, str, str]], size: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Shuffled batches of about `size` pairs, never two of one item (they would count as negatives).

    The pairs are dealt like cards, largest item first, over enough batches that no item needs two places
    in one: an item with many more phrasings than the others (an FAQ entry with fifty alternates) is spread
    over batches of the others instead of being left alone, with no negative to learn from. Only pairs of
    an item with more pairs than all the others together go unused.
    """
    by_item: dict[str, list[tuple[str, str]]] = {}
    for item, anchor, positive in pairs:
        by_item.setdefault(item, []).append((anchor, positive))
    if len(by_item) < 2:
        return []
    for item_pairs in by_item.values():
        rng.shuffle(item_pairs)
    largest = max(len(p) for p in by_item.values())
    count = min(max(-(-len(pairs) // size), largest), len(pairs) // 2, len(pairs) - largest)
    order = sorted(by_item, key=lambda item: (-len(by_item[item]), rng.random()))
    dealt = [pair for item in order for pair in by_item[item][:count]]
    batches: list[list[tuple[str, str]]] = [[] for _ in range(count)]
    for position, pair in enumerate(dealt):  # an item's pairs sit in consecutive batches: never two in one
        batches[position % count].append(pair)
    rng.shuffle(batches)
    return [batch for batch in batches if len(batch) > 1]


def tune(
    base: Path,
    name: str,
    items: Mapping[str, Sequence[str]],
    cache_dir: Path,
    threads: int = 1,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    base_digest: str | None = None,
) -> TuningResult:
    """The encoder `base` tuned on `items` (item -> phrasings), training it unless it is already cached.

    `cancelled` is asked after each batch: when it says so, training stops (TuningCancelled)."""
    target = tuned_folder(base, name, items, cache_dir, base_digest)
    rng = random.Random(SEED)
    batches = batches_of(pairs_of(items, rng), BATCH_PAIRS, rng)
    pairs = sum(len(b) for b in batches)
    if (target / "modules.json").is_file():
        used(target)
        return TuningResult(target, pairs, 0.0, reused=True)
    if not batches:
        raise NothingToTune("no item has two different phrasings, so there is nothing to tune the encoder on")
    started = time.perf_counter()
    log.info("tuning %s on %d pairs of phrasings (%d batches, %d threads)", name, pairs, len(batches), threads)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tuning-") as work:
        _train(base, batches, Path(work) / "model", threads, progress, cancelled)
        try:
            os.replace(Path(work) / "model", target)  # atomic: whole or absent
        except OSError:
            if not (target / "modules.json").is_file():  # not a process that finished first
                raise
    seconds = time.perf_counter() - started
    log.info("tuned %s on %d pairs in %.1fs: %s", name, pairs, seconds, target)
    return TuningResult(target, pairs, seconds, reused=False)


def _train(
    base: Path,
    batches: list[list[tuple[str, str]]],
    out: Path,
    threads: int,
    progress: Progress | None,
    cancelled: Callable[[], bool],
) -> None:
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # progress is reported here
    torch.manual_seed(SEED)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
        model.train()
        loss = MultipleNegativesRankingLoss(model)
        optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, fused=True)
        warmup = int(len(batches) * WARMUP_SHARE)
        schedule = get_linear_schedule_with_warmup(optimiser, warmup, len(batches))  # type: ignore[no-untyped-call]
        for done, batch in enumerate(batches, start=1):
            if cancelled():
                raise TuningCancelled(f"stopped after {done - 1} of {len(batches)} batches")
            features = [model.preprocess([pair[side] for pair in batch]) for side in (0, 1)]
            value = loss(features, labels=None)
            value.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            if progress is not None:
                progress(done, len(batches))
        model.eval()
        model.save(str(out))
    finally:
        torch.set_num_threads(previous_threads)
