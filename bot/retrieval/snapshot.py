"""What a search reads, built from the index's records and replaced as a whole after each change, and the
inputs of calibration derived from the same records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot.knowledge.model import OUT_OF_SCOPE_KIND, normalised
from bot.knowledge.names import NameMatch, NameTable
from bot.retrieval import records
from bot.retrieval.chroma import ChromaHome
from bot.retrieval.hit import Hit
from bot.retrieval.ranking import calibration
from bot.retrieval.ranking.calibration import Calibration
from bot.retrieval.ranking.scorer import IndexedText, ItemScorer

CALIBRATION_KEY = "calibration_key"  # collection metadata: what the stored calibration was worked out for
CALIBRATION = "calibration"


@dataclass(frozen=True)
class Ranking:
    """What a search needs, replaced as a whole after each sync so a search never sees half of one."""

    catalog: dict[str, Hit]  # what each item shows when found
    scorer: ItemScorer
    calibration: Calibration
    examples: dict[str, str]  # out-of-scope example (normalised) -> its group
    titles: dict[str, str]  # answerable item's title (normalised) -> the item, for titles only one item has
    names: NameTable  # companies and products out-of-scope groups list, that the knowledge never mentions

    @classmethod
    def of(
        cls,
        metadata: dict[str, dict[str, Any]],
        texts: Mapping[str, IndexedText],
        scorer: ItemScorer,
        calibrated: Calibration,
    ) -> Ranking:
        catalog = records.catalog(metadata)
        return cls(
            catalog,
            scorer,
            calibrated,
            records.examples(texts.values()),
            records.titles(catalog),
            records.names(metadata, texts.values(), catalog),
        )

    def out_of_scope_example(self, text: str) -> Hit | None:
        """The out-of-scope group that lists `text` itself as an example (case and spacing aside), if any."""
        group = self.examples.get(normalised(text))
        return None if group is None else replace(self.catalog[group], score=1.0)

    def out_of_scope_name(self, text: str) -> tuple[Hit, NameMatch] | None:
        """The out-of-scope group listing a name that `text` mentions (and the knowledge never does), if any."""
        match = self.names.find(text)
        return None if match is None else (replace(self.catalog[match.group], score=1.0), match)

    def item_titled(self, text: str) -> Hit | None:
        """The answerable item whose title is `text` (case and spacing aside), if exactly one has it.

        Suggestions are shown as item titles; a customer who taps one sends its title and means that item.
        """
        item_id = self.titles.get(normalised(text))
        return None if item_id is None else self.catalog[item_id]

    def answerable(self) -> dict[str, Hit]:
        """The items a message can be answered with (out-of-scope groups left out), as a search shows them."""
        return {item_id: hit for item_id, hit in self.catalog.items() if hit.kind != OUT_OF_SCOPE_KIND}


def calibration_key(encoder: str, metadata: dict[str, dict[str, Any]], clarify: bool) -> str:
    """Changes when anything calibration reads changes: the texts, the FAQ answers, the encoder, the
    procedure (with or without the margins for asking back: `clarify`)."""
    asks = "|clarify" if clarify else ""
    digest = hashlib.sha256(f"v{calibration.VERSION}|{encoder}{asks}".encode())
    for rid in sorted(metadata):
        digest.update(rid.encode())
    for meta in sorted(metadata.values(), key=lambda m: str(m["item_id"])):
        if meta["kind"] == "faq":
            digest.update(hashlib.sha256(str(meta["body"]).encode()).digest())
    return digest.hexdigest()


def calibration_order(texts: Mapping[str, IndexedText], catalog: dict[str, Hit]) -> list[IndexedText]:
    """Every text in a fixed order, so calibrating the same knowledge always gives the same result.

    Per item, its lead text comes first (an FAQ's question, a passage's whole section: calibration never
    hides it), then the others alphabetically.
    """

    def order(text: IndexedText) -> tuple[str, bool, str]:
        title = catalog[text.item_id].title if text.item_id in catalog else ""
        lead = text.text == title or text.text.startswith(title + "\n")
        return (text.item_id, not lead, text.text)

    return sorted(texts.values(), key=order)


def stored_calibration(metadata: Mapping[str, Any] | None, key: str) -> Calibration | None:
    """The calibration a collection's metadata holds for `key`, if it holds one for exactly that."""
    stored = metadata or {}
    if stored.get(CALIBRATION_KEY) != key:
        return None
    try:
        return Calibration.from_dict(json.loads(str(stored[CALIBRATION])))
    except (KeyError, TypeError, ValueError):
        return None


def scorer_for(home: ChromaHome, key: str, texts: Mapping[str, IndexedText], keep: bool) -> ItemScorer:
    """A scorer for `texts`, with the classifier `home` stores for them (`key`) or a newly trained one (stored
    when `keep`: by the process that syncs, not by those that follow it)."""
    shelf = home.shelf
    stored = home.guard(lambda: shelf.load(key))
    scorer = ItemScorer(list(texts.values()), classifier=stored)
    if keep and scorer.classifier is not stored:
        home.guard(lambda: shelf.save(scorer.classifier, key))
    return scorer
